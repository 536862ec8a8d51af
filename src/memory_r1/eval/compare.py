"""`memr1 compare BASE RUN [RUN...]`: eval folders over the same questions, each against BASE.

Per LoCoMo category and Overall, each run's F1, BLEU-1, EM and J (percent), its difference to BASE
with a paired bootstrap confidence interval (questions resampled with replacement; the same seeded
draws for every run and metric) and win / tie / loss counts (questions where the run scores higher
/ the same / lower than BASE). Two views, labelled apart: the standard score (every question, the
paper's protocol) and the score without the questions whose gold answer the audit marks wrong
(:mod:`memory_r1.data.audit`; said so when there is no audit).

Questions are matched by id. Folders over different question sets are refused, or aligned on the
questions they share (``intersect``), saying how many each run lost. The same question with another
gold answer (another LoCoMo file) is always refused. Rows written before predictions carried their
scores have them recomputed from prediction and gold (:func:`memory_r1.metrics.answer_scores`).

Writes ``compare.json`` (everything), ``compare.md`` (the tables) and ``compare.png`` (differences
with their intervals). The bootstrap settings come from ``recipes/compare.yaml``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.types import CATEGORY_LABELS

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from memory_r1.data.audit import GoldAudit

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("f1", "bleu1", "em", "judge")
METRIC_LABELS = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "judge": "J"}
CATEGORIES: tuple[int, ...] = (1, 2, 3, 4)
MIN_RESAMPLES = 2000


class CompareError(ValueError):
    """Runs that cannot be compared as asked (one line: what differs and what to do)."""


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = MIN_RESAMPLES
    seed: int = 0
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise CompareError(f"bootstrap resamples must be >= 1, got {self.resamples}")
        if not 0.0 < self.confidence < 1.0:
            raise CompareError(f"bootstrap confidence must be in (0, 1), got {self.confidence}")


def compare_recipe_path() -> Path:
    from memory_r1.config import recipes_dir

    return recipes_dir() / "compare.yaml"


def bootstrap_settings(section: dict | None = None, **overrides: Any) -> BootstrapSettings:
    """``recipes/compare.yaml``'s bootstrap settings, then ``section`` (e.g. an ablation plan's
    ``compare.bootstrap``), then explicit ``overrides`` that are not None (CLI options)."""
    from memory_r1.config import load_recipe

    cfg = dict((load_recipe(compare_recipe_path()).get("bootstrap") or {}))
    cfg.update(section or {})
    cfg.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(cfg) - {"resamples", "seed", "confidence"}
    if unknown:
        raise CompareError(f"unknown bootstrap settings {sorted(unknown)}; known: resamples, seed, confidence")
    return BootstrapSettings(int(cfg["resamples"]), int(cfg["seed"]), float(cfg["confidence"]))


# ------------------------------------------------------------------------------ loading


@dataclass
class EvalRun:
    """One eval folder's answered questions, keyed by question id, with per-row scores in [0, 1]."""

    name: str
    folder: Path
    rows: dict[str, dict]
    config: dict = field(default_factory=dict)
    judge: str | None = None  # the judge's name as the summary gives it; None without a judge
    judge_prompt: str | None = None
    recomputed: int = 0  # rows whose scores were recomputed (written before rows carried them)
    ingest: dict = field(default_factory=dict)  # the summary's per-conversation ingestion record
    banks: dict = field(default_factory=dict)  # the summary's per-conversation bank fingerprints

    @property
    def judge_label(self) -> str:
        if self.judge is None:
            return "no judge"
        return f"{self.judge}" + (f", {self.judge_prompt} prompt" if self.judge_prompt else "")


def score_row(row: dict) -> tuple[dict, bool]:
    """A predictions row with ``f1``, ``bleu1``, ``em`` (recomputed when any is missing) and
    ``judge`` (True / False / None); the flag says whether scores were recomputed.

    >>> r, again = score_row({"prediction": "Paris", "gold": "paris", "category": 1})
    >>> (r["f1"], r["em"], r["judge"], again)
    (1.0, 1.0, None, True)
    >>> score_row({"prediction": "x", "gold": "y", "f1": 0.5, "bleu1": 0.2, "em": 0.0, "judge": True})[1]
    False
    """
    out = dict(row)
    again = any(out.get(m) is None for m in ("f1", "bleu1", "em"))
    if again:
        from memory_r1.metrics import answer_scores

        out.update(answer_scores(out.get("prediction"), out.get("gold")))
    j = out.get("judge")
    out["judge"] = None if j is None else bool(j)
    return out, again


