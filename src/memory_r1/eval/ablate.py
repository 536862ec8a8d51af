"""`memr1 ablate --plan recipes/<backbone>/ablations.yaml`: named eval (or train-then-eval) rows, each
in its own resumable folder, ending with the compare table against the plan's base row.

A plan (YAML)::

    backbone: smollm2-135m
    base: memr1-untrained            # the row every other row is compared against
    out: runs/ablate/smollm2-135m    # root folder: <out>/<row>/train, <out>/<row>/<slice>, <out>/compare-<slice>
    default_slices: [val]
    slices:                          # named question sets
      val: {split: val}
      test-conv41-42: {split: test, conversations: [conv-41, conv-42]}
    compare: {bootstrap: {}}         # optional: overrides recipes/compare.yaml's bootstrap settings
    rows:
      - name: top-k-10
        about: 5 + 5 memories (10 in all)
        overrides: [answer_agent.top_k=5]          # eval recipe keys (each must exist in the recipe)
      - name: answer-grpo
        train: {stage: answer, algo: grpo, overrides: [verl.trainer.total_training_steps=12]}
        answer: train                # this row's trained checkpoint; or row:NAME, or a checkpoint path
        slices: [val, test-conv41-42]

A row's keys: ``name``, ``about``, ``method`` (memory-r1 | rag-turns | full-context), ``overrides``
(eval recipe keys), ``judge``, ``slices``, ``manager`` / ``answer`` (checkpoints: ``train``,
``row:NAME`` or a path) and ``train`` (``stage``, ``algo``, ``overrides`` of the train recipe or
``verl.<key>``, ``manager``: a checkpoint that builds the banks of ``episodes.source=pipeline``).

Every step is a ``memr1`` command run as a child process (the commands ``--dry-run`` prints are the
ones that run): ``memr1 train STAGE ... --out <row>/train`` (a finished training folder is reused, a
stopped one continued with ``--resume``), then ``memr1 eval ... --out <row>/<slice>`` (a finished
folder with the same configuration is skipped; an unfinished one resumes). At the end each slice's
finished rows are compared against the base row (:mod:`memory_r1.eval.compare`).

``memr1 ablate --plan P --publish DIR`` runs nothing: it copies the small files of the finished rows
(summaries, the manifest without secrets, predictions under 1 MB, the compare tables) into a results
folder such as ``docs/results/ablations/<backbone>`` (:func:`publish`), which notebook 02 reads.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)

ROW_KEYS = {"name", "about", "method", "overrides", "judge", "slices", "manager", "answer", "train"}
TRAIN_KEYS = {"stage", "algo", "overrides", "manager"}
PLAN_KEYS = {"backbone", "base", "out", "default_slices", "slices", "rows", "compare", "about"}
SLICE_KEYS = {"split", "conversations", "limit_questions"}
CHECKPOINT_PLACEHOLDER = "checkpoints/global_step_N/actor/huggingface"


class PlanError(ValueError):
    """A plan that cannot run as written (one line: which row, what is wrong)."""


# ------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Slice:
    name: str
    split: str
    conversations: tuple[str, ...] | None = None
    limit_questions: int | None = None


@dataclass(frozen=True)
class TrainSpec:
    stage: str
    algo: str
    overrides: tuple[str, ...] = ()
    manager: str | None = None  # checkpoint ref that builds the episodes' banks


@dataclass(frozen=True)
class Row:
    name: str
    about: str = ""
    method: str = "memory-r1"
    overrides: tuple[str, ...] = ()
    judge: str | None = None
    slices: tuple[str, ...] = ()
    manager: str | None = None  # checkpoint ref
    answer: str | None = None
    train: TrainSpec | None = None


@dataclass
class Plan:
    path: Path
    backbone: str
    base: str
    out: Path
    slices: dict[str, Slice]
    rows: list[Row]
    compare: dict = field(default_factory=dict)

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise PlanError(f"{self.path}: no row {name!r} (rows: {', '.join(r.name for r in self.rows)})")


def _strs(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PlanError(f"{where} must be a list of strings, got {value!r}")
    return tuple(value)


def _unknown(keys, allowed: set[str], where: str) -> None:
    extra = sorted(set(keys) - allowed)
    if extra:
        raise PlanError(f"{where}: unknown keys {extra}; allowed: {', '.join(sorted(allowed))}")


def parse_plan(raw: dict, path: Path) -> Plan:
    """A plan from its YAML mapping (structure only; :func:`check_plan` checks it against the recipes).

    >>> p = parse_plan({"backbone": "b", "base": "x", "slices": {"val": {"split": "val"}},
    ...                 "rows": [{"name": "x"}, {"name": "y", "method": "rag-turns", "slices": ["val"]}]},
    ...                Path("plan.yaml"))
    >>> [(r.name, r.method, r.slices) for r in p.rows], p.out.as_posix()
    ([('x', 'memory-r1', ('val',)), ('y', 'rag-turns', ('val',))], 'runs/ablate/b')
    """
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: a plan is a mapping")
    _unknown(raw, PLAN_KEYS, str(path))
    for key in ("backbone", "base", "slices", "rows"):
        if not raw.get(key):
            raise PlanError(f"{path}: no {key!r}")
    slices = {}
    for name, s in raw["slices"].items():
        if not isinstance(s, dict) or "split" not in s:
            raise PlanError(f"{path}: slice {name!r} needs a split")
        _unknown(s, SLICE_KEYS, f"{path}: slice {name!r}")
        convs = _strs(s.get("conversations"), f"{path}: slice {name!r} conversations") or None
        lim = s.get("limit_questions")
        slices[name] = Slice(name, str(s["split"]), convs, None if lim is None else int(lim))
    default = _strs(raw.get("default_slices"), f"{path}: default_slices") or (next(iter(slices)),)
    rows: list[Row] = []
    for i, r in enumerate(raw["rows"]):
        if not isinstance(r, dict) or not r.get("name"):
            raise PlanError(f"{path}: rows[{i}] has no name")
        where = f"{path}: row {r['name']!r}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(r["name"])):
            raise PlanError(f"{where}: a row name is a folder name (letters, digits, '.', '_', '-')")
        _unknown(r, ROW_KEYS, where)
        train = None
        if r.get("train") is not None:
            t = r["train"]
            if not isinstance(t, dict):
                raise PlanError(f"{where}: train must be a mapping")
            _unknown(t, TRAIN_KEYS, f"{where} train")
            if not t.get("stage") or not t.get("algo"):
                raise PlanError(f"{where}: train needs a stage and an algo")
            train = TrainSpec(str(t["stage"]), str(t["algo"]), _strs(t.get("overrides"), f"{where} train overrides"),
                              None if t.get("manager") is None else str(t["manager"]))
        rows.append(Row(
            name=str(r["name"]), about=str(r.get("about") or ""), method=str(r.get("method") or "memory-r1"),
            overrides=_strs(r.get("overrides"), f"{where} overrides"),
            judge=None if r.get("judge") is None else str(r["judge"]),
            slices=_strs(r.get("slices"), f"{where} slices") or default,
            manager=None if r.get("manager") is None else str(r["manager"]),
            answer=None if r.get("answer") is None else str(r["answer"]),
            train=train,
        ))
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise PlanError(f"{path}: row names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    out = Path(raw.get("out") or Path("runs") / "ablate" / Path(str(raw["backbone"])).name)
    plan = Plan(path, str(raw["backbone"]), str(raw["base"]), out, slices, rows, dict(raw.get("compare") or {}))
    plan.row(plan.base)
    return plan


def load_plan(path: str | Path) -> Plan:
    path = Path(path)
    if not path.is_file():
        raise PlanError(f"no ablation plan at {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise PlanError(f"{path}: invalid YAML: {exc}") from None
    return parse_plan(raw, path)


def check_override_keys(recipe: dict, overrides: tuple[str, ...] | list[str], where: str) -> None:
    """Every ``key=value`` names a key the recipe has (a typo would otherwise add a key nothing reads).

    >>> check_override_keys({"answer_agent": {"top_k": 30}}, ["answer_agent.top_k=5"], "row")
    >>> check_override_keys({"answer_agent": {"top_k": 30}}, ["answer_agent.topk=5"], "row x")
    Traceback (most recent call last):
    ...
    memory_r1.eval.ablate.PlanError: row x: override 'answer_agent.topk=5' names no key of the recipe (answer_agent has: top_k)
    """
    for item in overrides:
        if "=" not in item:
            raise PlanError(f"{where}: override {item!r} is not key=value")
        parts = item.split("=", 1)[0].strip().split(".")
        node: Any = recipe
        for i, p in enumerate(parts):
            if not isinstance(node, dict) or p not in node:
                have = ", ".join(sorted(node)) if isinstance(node, dict) else "a value, not a section"
                at = ".".join(parts[:i]) or "the recipe"
                raise PlanError(f"{where}: override {item!r} names no key of the recipe ({at} has: {have})")
            node = node[p]


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
    and overrides only of the Answer Agent or the judge (it starts from the base's banks)."""
    base = plan.row(plan.base)
    return (row.name != base.name and row.method == base.method and base.manager is None
            and base.train is None and not base.overrides and "--manager" not in checkpoints
            and "--manager" not in fixed and all(o.startswith(ANSWER_SIDE_KEYS) for o in row.overrides))


