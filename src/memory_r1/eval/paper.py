"""The Memory-R1 paper's numbers and ablation directions, and verdicts of our measured differences
against them (notebook 02).

Only directions the paper states plainly are used (:data:`CLAIMS`): RL-trained agents beat the
prompted / untrained ones; Memory-R1's memory beats the full-context and RAG baselines;
distillation helps the Answer Agent; GRPO does at least as well as PPO. Each is a pair of ablation
rows, ``better`` over ``worse``. A verdict is computed from the paired bootstrap interval of
``better - worse`` (:mod:`memory_r1.eval.compare`), never written by hand: the interval excludes 0
on the paper's side ("same direction"), on the other side ("opposite"), or contains 0 ("not
measurable at this scale").

Differences come from a published ablation folder (``memr1 ablate --publish``): the slice's
``compare-<slice>/compare.json`` when one row is its base, else recomputed from the two rows'
published ``predictions.jsonl`` with the same bootstrap settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SAME, OPPOSITE, NOT_MEASURABLE = "same direction", "opposite", "not measurable at this scale"


@dataclass(frozen=True)
class PaperRow:
    backbone: str
    method: str
    f1: float
    bleu1: float
    judge: float


#: Table 1 of the paper (LoCoMo test, every category but adversarial): F1, BLEU-1, LLM-as-a-Judge
PAPER_TABLE1: tuple[PaperRow, ...] = (
    PaperRow("LLaMA-3.1-8B", "Mem0", 30.41, 22.22, 45.68),
    PaperRow("LLaMA-3.1-8B", "Memory-R1-PPO", 41.05, 32.91, 57.54),
    PaperRow("LLaMA-3.1-8B", "Memory-R1-GRPO", 45.02, 37.51, 62.74),
    PaperRow("Qwen-2.5-7B", "Memory-R1-GRPO", 43.14, 36.44, 61.51),
)


@dataclass(frozen=True)
class Claim:
    better: str  # the row the paper's direction puts higher
    worse: str
    statement: str  # what the paper says, in short


RL = "RL-trained agents beat the prompted / untrained ones"
MEMORY = "Memory-R1's memory beats the full-context and RAG baselines"
DISTILL = "distillation helps the Answer Agent"
GRPO = "GRPO does at least as well as PPO"

#: the paper's directions as pairs of rows of the CPU ablation plan (recipes/smollm2-135m/ablations.yaml)
CLAIMS: tuple[Claim, ...] = (
    Claim("answer-grpo", "memr1-untrained", RL),
    Claim("answer-grpo-seed1", "memr1-untrained", RL),
    Claim("answer-grpo-40min", "memr1-untrained", RL),
    Claim("answer-grpo-40min-seed1", "memr1-untrained", RL),
    Claim("answer-grpo-40min-fp32", "memr1-untrained", RL),
    Claim("answer-grpo-40min-fp32", "fp32-rerun", RL),  # the clean pair where both ran in fp32 on one CPU
    Claim("answer-ppo", "memr1-untrained", RL),
    Claim("answer-ppo-40min", "memr1-untrained", RL),
    Claim("answer-grpo-40min-clean-golds", "memr1-untrained", RL),
    Claim("answer-grpo-40min-short", "memr1-untrained", RL),
    Claim("manager-grpo", "memr1-untrained", RL),
    Claim("manager-grpo-40min", "memr1-untrained", RL),
    Claim("manager-ppo-40min", "memr1-untrained", RL),
    Claim("both-grpo", "memr1-untrained", RL),
    Claim("both-40min", "memr1-untrained", RL),
    Claim("memr1-untrained", "rag-turns", MEMORY),
    Claim("memr1-untrained", "full-context", MEMORY),
    Claim("both-grpo", "rag-turns", MEMORY),
    Claim("both-grpo", "full-context", MEMORY),
    Claim("both-40min", "rag-turns", MEMORY),
    Claim("both-40min", "full-context", MEMORY),
    Claim("distill", "memr1-untrained", DISTILL),
    Claim("answer-grpo", "answer-ppo", GRPO),
    Claim("answer-grpo-40min", "answer-ppo-40min", GRPO),
    Claim("manager-grpo-40min", "manager-ppo-40min", GRPO),
)

METRIC_NAMES = {"f1": "F1", "bleu1": "BLEU-1", "em": "EM", "judge": "J"}


def verdict(diff: dict | None) -> str | None:
    """Where the interval of ``better - worse`` lies; None without a difference.

    >>> verdict({"mean": 2.0, "lo": 0.4, "hi": 3.5}), verdict({"mean": -2.0, "lo": -3.5, "hi": -0.1})
    ('same direction', 'opposite')
    >>> verdict({"mean": 0.5, "lo": -1.0, "hi": 2.0}), verdict({"mean": 0.0, "lo": 0.0, "hi": 0.0}), verdict(None)
    ('not measurable at this scale', 'not measurable at this scale', None)
    """
    if diff is None:
        return None
    if diff["lo"] > 0:
        return SAME
    if diff["hi"] < 0:
        return OPPOSITE
    return NOT_MEASURABLE


def _negate(d: dict) -> dict:
    """``worse - better`` turned into ``better - worse`` (0.0 - x: no negative zero).

    >>> _negate({"mean": 2.5, "lo": 0.0, "hi": 5.0, "n": 4})
    {'mean': -2.5, 'lo': -5.0, 'hi': 0.0, 'n': 4}
    """
    return {**d, "mean": 0.0 - d["mean"], "lo": 0.0 - d["hi"], "hi": 0.0 - d["lo"]}


def _overall(view: dict) -> dict:
    return next(g for g in view["groups"] if g["label"] == "Overall")


def read_compare(folder: Path, slice_name: str) -> dict | None:
    path = Path(folder) / f"compare-{slice_name}" / "compare.json"
    return json.loads(path.read_text()) if path.is_file() else None


@dataclass
class Difference:
    """``better - worse`` (points) per metric on one slice, or why there is none."""

    better: str
    worse: str
    slice: str
    diffs: dict[str, dict | None]  # metric -> {mean, lo, hi, n}; empty when missing
    questions: int = 0
    source: str = ""  # compare.json | predictions
    missing: tuple[str, ...] = ()  # rows with no published result on the slice
    note: str = ""  # why there is no difference although both rows ran
    banks: str = ""  # how better's memory relates to worse's (compare.bank_relation), when known

    @property
    def ok(self) -> bool:
        return bool(self.diffs)


def published_rows(folder: Path, slice_name: str) -> list[str]:
    """Rows with a published result (``<row>/<slice>/summary.json``) in a publication folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.parent.parent.name for p in folder.glob(f"*/{slice_name}/summary.json"))


