"""``memr1 ablate --plan P --publish DIR``: copy the small files of a plan's finished rows
(summaries, the manifest without secrets, predictions under 1 MB, the compare tables) into a results
folder such as ``docs/results/ablations/<backbone>``, which notebook 02 reads. Runs nothing.

``memr1 ablate --plan P --restore DIR`` is the way back (:func:`restore`): a fresh clone copies the
published rows into the plan's folders, so ``memr1 ablate`` resumes from them (their evals are
finished, their trainings are not run again), compares new rows against them and publishes them
again with the rest."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any

from memory_r1.eval.ablate import Options, Step, build_steps, eval_finished, finished_checkpoints
from memory_r1.eval.plan import Plan

log = logging.getLogger(__name__)

#: the files of a finished eval folder that are published (banks and state never are)
PUBLISHED_FILES = ("summary.json", "summary.md")
#: the files of a finished training folder that are published (its curves, the exact recipe and
#: overrides; never checkpoints, episodes or generations)
PUBLISHED_TRAIN_FILES = ("result.json", "recipe.yaml", "overrides.txt", "reward_curve.json", "reward_curve.png")
#: predictions.jsonl is published only below this size (per-question scores let readers re-aggregate);
#: the CPU plan's test slice (351 answers, 60 retrieved ids each) writes 0.9-1.1 MB, rag-turns ~6 MB
MAX_PUBLISHED_PREDICTIONS = 1_200_000
_SECRET_KEY = re.compile(
    r"(^|[_-])(api[_-]?key|key|token|secret|passw(or)?d|authorization|credentials?|cookie)$", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")
_URL_SECRET_PARAM = re.compile(r"(?P<key>[?&][^=&#\s]*(?:key|token|secret|sig|password)[^=&#\s]*=)[^&#\s]*", re.I)


def scrub_secrets(value: Any) -> Any:
    """A copy of a manifest with what could be a secret taken out: values under keys that name one
    (api_key, hf_token, password, ...; not max_new_tokens), the user:password part of URLs and URL
    parameters that name one.

    >>> scrub_secrets({"judge": {"backend": "openai:gpt@https://bob:pw@h.example/v1?api_key=x&a=1"},
    ...                "store": {"api_key": "k", "url": None}, "seed": 0})
    {'judge': {'backend': 'openai:gpt@https://h.example/v1?api_key=<removed>&a=1'}, 'store': {'api_key': '<removed>', 'url': None}, 'seed': 0}
    """
    if isinstance(value, dict):
        return {k: ("<removed>" if _SECRET_KEY.search(str(k)) and value[k] not in (None, "") else scrub_secrets(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(v) for v in value]
    if isinstance(value, str):
        return _URL_SECRET_PARAM.sub(r"\g<key><removed>", _URL_USERINFO.sub(r"\g<scheme>", value))
    return value


def publish(plan: Plan, dest: Path, *, slices: list[str] | None = None,
            opts: Options | None = None, gold_audit: Path | None = None,
            max_predictions_bytes: int = MAX_PUBLISHED_PREDICTIONS) -> dict:
    """Copy the small files of every finished row and slice into ``dest`` (e.g.
    ``docs/results/ablations/<backbone>``): ``<row>/<slice>/`` gets ``summary.json``, ``summary.md``,
    ``manifest.json`` (:func:`scrub_secrets`) and ``predictions.jsonl`` when under
    ``max_predictions_bytes``; ``<row>/train/`` gets a finished training's curves and settings