def build_steps(plan: Plan, rows: list[str] | None = None, slices: list[str] | None = None,
                opts: Options | None = None) -> list[Step]:
    """The commands of the selected rows (default all) on the selected slices (default each row's),
    in plan order: a row's training (and the trainings its checkpoints come from) before its evals."""
    opts = opts or Options()
    chosen = [plan.row(n) for n in rows] if rows else list(plan.rows)
    for s in slices or []:
        if s not in plan.slices:
            raise PlanError(f"{plan.path}: no slice {s!r} (slices: {', '.join(plan.slices)})")
    common = ["--data", str(opts.data)] if opts.data else []
    steps: list[Step] = []
    trained: set[str] = set()

    def train_step(name: str) -> None:
        if name in trained:
            return
        row = plan.row(name)
        t = row.train
        assert t is not None
        folder = _train_folder(plan, name)
        args = ["train", t.stage, "--backbone", plan.backbone, "--algo", t.algo, "--out", str(folder), *common]
        if opts.ray_address:
            args += ["--ray-address", opts.ray_address]
        ck: dict[str, Path] = {}
        src, path = _checkpoint(plan, row, t.manager, "manager")
        if src is not None:
            train_step(src.parent.name)
            ck["--manager"] = src
        elif path:
            args += ["--manager", path]
        trained.add(name)
        steps.append(Step("train", name, None, folder, args, list(t.overrides), ck,
                          {"stage": t.stage, "algo": t.algo, "overrides": list(t.overrides)}))

    for row in chosen:
        want = [s for s in row.slices if not slices or s in slices]
        ck: dict[str, Path] = {}
        fixed: list[str] = []
        for opt, ref, stage in (("--manager", row.manager, "manager"), ("--answer", row.answer, "answer")):
            src, path = _checkpoint(plan, row, ref, stage)
            if src is not None:
                if want:
                    train_step(src.parent.name)
                ck[opt] = src
            elif path:
                fixed += [opt, path]
        if row.train is not None and want:
            train_step(row.name)
        for s in want:
            sl = plan.slices[s]
            folder = plan.out / row.name / s
            args = ["eval", "--backbone", plan.backbone, "--split", sl.split, "--method", row.method,
                    "--out", str(folder), *common, *fixed]
            if sl.conversations:
                args += ["--conversations", ",".join(sl.conversations)]
            limit = opts.limit_questions if opts.limit_questions is not None else sl.limit_questions
            if limit is not None:
                args += ["--limit-questions", str(limit)]
            judge = opts.judge or row.judge
            if judge:
                args += ["--judge", judge]
            ov = [*row.overrides, *opts.overrides]
            if _same_banks_as_base(plan, row, ck, fixed) and s in plan.row(plan.base).slices:
                args += ["--reuse-banks", str(plan.out / plan.base / s)]
            steps.append(Step("eval", row.name, s, folder, args, ov, ck,
                              {"split": sl.split, "conversations": list(sl.conversations or []) or None,
                               "limit_questions": limit, "method": row.method, "judge": judge,
                               "overrides": ov}))
    return steps