def load_run(folder: str | Path, name: str | None = None) -> EvalRun:
    """An eval folder (``predictions.jsonl``, and ``manifest.json`` / ``summary.json`` when present)."""
    from memory_r1.eval.folder import read_predictions

    folder = Path(folder)
    preds = folder / "predictions.jsonl"
    if not preds.is_file():
        raise CompareError(f"{folder} is not an eval folder (no predictions.jsonl)")
    rows: dict[str, dict] = {}
    recomputed = 0
    for raw in read_predictions(preds, repair=False):
        if "qid" not in raw:
            raise CompareError(f"{preds}: a row without a question id (qid)")
        row, again = score_row(raw)
        recomputed += again
        rows[row["qid"]] = row
    if not rows:
        raise CompareError(f"{preds} holds no answered question")
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").exists() else {}
    config = manifest.get("config") or {}
    jcfg = config.get("judge") or {}
    judged = any(r["judge"] is not None for r in rows.values())
    judge = summary.get("judge") or (jcfg.get("backend") if judged else None)
    if judge == "none" or not judged:
        judge = None
    prompt = summary.get("judge_prompt") or (jcfg.get("prompt") or "mem0" if judge else None)
    if recomputed:
        log.info("%s: scores recomputed from prediction and gold for %d rows", folder, recomputed)
    return EvalRun(name or folder.name, folder, rows, config, judge, prompt if judge else None, recomputed,
                   summary.get("ingest") or {}, summary.get("bank_sha256") or {})


SAME_BANKS, BUILT_APART, OWN_BANKS, UNKNOWN_BANKS = "same", "built apart", "own", "unknown"


def bank_relation(base: EvalRun, run: EvalRun) -> str:
    """How a run's memory relates to the base's. ``same``: the same bank fingerprints (or, for
    folders written before fingerprints, the same ingestion counts: calls, facts, operations and
    tokens, its clock aside); ``built apart``: the same ingestion settings, but the banks were built again and hold
    other memories (another machine, code or build: the difference then mixes in the rebuilt
    memory); ``own``: other ingestion settings (another method or manager: the memory is part of
    what the row changes); ``unknown``: a folder without a manifest or a record.

    >>> cfg = {"method": "memory-r1", "manager": None, "split": "val"}
    >>> a = EvalRun("a", Path("a"), {}, cfg, banks={"c1": "x"})
    >>> [bank_relation(a, EvalRun("b", Path("b"), {}, cfg, banks=h)) for h in ({"c1": "x"}, {"c1": "y"})]
    ['same', 'built apart']
    >>> bank_relation(a, EvalRun("m", Path("m"), {}, {**cfg, "manager": "ckpt"}, banks={"c1": "z"}))
    'own'
    >>> old = EvalRun("o", Path("o"), {}, cfg, ingest={"c1": {"facts": 3, "ops": {"added": 2}, "seconds": 9.5}})
    >>> [bank_relation(old, EvalRun("p", Path("p"), {}, cfg, ingest={"c1": {"facts": 3, "ops": {"added": n},
    ...                                                                    "seconds": 7.0}})) for n in (2, 3)]
    ['same', 'built apart']
    """
    from memory_r1.eval.folder import INGEST_KEYS, fingerprint_value
    from memory_r1.runs import differing_keys

    if not base.config or not run.config:
        return UNKNOWN_BANKS
    if differing_keys(base.config, run.config, INGEST_KEYS, fingerprint_value):
        return OWN_BANKS
    if base.config.get("method") == "full-context":
        return SAME_BANKS  # no banks: the prompt is the dialogue itself
    for a, b in ((base.banks, run.banks), (_counts(base.ingest), _counts(run.ingest))):
        shared = set(a) & set(b)
        if shared:
            return SAME_BANKS if all(a[c] == b[c] for c in shared) else BUILT_APART
    return UNKNOWN_BANKS


def _counts(ingest: dict) -> dict:
    """Per conversation, the ingestion record without its clock (calls, facts, operations, tokens)."""
    return {c: {k: v for k, v in rec.items() if k != "seconds"} if isinstance(rec, dict) else rec
            for c, rec in ingest.items()}