(:data:`PUBLISHED_TRAIN_FILES`); ``compare-<slice>/`` gets the compare table of the published rows
    against the base row (computed from their run folders, as ``memr1 ablate`` writes it). Never
    banks, state or checkpoints.

    Every row of the plan is looked at (on ``slices``, default each row's own). A row is published
    when its folder under the plan's ``out`` is finished with the configuration the same
    ``memr1 ablate`` command (``slices``, ``opts``) asks for; a finished folder of another
    configuration (say a smoke run with ``--limit-questions``) is left out, with the reason.
    Returns what ``dest/published.json`` records: per row and slice the files published or the
    reason there are none, and per slice the compare folder or the reason there is none (a compare
    folder published before is then removed, so nothing stale stays)."""
    from memory_r1.runs import atomic_write, git_commit

    opts = opts or Options()
    steps = [s for s in build_steps(plan, None, slices, opts) if s.kind == "eval"]
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "plan": str(plan.path), "plan_sha256": hashlib.sha256(Path(plan.path).read_bytes()).hexdigest(),
        "backbone": plan.backbone, "base": plan.base, "source": str(plan.out), "git_commit": git_commit(),
        "options": {"judge": opts.judge, "limit_questions": opts.limit_questions, "overrides": opts.overrides},
        "rows": {}, "compare": {},
    }
    published: dict[str, list[str]] = {}
    for st in steps:
        entry = record["rows"].setdefault(st.row, {})
        if not (st.out / "summary.json").exists():
            entry[st.slice] = "not run"
        elif not eval_finished(st, st.command(finished_checkpoints(st)), opts.data):
            entry[st.slice] = (f"left out: {st.out} was finished with another configuration than "
                               f"memr1 ablate --plan {plan.path} asks for (options: {record['options']})")
        else:
            entry[st.slice] = _publish_folder(st, dest / st.row / st.slice, max_predictions_bytes)
            published.setdefault(st.slice, []).append(st.row)
    record["train"] = {}
    for row in plan.rows:
        if row.train is not None:
            record["train"][row.name] = _publish_train(plan.out / row.name / "train", dest / row.name / "train")
    for s in sorted({st.slice for st in steps}):
        record["compare"][s] = _publish_compare(plan, s, published.get(s, []), dest, opts, gold_audit)
        if record["compare"][s] != f"compare-{s}":
            shutil.rmtree(dest / f"compare-{s}", ignore_errors=True)
    atomic_write(dest / "published.json", json.dumps(record, indent=2))
    return record


def _publish_folder(st: Step, target: Path, max_predictions_bytes: int) -> dict:
    """Copy one finished eval folder's small files into ``target``; what was published."""
    from memory_r1.runs import atomic_write

    target.mkdir(parents=True, exist_ok=True)
    files = []
    for name in PUBLISHED_FILES:
        if (st.out / name).exists():
            shutil.copyfile(st.out / name, target / name)
            files.append(name)
    manifest = json.loads((st.out / "manifest.json").read_text())
    atomic_write(target / "manifest.json", json.dumps(scrub_secrets(manifest), indent=2))
    files.append("manifest.json")
    preds = st.out / "predictions.jsonl"
    size = preds.stat().st_size if preds.exists() else 0
    if preds.exists() and size <= max_predictions_bytes:
        shutil.copyfile(preds, target / "predictions.jsonl")
        files.append("predictions.jsonl")
    else:
        (target / "predictions.jsonl").unlink(missing_ok=True)
        if preds.exists():
            log.info("%s: predictions.jsonl (%d bytes) is over %d bytes: not published", st.out, size,
                     max_predictions_bytes)
    return {"published": files, "predictions_bytes": size}


def _publish_train(src: Path, target: Path) -> list[str] | str:
    """A row's finished training folder (``result.json`` written at its end): its curves and exact
    settings copied into ``target``; the files, or why there are none."""
    if not (src / "result.json").exists():
        return "not run" if not src.exists() else f"left out: {src} has no result.json (not finished)"
    target.mkdir(parents=True, exist_ok=True)
    files = [name for name in PUBLISHED_TRAIN_FILES if (src / name).exists()]
    for name in files:
        shutil.copyfile(src / name, target / name)
    return files


def _publish_compare(plan: Plan, s: str, done: list[str], dest: Path, opts: Options,
                     gold_audit: Path | None) -> str:
    """The compare table of the rows published on slice ``s`` against the base row, written to
    ``dest/compare-<s>``: its folder name, or why there is none."""
    if plan.base not in done:
        return f"no published {plan.base} (base) folder on {s}"
    if len(done) < 2:
        return f"only the base row is published on {s}"
    from memory_r1.eval.compare import CompareError, bootstrap_settings, compare_folders

    others = [n for n in done if n != plan.base]
    try:
        compare_folders(plan.out / plan.base / s, [plan.out / n / s for n in others],
                        names=[plan.base, *others], out=dest / f"compare-{s}",
                        settings=bootstrap_settings((plan.compare or {}).get("bootstrap")),
                        data=opts.data, gold_audit=gold_audit)
    except CompareError as exc:
        return str(exc)
    return f"compare-{s}"


#: what a published eval folder must hold to be restored (the compare reads per-question scores)
RESTORED_FILES = ("summary.json", "manifest.json", "predictions.jsonl")
RESTORED_MARK = "restored.json"


def restore(plan: Plan, src: Path, *, slices: list[str] | None = None) -> dict:
    """Copy a published results folder (:func:`publish`'s ``dest``) back into the plan's folders: each
    row and slice whose folder under the plan's ``out`` does not exist gets the published
    ``summary.*``, ``manifest.json`` and ``predictions.jsonl`` (all three needed), and each row whose
    training folder does not exist gets the published training files (curves, recipe, overrides);
    each restored folder holds ``restored.json`` saying from where. Nothing that exists is
    overwritten. Returns per row and slice (and per training) the files restored or why none were."""
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"--restore {src}: no such folder")
    record: dict[str, Any] = {"from": str(src), "rows": {}, "train": {}}
    for row in plan.rows:
        for s in (x for x in row.slices if not slices or x in slices):
            record["rows"].setdefault(row.name, {})[s] = _restore_files(
                src / row.name / s, plan.out / row.name / s, RESTORED_FILES, ("summary.md",))
        if row.train is not None:
            record["train"][row.name] = _restore_files(
                src / row.name / "train", plan.out / row.name / "train", ("result.json",), PUBLISHED_TRAIN_FILES)
    return record


def _restore_files(src: Path, target: Path, needed: tuple[str, ...], optional: tuple[str, ...]) -> list[str] | str:
    """Copy ``needed`` (all of them, regular files) and what exists of ``optional`` from ``src`` into a
    new ``target``; the files copied, or why none were."""
    from memory_r1.runs import atomic_write

    def regular(name: str) -> bool:
        return (src / name).is_file() and not (src / name).is_symlink()

    if target.exists():
        return f"kept: {target} exists"
    missing = [n for n in needed if not regular(n)]
    if missing:
        return "not published" if not src.exists() else f"not restored: {src} lacks {', '.join(missing)}"
    if "manifest.json" in needed:
        try:
            json.loads((src / "manifest.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"not restored: {src / 'manifest.json'} is not a manifest ({type(exc).__name__})"
    files = [*needed, *(n for n in optional if n not in needed and regular(n))]
    target.mkdir(parents=True)
    for name in files:
        shutil.copyfile(src / name, target / name)
    atomic_write(target / RESTORED_MARK, json.dumps({"from": str(src), "files": files}, indent=2))
    return files
