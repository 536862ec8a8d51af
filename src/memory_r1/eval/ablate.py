"""`memr1 ablate --plan recipes/<backbone>/ablations.yaml`: named eval (or train-then-eval) rows, each
in its own resumable folder, ending with the compare table against the plan's base row. The plan
file is read by :mod:`memory_r1.eval.plan`; publishing finished rows is :mod:`memory_r1.eval.publish`.

Every step is a ``memr1`` command run as a child process (the commands ``--dry-run`` prints are the
ones that run): ``memr1 train STAGE ... --out <row>/train`` (a finished training folder is reused, a
stopped one continued with ``--resume``), then ``memr1 eval ... --out <row>/<slice>`` (a finished
folder with the same configuration is skipped; an unfinished one resumes). At the end each slice's
finished rows are compared against the base row (:mod:`memory_r1.eval.compare`).

``memr1 ablate --plan P --publish DIR`` runs nothing: it copies the small files of the finished rows
(summaries, the manifest without secrets, predictions under 1 MB, the compare tables) into a results
folder such as ``docs/results/ablations/<backbone>`` (:func:`memory_r1.eval.publish.publish`),
which notebook 02 reads.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memory_r1.eval.plan import Plan, PlanError, Row

log = logging.getLogger(__name__)

CHECKPOINT_PLACEHOLDER = "checkpoints/global_step_N/actor/huggingface"


# ------------------------------------------------------------------------------ steps


@dataclass
class Step:
    """One ``memr1`` command of the plan. ``checkpoints`` maps an option (``--manager`` / ``--answer``)
    of an eval step, or ``--manager`` of a train step, to the training folder whose checkpoint fills it."""

    kind: str  # train | eval
    row: str
    slice: str | None
    out: Path
    args: list[str]  # the command and its options
    overrides: list[str] = field(default_factory=list)  # key=value, after the options
    checkpoints: dict[str, Path] = field(default_factory=dict)
    config: dict = field(default_factory=dict)  # what --dry-run shows

    def command(self, resolved: dict[str, str] | None = None) -> list[str]:
        """The memr1 arguments with checkpoints filled in (``resolved``: option -> path) or shown as
        ``<training folder>/checkpoints/global_step_N/actor/huggingface``."""
        args = list(self.args)
        for opt, folder in self.checkpoints.items():
            args += [opt, (resolved or {}).get(opt) or str(folder / CHECKPOINT_PLACEHOLDER)]
        return args + list(self.overrides)


def _train_folder(plan: Plan, row: str) -> Path:
    return plan.out / row / "train"


def _checkpoint(plan: Plan, row: Row, ref: str | None, stage: str) -> tuple[Path | None, str | None]:
    """(training folder, None) for ``train`` / ``row:NAME``, (None, path) for a checkpoint path."""
    if ref is None:
        return None, None
    if ref == "train" or ref.startswith("row:"):
        src = row if ref == "train" else plan.row(ref[4:])
        if src.train is None or src.train.stage != stage:
            raise PlanError(f"{plan.path}: row {row.name!r}: {ref} has no {stage} training step")
        return _train_folder(plan, src.name), None
    return None, ref


@dataclass
class Options:
    """What ``memr1 ablate`` adds to every row: ``judge``, ``limit_questions``, eval ``overrides``,
    and for the train steps ``ray_address``; ``data`` for both."""

    judge: str | None = None
    limit_questions: int | None = None
    overrides: list[str] = field(default_factory=list)
    ray_address: str | None = None
    data: Path | None = None


#: override prefixes that leave ingestion as it is (the Answer Agent and the judge)
ANSWER_SIDE_KEYS = ("answer_agent.", "judge.")


def _same_banks_as_base(plan: Plan, row: Row, checkpoints: dict, fixed: list[str]) -> bool:
    """A row whose banks are the base row's: same method, no checkpoint of its own for the manager,
    overrides only of the Answer Agent or the judge, and not ``reuse_banks: false`` (it starts from
    the base's banks)."""
    base = plan.row(plan.base)
    return (row.name != base.name and row.reuse_banks and row.method == base.method and base.manager is None
            and base.train is None and not base.overrides and "--manager" not in checkpoints
            and "--manager" not in fixed and all(o.startswith(ANSWER_SIDE_KEYS) for o in row.overrides))


def _banks_donor(plan: Plan, row: Row, checkpoints: dict, fixed: list[str], slice_name: str) -> str | None:
    """The row whose eval folder on ``slice_name`` holds the banks ``row`` would build, or None:
    the base row (:func:`_same_banks_as_base`), or the row that trains ``row``'s manager when ``row``
    reads that checkpoint, has the same method and changes only the Answer Agent or the judge (both
    RL agents: the trained manager's banks, answered by a trained answerer). The eval itself still
    refuses banks built with other ingestion settings."""
    if _same_banks_as_base(plan, row, checkpoints, fixed):
        return plan.base if slice_name in plan.row(plan.base).slices else None
    src = checkpoints.get("--manager")
    if src is None or not row.reuse_banks:
        return None
    donor = plan.row(Path(src).parent.name)
    same = (donor.name != row.name and donor.manager == "train" and donor.method == row.method
            and all(o.startswith(ANSWER_SIDE_KEYS) for o in (*row.overrides, *donor.overrides)))
    return donor.name if same and slice_name in donor.slices else None


class _StepBuilder:
    """Collects the steps of :func:`build_steps`: each training once, before the evals that need it."""

    def __init__(self, plan: Plan, slices: list[str] | None, opts: Options):
        self.plan, self.slices, self.opts = plan, slices, opts
        self.common = ["--data", str(opts.data)] if opts.data else []
        self.steps: list[Step] = []
        self.trained: set[str] = set()

    def train(self, name: str) -> None:
        if name in self.trained:
            return
        plan, row = self.plan, self.plan.row(name)
        t = row.train
        assert t is not None
        folder = _train_folder(plan, name)
        args = ["train", t.stage, "--backbone", plan.backbone, "--algo", t.algo, "--out", str(folder), *self.common]
        if self.opts.ray_address:
            args += ["--ray-address", self.opts.ray_address]
        ck: dict[str, Path] = {}
        src, path = _checkpoint(plan, row, t.manager, "manager")
        if src is not None:
            self.train(src.parent.name)
            ck["--manager"] = src
        elif path:
            args += ["--manager", path]
        self.trained.add(name)
        self.steps.append(Step("train", name, None, folder, args, list(t.overrides), ck,
                               {"stage": t.stage, "algo": t.algo, "overrides": list(t.overrides)}))

    def row(self, row: Row) -> None:
        """The row's trainings (its own, those its checkpoints come from), then its evals."""
        want = [s for s in row.slices if not self.slices or s in self.slices]
        ck: dict[str, Path] = {}
        fixed: list[str] = []
        for opt, ref, stage in (("--manager", row.manager, "manager"), ("--answer", row.answer, "answer")):
            src, path = _checkpoint(self.plan, row, ref, stage)
            if src is not None:
                if want:
                    self.train(src.parent.name)
                ck[opt] = src
            elif path:
                fixed += [opt, path]
        if row.train is not None and want:
            self.train(row.name)
        for s in want:
            self.steps.append(self.eval_step(row, s, ck, fixed))

    def eval_step(self, row: Row, s: str, ck: dict[str, Path], fixed: list[str]) -> Step:
        plan, opts, sl = self.plan, self.opts, self.plan.slices[s]
        folder = plan.out / row.name / s
        args = ["eval", "--backbone", plan.backbone, "--split", sl.split, "--method", row.method,
                "--out", str(folder), *self.common, *fixed]
        if sl.conversations:
            args += ["--conversations", ",".join(sl.conversations)]
        limit = opts.limit_questions if opts.limit_questions is not None else sl.limit_questions
        if limit is not None:
            args += ["--limit-questions", str(limit)]
        judge = opts.judge or row.judge
        if judge:
            args += ["--judge", judge]
        ov = [*row.overrides, *opts.overrides]
        donor = _banks_donor(plan, row, ck, fixed, s)
        if donor is not None:
            args += ["--reuse-banks", str(plan.out / donor / s)]
        return Step("eval", row.name, s, folder, args, ov, ck,
                    {"split": sl.split, "conversations": list(sl.conversations or []) or None,
                     "limit_questions": limit, "method": row.method, "judge": judge, "overrides": ov})


def build_steps(plan: Plan, rows: list[str] | None = None, slices: list[str] | None = None,
                opts: Options | None = None) -> list[Step]:
    """The commands of the selected rows (default all) on the selected slices (default each row's),
    in plan order: a row's training (and the trainings its checkpoints come from) before its evals."""
    chosen = [plan.row(n) for n in rows] if rows else list(plan.rows)
    for s in slices or []:
        if s not in plan.slices:
            raise PlanError(f"{plan.path}: no slice {s!r} (slices: {', '.join(plan.slices)})")
    if rows and slices:
        idle = [r.name for r in chosen if not set(r.slices) & set(slices)]
        if idle:
            raise PlanError(f"{plan.path}: row{'s' if len(idle) > 1 else ''} {', '.join(idle)} "
                            f"{'are' if len(idle) > 1 else 'is'} not planned on {', '.join(slices)} "
                            f"(add the slice to the row's slices: to run it there)")
    builder = _StepBuilder(plan, slices, opts or Options())
    for row in chosen:
        builder.row(row)
    return builder.steps


# ------------------------------------------------------------------------------ checks


def check_plan(plan: Plan, steps: list[Step] | None = None, *, compose_verl: bool = True,
               data: Path | None = None) -> list[str]:
    """Check every step against the recipes before anything runs; returns lines describing each
    step's resolved configuration (what ``--dry-run`` prints).

    Eval steps: the method and split exist, the slice's conversations are in its split, the eval
    recipe with the row's overrides passes the recipe schema (:mod:`memory_r1.recipes`: known keys,
    typed values) and the judge prompt is known. Train steps: the recipe with the row's overrides
    passes the schema, and (``compose_verl``) its ``verl.`` keys compose with verl's own config schema."""
    steps = steps if steps is not None else build_steps(plan)
    split_ids: dict[str, list[str]] = {}
    composed: set[tuple] = set()
    lines: list[str] = []
    for st in steps:
        where = f"{plan.path}: row {st.row!r}"
        if st.kind == "eval":
            lines.append(_check_eval_step(plan, st, where, split_ids, data))
        else:
            lines.append(_check_train_step(plan, st, where, composed if compose_verl else None))
    return lines


def _check_eval_step(plan: Plan, st: Step, where: str, split_ids: dict[str, list[str]], data: Path | None) -> str:
    """Refuse what the eval step cannot run; its resolved configuration as one ``--dry-run`` line.
    ``split_ids`` caches each split's conversation ids."""
    from memory_r1.agents.pipeline import METHODS
    from memory_r1.data import load_split
    from memory_r1.eval.runner import EvalRequest, resolve_config

    c = st.config
    if c["method"] not in METHODS:
        raise PlanError(f"{where}: method {c['method']!r} is not one of {', '.join(METHODS)}")
    if c["split"] not in split_ids:
        try:
            split_ids[c["split"]] = load_split(c["split"], data).conversation_ids
        except ValueError as exc:
            raise PlanError(f"{where}: {exc}") from None
    bad = [x for x in c["conversations"] or [] if x not in split_ids[c["split"]]]
    if bad:
        raise PlanError(f"{where}: conversations {bad} are not in split {c['split']!r}")
    try:
        cfg = resolve_config(EvalRequest(backbone=plan.backbone, split=c["split"], method=c["method"],
                                         conversations=c["conversations"], judge=c["judge"],
                                         limit_questions=c["limit_questions"], overrides=c["overrides"]))
    except ValueError as exc:  # e.g. an override naming no key of the recipe
        raise PlanError(f"{where}: {exc}") from None
    a, j = cfg["answer_agent"], cfg["judge"]
    ck = {o: "trained by " + str(f.parent.name) for o, f in st.checkpoints.items()}
    return (f"    resolved: method={cfg['method']} split={cfg['split']} "
            f"conversations={','.join(cfg['conversations'] or []) or 'all'} "
            f"limit_questions={cfg['limit_questions']} top_k={a['top_k']} distill={a['distill']} "
            f"max_sessions={cfg['ingest']['max_sessions']} judge={j['backend']} "
            f"({j['prompt']} prompt) manager={_ck(st, '--manager', ck)} answer={_ck(st, '--answer', ck)}")


def _check_train_step(plan: Plan, st: Step, where: str, composed: set[tuple] | None) -> str:
    """Refuse what the train step cannot run (``composed``: the recipes already composed with verl's
    schema, None to skip that check); its resolved configuration as one ``--dry-run`` line."""
    from memory_r1.train.runner import TrainRequest, resolve_recipe
    from memory_r1.train.verl.overrides import flatten_verl

    c = st.config
    try:
        recipe, rpath = resolve_recipe(TrainRequest(stage=c["stage"], backbone=plan.backbone, algo=c["algo"],
                                                    overrides=[o for o in c["overrides"]]))
    except Exception as exc:  # noqa: BLE001 - the recipe's own error, one line
        raise PlanError(f"{where}: train {c['stage']}/{c['algo']}: {exc}") from None  # e.g. an unknown key
    key = (str(rpath), tuple(c["overrides"]))
    if composed is not None and key not in composed:
        from memory_r1.train.verl.config import compose_recipe

        try:
            compose_recipe(recipe, check=False)
        except Exception as exc:  # noqa: BLE001 - Hydra's error, one line
            raise PlanError(f"{where}: train {c['stage']}/{c['algo']}: verl refuses the config: "
                            f"{' '.join(str(exc).split())[:300]}") from None
        composed.add(key)
    flat = flatten_verl(recipe["verl"])
    eps = recipe["episodes"]
    if "--manager" in st.checkpoints and eps["source"] != "pipeline":
        raise PlanError(f"{where}: train.manager builds banks only with episodes.source=pipeline, "
                        f"the recipe has {eps['source']!r}")
    return (f"    resolved: recipe={rpath} reward={recipe['reward']['name']} episodes.source={eps['source']} "
            f"top_k={eps['top_k']} drop_wrong_golds={eps['drop_wrong_golds']} "
            f"steps={flat.get('trainer.total_training_steps')} epochs={flat.get('trainer.total_epochs')} "
            f"batch={flat.get('data.train_batch_size')} "
            f"lr={flat.get('actor_rollout_ref.actor.optim.lr')}"
            + (f" manager={st.checkpoints['--manager'].parent.name}'s checkpoint" if "--manager" in st.checkpoints else ""))


def _ck(step: Step, opt: str, named: dict[str, str]) -> str:
    if opt in named:
        return named[opt]
    args = step.args
    return args[args.index(opt) + 1] if opt in args else "-"


def describe(plan: Plan, steps: list[Step], resolved: list[str]) -> list[str]:
    """``--dry-run``'s lines: per row its about line, then each step's command and resolved config."""
    out = [f"plan {plan.path}: backbone {plan.backbone}, base row {plan.base}, folders under {plan.out}",
           "slices: " + "; ".join(
               f"{s.name} = {s.split}" + (f" ({', '.join(s.conversations)})" if s.conversations else "")
               for s in plan.slices.values())]
    last = None
    for st, res in zip(steps, resolved, strict=True):
        if st.row != last:
            about = plan.row(st.row).about
            out.append(f"row {st.row}" + (" (base)" if st.row == plan.base else "") + (f": {about}" if about else ""))
            last = st.row
        label = "train" if st.kind == "train" else f"eval {st.slice}"
        out.append(f"  {label}: memr1 {shlex.join(st.command(done_checkpoints(st)))}")
        out.append(res)
    return out


# ------------------------------------------------------------------------------ running


def _trained_checkpoint(folder: Path) -> Path | None:
    from memory_r1.train.runner import _trained

    return _trained(folder)


def done_checkpoints(step: Step) -> dict[str, str]:
    got = {}
    for opt, folder in step.checkpoints.items():
        ck = _trained_checkpoint(folder)
        if ck is not None:
            got[opt] = str(ck)
    return got


def _recorded_checkpoints(step: Step) -> dict[str, str]:
    """The checkpoints a finished eval folder's manifest records for the step's options whose training
    has no checkpoint here (a row restored from published results, or checkpoints deleted to save
    disk): each recorded path is kept when it lies in a training folder of the same row name
    (``<row>/train/checkpoints/...``, wherever the plan's folders were)."""
    try:
        config = json.loads((step.out / "manifest.json").read_text()).get("config", {})
    except (OSError, ValueError, AttributeError):
        return {}
    got = {}
    for opt, folder in step.checkpoints.items():
        recorded = config.get(opt.removeprefix("--")) if isinstance(config, dict) else None
        if isinstance(recorded, str) and _in_training_folder(recorded, folder):
            got[opt] = recorded
    return got


def _in_training_folder(path: str, folder: Path) -> bool:
    """Does ``path`` name a checkpoint of a training folder like ``folder`` (same row name)?

    >>> _in_training_folder("/x/ab/ans/train/checkpoints/global_step_28/actor/huggingface", Path("ab/ans/train"))
    True
    >>> _in_training_folder("/x/ab/other/train/checkpoints/global_step_28", Path("ab/ans/train"))
    False
    """
    parts, tail = Path(path).parts, (folder.parent.name, folder.name, "checkpoints")
    return any(parts[i:i + 3] == tail for i in range(len(parts) - 2))


def finished_checkpoints(step: Step) -> dict[str, str]:
    """The checkpoint options an eval step's finished folder is checked against: the trained
    checkpoint where there is one, else the one the folder recorded (:func:`_recorded_checkpoints`)."""
    done = done_checkpoints(step)
    return done if set(done) == set(step.checkpoints) else {**_recorded_checkpoints(step), **done}


def eval_finished(step: Step, args: list[str], data: Path | None) -> bool:
    """A finished eval folder (``summary.json``) whose configuration is the step's: skip it."""
    from memory_r1.eval.folder import FINGERPRINT_KEYS, fingerprint_value
    from memory_r1.runs import differing_keys

    if not (step.out / "summary.json").exists() or not (step.out / "manifest.json").exists():
        return False
    old = json.loads((step.out / "manifest.json").read_text()).get("config", {})
    return not differing_keys(old, _eval_config(args, data), FINGERPRINT_KEYS, fingerprint_value)


def _eval_config(args: list[str], data: Path | None) -> dict:
    """The resolved eval config a ``memr1 eval`` argument list asks for (as the folder's manifest holds it)."""
    from memory_r1.eval.runner import EvalRequest, resolve_config
    from memory_r1.paths import resolve_locomo_path

    opts, overrides = _parse_eval_args(args)
    req = EvalRequest(backbone=opts["--backbone"], split=opts["--split"], method=opts["--method"],
                      conversations=opts["--conversations"].split(",") if opts.get("--conversations") else None,
                      limit_questions=int(opts["--limit-questions"]) if opts.get("--limit-questions") else None,
                      manager=opts.get("--manager"), answer=opts.get("--answer"), judge=opts.get("--judge"),
                      overrides=overrides)
    cfg = resolve_config(req)
    path = resolve_locomo_path(data).resolve()
    st = path.stat()
    cfg["data_sha256"] = _data_sha256(str(path), st.st_size, st.st_mtime_ns)
    return cfg


@functools.lru_cache(maxsize=8)
def _data_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of the data file, hashed once per (path, size, mtime) in a process: a plan asks for
    every eval step's configuration up to twice, and the file does not change meanwhile."""
    from memory_r1.paths import sha256_file

    return sha256_file(Path(path))


def _parse_eval_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``eval --opt value ... key=value ...`` -> (options, overrides).

    >>> _parse_eval_args(["eval", "--split", "val", "--judge", "none", "a.b=1"])
    ({'--split': 'val', '--judge': 'none'}, ['a.b=1'])
    """
    opts, rest, i = {}, [], 1
    while i < len(args):
        if args[i].startswith("--"):
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            rest.append(args[i])
            i += 1
    return opts, rest


def run_memr1(args: list[str]) -> int:
    """Run ``memr1 ARGS`` as a child process (its own progress bars and logs); returns its exit code."""
    return subprocess.run([sys.executable, "-m", "memory_r1.cli", *args], check=False).returncode


@dataclass
class StepResult:
    step: Step
    status: str  # ran | skipped | reused | failed
    command: list[str]


def _resolved_checkpoints(st: Step) -> dict[str, str]:
    """The step's checkpoint options filled in; PlanError when a training it needs has not finished."""
    resolved = {}
    for opt, folder in st.checkpoints.items():
        ck = _trained_checkpoint(folder)
        if ck is None:
            raise PlanError(f"row {st.row!r}: {folder} holds no trained checkpoint for {opt}")
        resolved[opt] = str(ck)
    return resolved


def _step_status(st: Step, data: Path | None, needed_by: list[Step]) -> tuple[str, list[str]]:
    """(``ran`` | ``reused`` | ``skipped``, the arguments to run): a finished eval folder of the same
    configuration is skipped; a finished training is reused, a stopped one resumed, and one whose
    checkpoint no unfinished eval step of the run needs (``needed_by``: the eval steps that read it)
    is skipped, so rows restored from published results do not train again."""
    if st.kind != "train":
        args = st.command(finished_checkpoints(st))
        if eval_finished(st, args, data):
            return "skipped", args
        return "ran", st.command(_resolved_checkpoints(st))
    args = st.command(_resolved_checkpoints(st))
    if _trained_checkpoint(st.out) is not None:
        return "reused", args
    if needed_by and all(eval_finished(e, e.command(finished_checkpoints(e)), data) for e in needed_by):
        return "skipped", args
    from memory_r1.train.runner import _has_run

    return "ran", ([*args[:2], "--resume", *args[2:]] if _has_run(st.out) else args)


def _needed_by(st: Step, steps: list[Step]) -> list[Step]:
    """The eval steps reading a train step's checkpoint; empty when a train step of the run reads it
    too (then it must train)."""
    readers = [s for s in steps if st.out in s.checkpoints.values() and s is not st]
    if any(s.kind == "train" for s in readers):
        return []
    return readers


def run_plan(plan: Plan, steps: list[Step], *, data: Path | None = None,
             runner: Callable[[list[str]], int] = run_memr1,
             on_step: Callable[[int, int, Step, str, list[str]], None] | None = None) -> list[StepResult]:
    """Run the steps in order (resuming what earlier runs left). A failed step stops the plan
    (:class:`PlanError` naming it; running the plan again resumes)."""
    results: list[StepResult] = []
    for i, st in enumerate(steps, 1):
        status, args = _step_status(st, data, _needed_by(st, steps) if st.kind == "train" else [])
        if on_step:
            on_step(i, len(steps), st, status, args)
        if status == "ran":
            code = runner(args)
            if code != 0:
                results.append(StepResult(st, "failed", args))
                raise PlanError(f"step {i}/{len(steps)} (row {st.row!r}, {st.kind}"
                                + (f" on {st.slice}" if st.slice else "")
                                + f") failed with exit code {code}: memr1 {shlex.join(args)}")
        results.append(StepResult(st, status, args))
    return results


def compare_slices(plan: Plan, slices: list[str] | None = None, data: Path | None = None,
                   gold_audit: Path | None = None) -> dict[str, Path | str]:
    """Per slice: the compare table of every row with a finished folder against the base row
    (``<out>/compare-<slice>``); a slice where that cannot be done gets the reason instead."""
    from memory_r1.eval.compare import CompareError, bootstrap_settings, compare_folders

    settings = bootstrap_settings((plan.compare or {}).get("bootstrap"))
    out: dict[str, Path | str] = {}
    for s in slices or list(plan.slices):
        done = [r.name for r in plan.rows if (plan.out / r.name / s / "summary.json").exists()]
        if plan.base not in done:
            out[s] = f"no finished {plan.base} (base) folder on {s}"
            continue
        others = [n for n in done if n != plan.base]
        if not others:
            out[s] = f"only the base row is finished on {s}"
            continue
        try:
            out[s] = compare_folders(plan.out / plan.base / s, [plan.out / n / s for n in others],
                                     names=[plan.base, *others], out=plan.out / f"compare-{s}",
                                     settings=settings, data=data, gold_audit=gold_audit)
        except CompareError as exc:
            out[s] = str(exc)
    return out