def unique_names(folders: list[Path]) -> list[str]:
    """Short names for folders: the folder name, with parents added until the names differ.

    >>> unique_names([Path("a/base/val"), Path("a/top10/val"), Path("b/run")])
    ['base/val', 'top10/val', 'run']
    """
    depth = [1] * len(folders)
    while True:
        names = ["/".join(f.parts[-d:]) for f, d in zip(folders, depth)]
        clash = [i for i, n in enumerate(names) if names.count(n) > 1 and depth[i] < len(folders[i].parts)]
        if not clash:
            return names
        for i in clash:
            depth[i] += 1


# ------------------------------------------------------------------------------ alignment


def align(base: EvalRun, runs: list[EvalRun], intersect: bool = False) -> tuple[list[str], dict[str, dict]]:
    """The question ids every run answered, in BASE's order, and per run how many of its questions
    were dropped (``dropped``) to get there. Different question sets are refused unless
    ``intersect``; the same id with another gold answer or question is always refused.

    >>> a = EvalRun("a", Path("a"), {"q1": {"gold": "x", "question": "?"}, "q2": {"gold": "y", "question": "?"}})
    >>> b = EvalRun("b", Path("b"), {"q2": {"gold": "y", "question": "?"}})
    >>> align(a, [b], intersect=True)
    (['q2'], {'a': {'questions': 2, 'dropped': 1}, 'b': {'questions': 1, 'dropped': 0}})
    """
    everyone = [base, *runs]
    shared = set(base.rows)
    for r in runs:
        shared &= set(r.rows)
    for r in runs:
        for q in shared:
            mine, theirs = r.rows[q], base.rows[q]
            for key in ("gold", "question"):
                if str(mine.get(key)) != str(theirs.get(key)):
                    raise CompareError(
                        f"{r.name} and {base.name} give question {q} another {key} ({mine.get(key)!r} vs "
                        f"{theirs.get(key)!r}): they were evaluated on different LoCoMo files")
    dropped = {r.name: {"questions": len(r.rows), "dropped": len(r.rows) - len(shared)} for r in everyone}
    if any(d["dropped"] for d in dropped.values()) and not intersect:
        sizes = ", ".join(f"{n}: {d['questions']}" for n, d in dropped.items())
        raise CompareError(
            f"the runs answered different questions ({sizes}; {len(shared)} shared); compare runs of the same "
            "split, conversations and --limit-questions, or pass --intersect to align on the shared ones")
    if not shared:
        raise CompareError("the runs share no question")
    return [q for q in base.rows if q in shared], dropped


# ------------------------------------------------------------------------------ statistics


def resample_indices(n: int, settings: BootstrapSettings) -> np.ndarray:
    """``resamples`` x ``n`` question indices drawn with replacement, from ``settings.seed``: the same
    draws for every run and metric of a group (paired comparisons with common random numbers).

    >>> idx = resample_indices(5, BootstrapSettings(resamples=3, seed=1))
    >>> idx.shape, bool((idx == resample_indices(5, BootstrapSettings(resamples=3, seed=1))).all())
    ((3, 5), True)
    """
    import numpy as np

    return np.random.default_rng(settings.seed).integers(0, n, size=(settings.resamples, n))


def paired_bootstrap(diffs, settings: BootstrapSettings, idx=None) -> dict:
    """Mean per-question difference (run - base) and its percentile bootstrap interval.

    >>> d = paired_bootstrap([1.0, 1.0, 1.0, 1.0], BootstrapSettings(resamples=200))
    >>> d["mean"], d["lo"], d["hi"]
    (1.0, 1.0, 1.0)
    >>> d = paired_bootstrap([1.0, -1.0] * 50, BootstrapSettings(resamples=2000))
    >>> d["mean"], d["lo"] < 0 < d["hi"]
    (0.0, True)
    """
    import numpy as np

    diffs = np.asarray(diffs, dtype=float)
    if idx is None:
        idx = resample_indices(len(diffs), settings)
    means = diffs[idx].mean(axis=1)
    tail = (1.0 - settings.confidence) / 2
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return {"mean": float(diffs.mean()), "lo": float(lo), "hi": float(hi)}