def difference(folder: Path, slice_name: str, better: str, worse: str,
               metrics: tuple[str, ...] = ("f1", "bleu1", "judge")) -> Difference:
    """``better - worse`` on a slice of a publication folder, with its paired bootstrap interval."""
    folder = Path(folder)
    have = set(published_rows(folder, slice_name))
    missing = tuple(r for r in (better, worse) if r not in have)
    if missing:
        return Difference(better, worse, slice_name, {}, missing=missing)
    cmp = read_compare(folder, slice_name)
    if cmp is not None:
        overall = _overall(cmp["views"]["standard"])
        sign = None
        if cmp["base"] == worse and better in cmp["runs"]:
            sign, run = 1, better
        elif cmp["base"] == better and worse in cmp["runs"]:
            sign, run = -1, worse
        if sign is not None:
            diffs = {m: (None if overall["runs"][run]["diff"].get(m) is None else
                         (overall["runs"][run]["diff"][m] if sign > 0 else _negate(overall["runs"][run]["diff"][m])))
                     for m in metrics}
            return Difference(better, worse, slice_name, diffs, overall["count"], "compare.json",
                              banks=cmp.get("banks", {}).get(run, ""))
    from memory_r1.eval.compare import BootstrapSettings, CompareError, bootstrap_settings, compare_runs, load_run

    preds = [folder / r / slice_name / "predictions.jsonl" for r in (better, worse)]
    if not all(p.is_file() for p in preds):
        return Difference(better, worse, slice_name, {},
                          note="predictions.jsonl of a row is not published (over the size limit)")
    settings = BootstrapSettings(**cmp["bootstrap"]) if cmp else bootstrap_settings()
    try:
        res = compare_runs(load_run(preds[1].parent, worse), [load_run(preds[0].parent, better)], settings=settings)
    except CompareError as exc:
        return Difference(better, worse, slice_name, {}, note=str(exc))
    overall = _overall(res["views"]["standard"])
    diffs = {m: overall["runs"][better]["diff"].get(m) for m in metrics}
    return Difference(better, worse, slice_name, diffs, overall["count"], "predictions",
                      banks=res.get("banks", {}).get(better, ""))


def _fmt(d: dict | None) -> str:
    return "n/a" if d is None else f"{d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]"


