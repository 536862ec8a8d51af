"""An ablation plan (``recipes/<backbone>/ablations.yaml``): its YAML read into :class:`Plan`, with
every structural mistake refused in one line (:class:`PlanError`); :mod:`memory_r1.eval.ablate` turns
it into commands and runs them.

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
        overrides: [answer_agent.top_k=5]          # eval recipe keys (checked by the recipe schema)
      - name: answer-grpo
        train: {stage: answer, algo: grpo, overrides: [verl.trainer.total_training_steps=12]}
        answer: train                # this row's trained checkpoint; or row:NAME, or a checkpoint path
        slices: [val, test-conv41-42]

A row's keys: ``name``, ``about``, ``method`` (memory-r1 | rag-turns | full-context), ``overrides``
(eval recipe keys), ``judge``, ``slices``, ``manager`` / ``answer`` (checkpoints: ``train``,
``row:NAME`` or a path) and ``train`` (``stage``, ``algo``, ``overrides`` of the train recipe or
``verl.<key>``, ``manager``: a checkpoint that builds the banks of ``episodes.source=pipeline``),
``against``: the row this one changes one thing of (a lever; notebook 02 gives ``row - against``
with its interval, besides ``row - base``), ``reuse_banks`` (default true: a row that changes only
the Answer Agent or the judge starts from the base row's banks; false builds its own, e.g. to
measure what rebuilding the memory alone moves).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROW_KEYS = {"name", "about", "method", "overrides", "judge", "slices", "manager", "answer", "train", "against",
            "reuse_banks"}
TRAIN_KEYS = {"stage", "algo", "overrides", "manager"}
PLAN_KEYS = {"backbone", "base", "out", "default_slices", "slices", "rows", "compare", "about"}
SLICE_KEYS = {"split", "conversations", "limit_questions"}
#: row and slice names become folder names under the plan's out: nothing that climbs out of it
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class PlanError(ValueError):
    """A plan that cannot run as written (one line: which row, what is wrong)."""


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
    against: str | None = None  # the row this one is a one-change variant of (a lever)
    reuse_banks: bool = True  # start from the base row's banks when ingestion is the same


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


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise PlanError(f"{where}: true or false, not {value!r}")
    return value


def _parse_slices(raw: dict, path: Path) -> dict[str, Slice]:
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: slices must be a mapping of names to {{split: ...}}")
    slices = {}
    for name, s in raw.items():
        if not FOLDER_NAME.fullmatch(str(name)):
            raise PlanError(f"{path}: slice {name!r}: a slice name is a folder name (letters, digits, '.', '_', '-')")
        if not isinstance(s, dict) or "split" not in s:
            raise PlanError(f"{path}: slice {name!r} needs a split")
        _unknown(s, SLICE_KEYS, f"{path}: slice {name!r}")
        convs = _strs(s.get("conversations"), f"{path}: slice {name!r} conversations") or None
        lim = s.get("limit_questions")
        slices[name] = Slice(name, str(s["split"]), convs, None if lim is None else int(lim))
    return slices


def _parse_train(t: Any, where: str) -> TrainSpec:
    if not isinstance(t, dict):
        raise PlanError(f"{where}: train must be a mapping")
    _unknown(t, TRAIN_KEYS, f"{where} train")
    if not t.get("stage") or not t.get("algo"):
        raise PlanError(f"{where}: train needs a stage and an algo")
    return TrainSpec(str(t["stage"]), str(t["algo"]), _strs(t.get("overrides"), f"{where} train overrides"),
                     _opt_str(t.get("manager")))


def _parse_row(r: Any, i: int, path: Path, default_slices: tuple[str, ...]) -> Row:
    if not isinstance(r, dict) or not r.get("name"):
        raise PlanError(f"{path}: rows[{i}] has no name")
    where = f"{path}: row {r['name']!r}"
    if not FOLDER_NAME.fullmatch(str(r["name"])):
        raise PlanError(f"{where}: a row name is a folder name (letters, digits, '.', '_', '-')")
    _unknown(r, ROW_KEYS, where)
    return Row(
        name=str(r["name"]), about=str(r.get("about") or ""), method=str(r.get("method") or "memory-r1"),
        overrides=_strs(r.get("overrides"), f"{where} overrides"),
        judge=_opt_str(r.get("judge")),
        slices=_strs(r.get("slices"), f"{where} slices") or default_slices,
        manager=_opt_str(r.get("manager")),
        answer=_opt_str(r.get("answer")),
        train=None if r.get("train") is None else _parse_train(r["train"], where),
        against=_opt_str(r.get("against")),
        reuse_banks=_bool(r.get("reuse_banks", True), f"{where} reuse_banks"),
    )


def parse_plan(raw: dict, path: Path) -> Plan:
    """A plan from its YAML mapping (structure only; :func:`~memory_r1.eval.ablate.check_plan`
    checks it against the recipes).

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
    slices = _parse_slices(raw["slices"], path)
    default = _strs(raw.get("default_slices"), f"{path}: default_slices") or (next(iter(slices)),)
    rows = [_parse_row(r, i, path, default) for i, r in enumerate(raw["rows"])]
    names = [r.name for r in rows]
    if len(set(names)) != len(names):
        raise PlanError(f"{path}: row names repeat: {sorted({n for n in names if names.count(n) > 1})}")
    out = Path(raw.get("out") or Path("runs") / "ablate" / Path(str(raw["backbone"])).name)
    plan = Plan(path, str(raw["backbone"]), str(raw["base"]), out, slices, rows, dict(raw.get("compare") or {}))
    plan.row(plan.base)
    for r in rows:
        unknown = [s for s in r.slices if s not in slices]
        if unknown:
            raise PlanError(f"{path}: row {r.name!r}: no slice {unknown[0]!r} (slices: {', '.join(slices)})")
        if r.against is not None and (r.against == r.name or r.against not in names):
            raise PlanError(f"{path}: row {r.name!r}: against {r.against!r} is not another row of the plan")
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


def plan_paths() -> list[Path]:
    """Every ``recipes/<backbone>/ablations.yaml``."""
    from memory_r1.config import recipes_dir

    return sorted(recipes_dir().glob("*/ablations.yaml"))