def win_tie_loss(run, base, tol: float = 1e-9) -> list[int]:
    """Questions where the run scores higher / the same / lower than base.

    >>> win_tie_loss([1.0, 0.5, 0.0, 0.2], [0.0, 0.5, 1.0, 0.1])
    [2, 1, 1]
    """
    w = t = loss = 0
    for r, b in zip(run, base, strict=True):
        if r > b + tol:
            w += 1
        elif r < b - tol:
            loss += 1
        else:
            t += 1
    return [w, t, loss]


def _values(run: EvalRun, qids: list[str], metric: str) -> list:
    if metric == "judge":
        return [run.rows[q]["judge"] for q in qids]
    return [float(run.rows[q][metric]) for q in qids]


def _score(vals: list) -> float | None:
    got = [float(v) for v in vals if v is not None]
    return 100.0 * sum(got) / len(got) if got else None


def _group_stats(base: EvalRun, runs: list[EvalRun], qids: list[str], settings: BootstrapSettings) -> dict:
    """Scores of every run over ``qids``, and for the runs other than BASE their differences."""
    idx = resample_indices(len(qids), settings)
    out: dict[str, dict] = {}
    base_vals = {m: _values(base, qids, m) for m in METRICS}
    for r in [base, *runs]:
        vals = {m: _values(r, qids, m) for m in METRICS} if r is not base else base_vals
        entry: dict[str, Any] = {m: _score(vals[m]) for m in METRICS}
        entry["judged"] = sum(v is not None for v in vals["judge"])
        if r is not base:
            entry["diff"], entry["wtl"] = {}, {}
            for m in METRICS:
                pairs = [(a, b) for a, b in zip(vals[m], base_vals[m]) if a is not None and b is not None]
                if not pairs:
                    entry["diff"][m], entry["wtl"][m] = None, None
                    continue
                a, b = ([float(x) for x in col] for col in zip(*pairs))
                sub_idx = idx if len(pairs) == len(qids) else resample_indices(len(pairs), settings)
                d = paired_bootstrap([100.0 * (x - y) for x, y in zip(a, b)], settings, sub_idx)
                d["n"] = len(pairs)
                entry["diff"][m] = d
                entry["wtl"][m] = win_tie_loss(a, b)
        out[r.name] = entry
    return out


def _view(base: EvalRun, runs: list[EvalRun], qids: list[str], settings: BootstrapSettings) -> dict:
    groups = []
    for c in CATEGORIES:
        sub = [q for q in qids if int(base.rows[q]["category"]) == c]
        if sub:
            groups.append({"category": c, "label": CATEGORY_LABELS[c], "count": len(sub),
                           "runs": _group_stats(base, runs, sub, settings)})
    others = [q for q in qids if int(base.rows[q]["category"]) not in CATEGORIES]
    if others:
        log.warning("leaving out %d questions of categories outside %s", len(others), list(CATEGORIES))
    kept = [q for q in qids if int(base.rows[q]["category"]) in CATEGORIES]
    groups.append({"category": None, "label": "Overall", "count": len(kept),
                   "runs": _group_stats(base, runs, kept, settings)})
    return {"questions": len(kept), "groups": groups}


def compare_runs(base: EvalRun, runs: list[EvalRun], *, settings: BootstrapSettings | None = None,
                 audit: GoldAudit | None = None, audit_note: str | None = None, intersect: bool = False) -> dict:
    """Everything ``compare.json`` holds: the alignment, the bootstrap settings, the judges, and the
    two views (``standard``; ``without_wrong_golds``, None without an audit)."""
    if not runs:
        raise CompareError("compare needs BASE and at least one other run")
    names = [r.name for r in [base, *runs]]
    if len(set(names)) != len(names):
        raise CompareError(f"two runs share a name: {names}")
    settings = settings or bootstrap_settings()
    qids, dropped = align(base, runs, intersect)
    result: dict[str, Any] = {
        "base": base.name,
        "runs": [r.name for r in runs],
        "folders": {r.name: str(r.folder) for r in [base, *runs]},
        "questions": len(qids),
        "alignment": dropped,
        "bootstrap": {"resamples": settings.resamples, "seed": settings.seed, "confidence": settings.confidence},
        "judges": {r.name: {"judge": r.judge, "prompt": r.judge_prompt} for r in [base, *runs]},
        "recomputed_rows": {r.name: r.recomputed for r in [base, *runs] if r.recomputed},
        "banks": {r.name: bank_relation(base, r) for r in runs},
        "views": {"standard": _view(base, runs, qids, settings)},
    }
    if audit is None:
        result["gold_audit"] = {"status": "absent", "note": audit_note or "no gold audit file found"}
        result["views"]["without_wrong_golds"] = None
    else:
        wrong = audit.wrong_among(qids)
        result["gold_audit"] = {"status": "found", "path": str(audit.path), "wrong": wrong}
        bad = set(wrong)
        result["views"]["without_wrong_golds"] = _view(base, runs, [q for q in qids if q not in bad], settings)
    return result