def sentence(diff: Difference, statement: str | None, run_command: str | None = None,
             metrics: tuple[str, ...] = ("f1", "bleu1"), confidence: float = 0.95) -> str:
    """One sentence for one ablation pair: the measured difference with its interval and, for a paper
    claim, the verdict per metric (computed by :func:`verdict`).

    >>> d = Difference("a", "b", "val", {"f1": {"mean": 3.0, "lo": 1.0, "hi": 5.0, "n": 81},
    ...                                  "bleu1": {"mean": 1.0, "lo": -1.0, "hi": 3.0, "n": 81}}, 81)
    >>> print(sentence(d, "a beats b"))
    a vs b on val (81 questions): F1 +3.00 [+1.00, +5.00], BLEU-1 +1.00 [-1.00, +3.00] points (95% CI); the paper: a beats b. F1: same direction; BLEU-1: not measurable at this scale.
    >>> print(sentence(Difference("a", "b", "val", {}, missing=("a",)), "a beats b", "memr1 ablate --rows a"))
    a vs b on val: not run (a); the paper: a beats b. Run it: memr1 ablate --rows a
    """
    paper = f"; the paper: {statement}." if statement else "; the paper states no direction used here."
    if not diff.ok:
        return _unmeasured(diff, paper, run_command)
    out = _measured(diff, metrics, confidence) + paper
    if statement:
        out += " " + "; ".join(f"{METRIC_NAMES[m]}: {verdict(diff.diffs.get(m)) or 'n/a'}" for m in metrics) + "."
    return out + _apart(diff)


def _unmeasured(diff: Difference, tail: str, run_command: str | None) -> str:
    """``a vs b on s: not run (a)`` or ``...: no difference: why``, then ``tail`` and the command."""
    why = f"not run ({', '.join(diff.missing)})" if diff.missing else f"no difference: {diff.note}"
    return (f"{diff.better} vs {diff.worse} on {diff.slice}: {why}{tail}"
            + (f" Run it: {run_command}" if run_command and diff.missing else ""))


def _measured(diff: Difference, metrics: tuple[str, ...], confidence: float) -> str:
    """``a vs b on s (n questions): F1 +x [lo, hi], ... points (95% CI)``."""
    parts = ", ".join(f"{METRIC_NAMES[m]} {_fmt(diff.diffs.get(m))}" for m in metrics)
    return (f"{diff.better} vs {diff.worse} on {diff.slice} ({diff.questions} questions): {parts} points "
            f"({round(100 * confidence)}% CI)")


def _apart(diff: Difference) -> str:
    return (f" Caution: {diff.better}'s banks were built apart from {diff.worse}'s (same settings, another "
            "ingestion run holding other memories): the difference mixes the rebuilt memory in."
            if diff.banks == "built apart" else "")


EFFECT = {SAME: "the change helped", OPPOSITE: "the change hurt", NOT_MEASURABLE: "no effect measurable at this scale"}


def lever_sentence(diff: Difference, run_command: str | None = None, metrics: tuple[str, ...] = ("f1", "bleu1"),
                   confidence: float = 0.95) -> str:
    """One sentence for a lever (a row that changes one thing of its ``against`` row): ``row - against``
    with its interval and, per metric, whether the change helped, hurt or did nothing measurable.

    >>> d = Difference("short", "ref", "val", {"f1": {"mean": -2.0, "lo": -3.5, "hi": -0.5, "n": 81},
    ...                                        "bleu1": {"mean": 0.5, "lo": -1.0, "hi": 2.0, "n": 81}}, 81)
    >>> print(lever_sentence(d))
    short vs ref on val (81 questions): F1 -2.00 [-3.50, -0.50], BLEU-1 +0.50 [-1.00, +2.00] points (95% CI). F1: the change hurt; BLEU-1: no effect measurable at this scale.
    >>> print(lever_sentence(Difference("short", "ref", "val", {}, missing=("short",)), "memr1 ablate --rows short"))
    short vs ref on val: not run (short). Run it: memr1 ablate --rows short
    """
    if not diff.ok:
        return _unmeasured(diff, ".", run_command)
    effects = "; ".join(f"{METRIC_NAMES[m]}: {EFFECT.get(verdict(diff.diffs.get(m)) or '', 'n/a')}" for m in metrics)
    return f"{_measured(diff, metrics, confidence)}. {effects}." + _apart(diff)


#: training overrides that only re-seed a run (data order, sampling)
SEED_KEYS = ("seed", "verl.data.seed", "verl.actor_rollout_ref.rollout.seed")
#: what a replicate of a run may change: its seeds and its training precision (``dtype``: a CPU
#: without native bf16 trains in fp32 what another trains in bf16 mixed precision); a row whose
#: training differs from its ``against`` row in these alone replicates it
REPLICATE_KEYS = (*SEED_KEYS, "dtype")
#: verl keys that only split a batch into micro-batches (memory, not training: verl's token-mean
#: loss divides by the mini-batch's token count, so the gradient is the same, up to rounding)
EXECUTION_KEY_SUFFIX = "micro_batch_size_per_gpu"