# ------------------------------------------------------------------------------ checks


def check_plan(plan: Plan, steps: list[Step] | None = None, *, compose_verl: bool = True,
               data: Path | None = None) -> list[str]:
    """Check every step against the recipes before anything runs; returns lines describing each
    step's resolved configuration (what ``--dry-run`` prints).

    Eval steps: the overrides name keys of the backbone's eval recipe, the method and split exist,
    the slice's conversations are in its split, the judge prompt is known. Train steps: the recipe
    exists and passes its schema check, its overrides name recipe keys, and (``compose_verl``) its
    ``verl.`` keys compose with verl's own config schema."""
    from memory_r1.agents.pipeline import METHODS
    from memory_r1.config import load_recipe, recipe_path
    from memory_r1.data import load_split
    from memory_r1.eval.runner import EvalRequest, resolve_config
    from memory_r1.train.runner import TrainRequest, resolve_recipe

    steps = steps if steps is not None else build_steps(plan)
    eval_recipe = load_recipe(recipe_path(plan.backbone, "eval"))
    split_ids: dict[str, list[str]] = {}
    lines: list[str] = []
    composed: set[tuple] = set()
    for st in steps:
        where = f"{plan.path}: row {st.row!r}"
        if st.kind == "eval":
            c = st.config
            if c["method"] not in METHODS:
                raise PlanError(f"{where}: method {c['method']!r} is not one of {', '.join(METHODS)}")
            check_override_keys(eval_recipe, c["overrides"], where)
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
            except ValueError as exc:
                raise PlanError(f"{where}: {exc}") from None
            a = cfg["answer_agent"]
            j = cfg.get("judge") or {}
            ck = {o: "trained by " + str(f.parent.name) for o, f in st.checkpoints.items()}
            lines.append(
                f"    resolved: method={cfg['method']} split={cfg['split']} "
                f"conversations={','.join(cfg['conversations'] or []) or 'all'} "
                f"limit_questions={cfg['limit_questions']} top_k={a.get('top_k')} distill={a.get('distill')} "
                f"max_sessions={(cfg.get('ingest') or {}).get('max_sessions')} judge={j.get('backend')} "
                f"({j.get('prompt')} prompt) manager={_ck(st, '--manager', ck)} answer={_ck(st, '--answer', ck)}")
        else:
            c = st.config
            try:
                recipe, rpath = resolve_recipe(TrainRequest(stage=c["stage"], backbone=plan.backbone, algo=c["algo"],
                                                            overrides=[o for o in c["overrides"]]))
            except Exception as exc:  # noqa: BLE001 - the recipe's own error, one line
                raise PlanError(f"{where}: train {c['stage']}/{c['algo']}: {exc}") from None
            raw = load_recipe(rpath)
            check_override_keys(raw, [o for o in c["overrides"] if not o.lstrip("+").startswith("verl.")],
                                f"{where} train")
            key = (str(rpath), tuple(c["overrides"]))
            if compose_verl and key not in composed:
                from memory_r1.train.verl.config import compose_recipe

                try:
                    compose_recipe(recipe, check=False)
                except Exception as exc:  # noqa: BLE001 - Hydra's error, one line
                    raise PlanError(f"{where}: train {c['stage']}/{c['algo']}: verl refuses the config: "
                                    f"{' '.join(str(exc).split())[:300]}") from None
                composed.add(key)
            from memory_r1.train.verl.overrides import flatten_verl

            flat = flatten_verl(recipe["verl"])
            eps = recipe.get("episodes") or {}
            lines.append(
                f"    resolved: recipe={rpath} reward={recipe['reward']['name']} episodes.source={eps.get('source')} "
                f"top_k={eps.get('top_k', eps.get('answer_top_k'))} drop_wrong_golds={eps.get('drop_wrong_golds')} "
                f"steps={flat.get('trainer.total_training_steps')} epochs={flat.get('trainer.total_epochs')} "
                f"batch={flat.get('data.train_batch_size')} "
                f"lr={flat.get('actor_rollout_ref.actor.optim.lr')}"
                + (f" manager={st.checkpoints['--manager'].parent.name}'s checkpoint" if "--manager" in st.checkpoints else ""))
            if "--manager" in st.checkpoints and eps.get("source") != "pipeline":
                raise PlanError(f"{where}: train.manager builds banks only with episodes.source=pipeline, "
                                f"the recipe has {eps.get('source')!r}")
    return lines


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
        out.append(f"  {label}: memr1 {shlex.join(st.command(_done_checkpoints(st)))}")
        out.append(res)
    return out