# ------------------------------------------------------------------------------ output


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _diff(d: dict | None) -> str:
    """``+1.23 [-0.50, +2.96]``, or empty for BASE / n/a when not comparable.

    >>> _diff({"mean": 1.234, "lo": -0.5, "hi": 2.96}), _diff(None)
    ('+1.23 [-0.50, +2.96]', 'n/a')
    """
    if d is None:
        return "n/a"
    return f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def _view_table(view: dict, result: dict) -> list[str]:
    conf = round(100 * result["bootstrap"]["confidence"])
    head = ["Category", "Run", "n"]
    for m in METRICS:
        head += [METRIC_LABELS[m], f"Δ{METRIC_LABELS[m]} [{conf}% CI]"]
    head += ["W/T/L F1", "W/T/L J"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for g in view["groups"]:
        name = g["label"] if g["label"] == "Overall" else f"{g['category']} {g['label']}"
        for i, run in enumerate([result["base"], *result["runs"]]):
            e = g["runs"][run]
            cells = [name if i == 0 else "", f"{run} (base)" if run == result["base"] else run, str(g["count"])]
            for m in METRICS:
                cells += [_pct(e[m]), "" if run == result["base"] else _diff(e["diff"][m])]
            for m in ("f1", "judge"):
                wtl = e.get("wtl", {}).get(m)
                cells.append("" if run == result["base"] else ("n/a" if wtl is None else "/".join(map(str, wtl))))
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def compare_markdown(result: dict) -> str:
    """``compare.md``: the notes, then the standard view and, labelled apart, the view without the
    audited-wrong gold answers."""
    from memory_r1.eval.report import audit_heading

    b = result["bootstrap"]
    n_runs = len(result["runs"]) + 1
    lines = [f"# Compare: {', '.join(result['runs'])} against {result['base']}", ""]
    dropped = {n: d for n, d in result["alignment"].items() if d["dropped"]}
    if dropped:
        lines.append(f"- aligned on the {result['questions']} questions all {n_runs} runs answered; dropped: "
                     + ", ".join(f"{n} {d['dropped']} of {d['questions']}" for n, d in dropped.items()))
    else:
        lines.append(f"- {result['questions']} questions, the same in all {n_runs} runs")
    lines.append(
        f"- Δ = run - {result['base']} in points; {round(100 * b['confidence'])}% CI: paired bootstrap over "
        f"questions ({b['resamples']:,} resamples, seed {b['seed']}); W/T/L: questions where the run scores "
        f"higher / the same / lower than {result['base']}")
    if b["resamples"] < MIN_RESAMPLES:
        lines.append(f"- only {b['resamples']:,} bootstrap resamples (fewer than {MIN_RESAMPLES:,}): rough intervals")
    judges = result["judges"]
    lines.append("- judges: " + "; ".join(
        f"{n}: {j['judge']}" + (f" ({j['prompt']} prompt)" if j["prompt"] else "") if j["judge"] else f"{n}: none"
        for n, j in judges.items()))
    base_j = judges[result["base"]]
    other = [n for n, j in judges.items() if j["judge"] and base_j["judge"] and j != base_j]
    if other:
        lines.append(f"- J of {', '.join(other)} comes from another judge or judge prompt than {result['base']}'s: "
                     "those J differences are not comparable")
    apart = [n for n, rel in result.get("banks", {}).items() if rel == BUILT_APART]
    if apart:
        lines.append(f"- memory built apart: {', '.join(apart)} answered from banks built with the same settings "
                     f"as {result['base']}'s but in another ingestion run (another machine, code or build) that "
                     "holds other memories: their differences mix the rebuilt memory in with the row's own "
                     f"change; for a clean pair, run {result['base']} in the same place")
    for n, k in result.get("recomputed_rows", {}).items():
        lines.append(f"- {n}: scores recomputed from prediction and gold for {k} rows (written before rows "
                     "carried their scores)")
    lines += ["", "## Standard score (all questions, the paper's protocol)", ""]
    lines += _view_table(result["views"]["standard"], result)
    lines.append("")
    clean, audit = result["views"].get("without_wrong_golds"), result["gold_audit"]
    if clean is not None and not audit["wrong"]:
        lines += ["## Without audited-wrong gold answers", "",
                  f"None of these questions has one ({Path(audit['path']).name}): the standard score above."]
    elif clean is not None:
        lines += [f"## {audit_heading({'wrong': audit['wrong'], 'path': audit['path']})}", ""]
        lines += _view_table(clean, result)
    else:
        lines += ["## Without audited-wrong gold answers", "", f"Not shown: {audit['note']}."]
    lines.append("")
    if result.get("plot"):
        lines += [f"![differences to {result['base']}]({result['plot']})", ""]
    return "\n".join(lines)


def plot_differences(result: dict, path: Path) -> Path | None:
    """``compare.png``: per view (rows) and metric (columns), each run's difference to BASE per
    category and Overall, with its interval. None (and a log line) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no %s", path.name)
        return None
    views = [(k, v) for k, v in result["views"].items()
             if v is not None and (k == "standard" or result["gold_audit"].get("wrong"))]
    titles = {"standard": "all questions", "without_wrong_golds": "without audited-wrong golds"}
    runs = result["runs"]
    fig, axes = plt.subplots(len(views), len(METRICS), figsize=(4 * len(METRICS), 3.2 * len(views)), squeeze=False)
    width = 0.8 / max(len(runs), 1)
    for row, (key, view) in enumerate(views):
        labels = [g["label"] for g in view["groups"]]
        for col, m in enumerate(METRICS):
            ax = axes[row][col]
            for i, run in enumerate(runs):
                xs, ys, err = [], [], [[], []]
                for x, g in enumerate(view["groups"]):
                    d = g["runs"][run]["diff"][m]
                    if d is None:
                        continue
                    xs.append(x - 0.4 + width * (i + 0.5))
                    ys.append(d["mean"])
                    err[0].append(d["mean"] - d["lo"])
                    err[1].append(d["hi"] - d["mean"])
                ax.bar(xs, ys, width, yerr=err, capsize=2, label=run)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
            ax.set_title(f"Δ{METRIC_LABELS[m]} ({titles.get(key, key)})", fontsize=9)
            if col == 0:
                ax.set_ylabel(f"points vs {result['base']}")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_compare(result: dict, out: Path) -> Path:
    """``compare.json``, ``compare.png`` (when matplotlib is there) and ``compare.md`` in ``out``."""
    from memory_r1.runs import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    png = plot_differences(result, out / "compare.png")
    result = {**result, "plot": png.name if png else None}
    atomic_write(out / "compare.json", json.dumps(result, indent=2))
    atomic_write(out / "compare.md", compare_markdown(result))
    return out


def default_out_dir(names: list[str]) -> Path:
    """``runs/compare/BASE-vs-RUN1-RUN2`` (folder-safe, cut to a readable length).

    >>> default_out_dir(["base/val", "top10/val"]).as_posix()
    'runs/compare/base_val-vs-top10_val'
    """
    safe = [n.replace("/", "_") for n in names]
    return Path("runs") / "compare" / f"{safe[0]}-vs-{'-'.join(safe[1:])}"[:120]


def compare_folders(base: str | Path, runs: list[str | Path], *, out: Path | None = None,
                    names: list[str] | None = None, intersect: bool = False,
                    settings: BootstrapSettings | None = None, gold_audit: str | Path | None = None,
                    data: str | Path | None = None) -> Path:
    """Load the folders, compare them, write the three files; returns the output folder."""
    from memory_r1.data.audit import GoldAuditError, find_gold_audit
    from memory_r1.paths import DataNotFoundError

    folders = [Path(base), *(Path(r) for r in runs)]
    names = names or unique_names([f.resolve() for f in folders])
    loaded = [load_run(f, n) for f, n in zip(folders, names, strict=True)]
    audit, note = None, None
    try:
        audit = find_gold_audit(gold_audit, data)
    except (GoldAuditError, DataNotFoundError) as exc:
        note = str(exc)
    result = compare_runs(loaded[0], loaded[1:], settings=settings, audit=audit, audit_note=note, intersect=intersect)
    return write_compare(result, Path(out) if out else default_out_dir(names))