def _unreplicated(row) -> set[str] | None:
    """``row``'s training overrides but its seeds, precision and micro-batch sizes."""
    if row.train is None:
        return None
    keys = {o: o.split("=", 1)[0] for o in row.train.overrides}
    return {o for o, k in keys.items() if k not in REPLICATE_KEYS and not k.endswith(EXECUTION_KEY_SUFFIX)}


def is_replicate(plan, row) -> bool:
    """Does ``row`` train exactly as its ``against`` row but for :data:`REPLICATE_KEYS` (another seed,
    another training precision) and micro-batch sizes (:data:`EXECUTION_KEY_SUFFIX`)?"""
    if not row.against or row.train is None:
        return False
    ref = plan.row(row.against)
    return (ref.train is not None and (row.train.stage, row.train.algo) == (ref.train.stage, ref.train.algo)
            and _unreplicated(row) == _unreplicated(ref) and set(row.train.overrides) != set(ref.train.overrides))


def references(plan, row) -> list[str]:
    """The rows a lever is read against: its ``against`` row, then every replicate of that row in the
    plan (:func:`is_replicate`: another seed, another training precision) but the lever itself. A
    lever trained once is a change only where it beats every run of its reference: a new seed alone
    can move the score as much, and a lever trained on another CPU kind trains in its precision.

    >>> from types import SimpleNamespace as N
    >>> t = lambda *o: N(stage="answer", algo="grpo", overrides=o)
    >>> rows = {"ref": N(name="ref", against=None, train=t("steps=28")),
    ...         "ref-s1": N(name="ref-s1", against="ref", train=t("steps=28", "seed=1")),
    ...         "ref-fp32": N(name="ref-fp32", against="ref", train=t("steps=28", "dtype=float32", "a.micro_batch_size_per_gpu=2")),
    ...         "short": N(name="short", against="ref", train=t("steps=28", "len=16"))}
    >>> plan = N(rows=list(rows.values()), row=rows.__getitem__)
    >>> references(plan, rows["short"]), references(plan, rows["ref-s1"])
    (['ref', 'ref-s1', 'ref-fp32'], ['ref', 'ref-fp32'])
    """
    ref = row.against
    return [ref] + [r.name for r in plan.rows
                    if r.name != row.name and r.against == ref and is_replicate(plan, r)] if ref else []


def across_references(diffs: list[Difference], metric: str = "f1") -> str | None:
    """One verdict for a lever read against several references (:func:`references`): the same verdict
    against every one of them, else not measurable; None unless every difference is measured.

    >>> up = lambda lo: Difference("l", "r", "val", {"f1": {"mean": lo + 1, "lo": lo, "hi": lo + 2, "n": 81}}, 81)
    >>> across_references([up(0.3), up(1.0)]), across_references([up(0.3), up(-1.0)]), across_references([up(0.3)])
    ('same direction', 'not measurable at this scale', 'same direction')
    >>> across_references([up(0.3), Difference("l", "r2", "val", {}, missing=("r2",))]) is None
    True
    """
    if not diffs or not all(d.ok for d in diffs):
        return None
    found = {verdict(d.diffs.get(metric)) for d in diffs}
    return found.pop() if len(found) == 1 else NOT_MEASURABLE


def references_sentence(diffs: list[Difference], metric: str = "f1") -> str:
    """The lever's verdict against all its references, or '' with fewer than two measured.

    >>> up = lambda lo, r: Difference("l", r, "val", {"f1": {"mean": lo + 1, "lo": lo, "hi": lo + 2, "n": 81}}, 81)
    >>> print(references_sentence([up(0.3, "ref"), up(-1.0, "ref-s1")]))
    Against every run of its reference (ref, ref-s1), F1: no effect measurable at this scale (within what a new seed or precision alone moves).
    >>> print(references_sentence([up(0.3, "ref"), up(0.1, "ref-s1")]))
    Against every run of its reference (ref, ref-s1), F1: the change helped.
    """
    v = across_references(diffs, metric)
    if len(diffs) < 2 or v is None:
        return ""
    tail = " (within what a new seed or precision alone moves)" if v == NOT_MEASURABLE else ""
    return f"Against every run of its reference ({', '.join(d.worse for d in diffs)}), {METRIC_NAMES[metric]}: {EFFECT[v]}{tail}."