# ------------------------------------------------------------------------------ running


def _trained_checkpoint(folder: Path) -> Path | None:
    from memory_r1.train.runner import _trained

    return _trained(folder)


def _done_checkpoints(step: Step) -> dict[str, str]:
    got = {}
    for opt, folder in step.checkpoints.items():
        ck = _trained_checkpoint(folder)
        if ck is not None:
            got[opt] = str(ck)
    return got


def eval_finished(step: Step, args: list[str], data: Path | None) -> bool:
    """A finished eval folder (``summary.json``) whose configuration is the step's: skip it."""
    from memory_r1.eval.runner import FINGERPRINT_KEYS, fingerprint_value
    from memory_r1.runs import differing_keys

    if not (step.out / "summary.json").exists() or not (step.out / "manifest.json").exists():
        return False
    old = json.loads((step.out / "manifest.json").read_text()).get("config", {})
    return not differing_keys(old, _eval_config(args, data), FINGERPRINT_KEYS, fingerprint_value)


def _eval_config(args: list[str], data: Path | None) -> dict:
    """The resolved eval config a ``memr1 eval`` argument list asks for (as the folder's manifest holds it)."""
    from memory_r1.eval.runner import EvalRequest, resolve_config
    from memory_r1.paths import resolve_locomo_path, sha256_file

    opts, overrides = _parse_eval_args(args)
    req = EvalRequest(backbone=opts["--backbone"], split=opts["--split"], method=opts["--method"],
                      conversations=opts["--conversations"].split(",") if opts.get("--conversations") else None,
                      limit_questions=int(opts["--limit-questions"]) if opts.get("--limit-questions") else None,
                      manager=opts.get("--manager"), answer=opts.get("--answer"), judge=opts.get("--judge"),
                      overrides=overrides)
    cfg = resolve_config(req)
    cfg["data_sha256"] = sha256_file(resolve_locomo_path(data))
    return cfg


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


def run_plan(plan: Plan, steps: list[Step], *, data: Path | None = None,
             runner: Callable[[list[str]], int] = run_memr1,
             on_step: Callable[[int, int, Step, str, list[str]], None] | None = None) -> list[StepResult]:
    """Run the steps in order (resuming what earlier runs left). A failed step stops the plan
    (:class:`PlanError` naming it; running the plan again resumes)."""
    results: list[StepResult] = []
    for i, st in enumerate(steps, 1):
        resolved = {}
        for opt, folder in st.checkpoints.items():
            ck = _trained_checkpoint(folder)
            if ck is None:
                raise PlanError(f"row {st.row!r}: {folder} holds no trained checkpoint for {opt}")
            resolved[opt] = str(ck)
        args = st.command(resolved)
        if st.kind == "train":
            if _trained_checkpoint(st.out) is not None:
                status = "reused"
            else:
                from memory_r1.train.runner import _has_run

                if _has_run(st.out):
                    args = [*args[:2], "--resume", *args[2:]]
                status = "ran"
        else:
            status = "skipped" if eval_finished(st, args, data) else "ran"
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


def plan_paths() -> list[Path]:
    """Every ``recipes/<backbone>/ablations.yaml``."""
    from memory_r1.config import recipes_dir

    return sorted(recipes_dir().glob("*/ablations.yaml"))


# ------------------------------------------------------------------------------ publishing

#: the files of a finished eval folder that are published (banks and state never are)
PUBLISHED_FILES = ("summary.json", "summary.md")
#: predictions.jsonl is published only below this size (per-question scores let readers re-aggregate)
MAX_PUBLISHED_PREDICTIONS = 1_000_000
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
    ``max_predictions_bytes``; ``compare-<slice>/`` gets the compare table of the published rows
    against the base row (computed from their run folders, as ``memr1 ablate`` writes it). Never
    banks, state or checkpoints.

    Every row of the plan is looked at (on ``slices``, default each row's own). A row is published
    when its folder under the plan's ``out`` is finished with the configuration the same
    ``memr1 ablate`` command (``slices``, ``opts``) asks for; a finished folder of another
    configuration (say a smoke run with ``--limit-questions``) is left out, with the reason.
    Returns what ``dest/published.json`` records: per row and slice the files published or the
    reason there are none, and per slice the compare folder or the reason there is none (a compare
    folder published before is then removed, so nothing stale stays)."""
    import hashlib
    import shutil

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
            continue
        if not eval_finished(st, st.command(_done_checkpoints(st)), opts.data):
            entry[st.slice] = (f"left out: {st.out} was finished with another configuration than "
                               f"memr1 ablate --plan {plan.path} asks for (options: {record['options']})")
            continue
        target = dest / st.row / st.slice
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
        entry[st.slice] = {"published": files, "predictions_bytes": size}
        published.setdefault(st.slice, []).append(st.row)
    for s in sorted({st.slice for st in steps}):
        done = published.get(s, [])
        if plan.base not in done:
            record["compare"][s] = f"no published {plan.base} (base) folder on {s}"
        elif len(done) < 2:
            record["compare"][s] = f"only the base row is published on {s}"
        else:
            from memory_r1.eval.compare import CompareError, bootstrap_settings, compare_folders

            others = [n for n in done if n != plan.base]
            try:
                compare_folders(plan.out / plan.base / s, [plan.out / n / s for n in others],
                                names=[plan.base, *others], out=dest / f"compare-{s}",
                                settings=bootstrap_settings((plan.compare or {}).get("bootstrap")),
                                data=opts.data, gold_audit=gold_audit)
                record["compare"][s] = f"compare-{s}"
            except CompareError as exc:
                record["compare"][s] = str(exc)
        if record["compare"][s] != f"compare-{s}":
            shutil.rmtree(dest / f"compare-{s}", ignore_errors=True)
    atomic_write(dest / "published.json", json.dumps(record, indent=2))
    return record
