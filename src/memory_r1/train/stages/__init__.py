"""Training stages: what each policy sees (its rows) and how it is scored (its rewards).

======== ============================================ ============================================
stage    rows (one module a stage)                    rewards (``reward.name`` in a recipe)
======== ============================================ ============================================
answer   one per question: question + top-k memories  ``answer_em`` (paper) / ``answer_f1`` (CPU)
         per speaker from the banks
         (:mod:`.answer`)
manager  one per evidence turn: bank state before it, a frozen Answer Agent answers the linked
         the turn's facts, related memories           questions from the edited bank:
         (:mod:`.manager`)                            ``manager_em`` (paper) / ``manager_f1`` (CPU)
======== ============================================ ============================================

Each stage is one module of this package holding ``STAGE`` (a :class:`~.base.Stage`: its data
source, reward names, recipe model, row builder and scorer); the registry :data:`STAGES` finds them,
so a third agent is one new module here plus its recipe files
(``recipes/<backbone>/<name>/{grpo,ppo}.yaml``), nothing else. Everything else asks the registry:
the recipe schema of a ``stage`` (:func:`train_recipe`, :func:`recipe_models`), the recipe check
(:func:`memory_r1.train.verl.overrides.check_recipe`), the reward entry verl loads
(:func:`memory_r1.train.verl.reward.compute_score`, by ``data_source``), the runner, and the CLI,
which makes one ``memr1 train <name>`` command per stage (help: its ``description``; ``--banks``
when it builds from pre-built banks).

:func:`build_episodes` turns a recipe's ``episodes:`` section into train and validation rows. The
bank source is the recipe's (``observations``, ``pipeline``, ``banks``: :mod:`.banks`); a Memory
Manager checkpoint (``manager``) builds the banks of the ``pipeline`` source, and ``banks`` (a
folder of pre-built banks, e.g. ``<eval out>/banks``) switches the answer stage to the ``banks``
source. ``episodes.drop_wrong_golds: true`` keeps the train questions whose gold answer the audit
marks wrong (``gold_audit.json``, :mod:`memory_r1.data.audit`) out of the training rows, so out of
the RL reward; the validation rows keep every question (the standard protocol).

>>> list(STAGES), stage_for_source("memr1/manager").name, get_stage("answer").rewards
(['answer', 'manager'], 'manager', ('answer_em', 'answer_f1'))
>>> recipe_models()["manager"].__name__, get_stage("manager").episodes_config({"top_k": 5})["related_k"]
('ManagerRecipe', 3)
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.train.stages.base import EpisodeError, EpisodeRequest, Scored, Stage

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.recipes import TrainRecipe

log = logging.getLogger(__name__)

__all__ = ["STAGES", "EpisodeError", "EpisodeRequest", "EpisodeSet", "Scored", "Stage", "build_episodes",
           "get_stage", "recipe_models", "row_stats", "stage_for_source", "train_recipe", "wrong_gold_qids"]

_SHARED = ("base", "banks")  # modules of this package that are not stages


def _discover() -> dict[str, Stage]:
    found: dict[str, Stage] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in _SHARED:
            continue
        stage = getattr(importlib.import_module(f"{__name__}.{info.name}"), "STAGE", None)
        if isinstance(stage, Stage):
            found[stage.name] = stage
    return found


#: stage name -> :class:`~.base.Stage`, one per module of this package
STAGES: dict[str, Stage] = _discover()


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]


def recipe_models() -> dict[str, type[TrainRecipe]]:
    """Stage name -> the model its training recipes validate against (each stage's ``recipe``)."""
    return {name: stage.recipe for name, stage in STAGES.items()}


def train_recipe(raw: dict, where: str | Path, overrides: Sequence[str] = (),
                 apply: Callable[[dict, list[str]], dict] | None = None) -> TrainRecipe:
    """A training recipe mapping (with ``overrides`` applied by ``apply``, default
    :func:`memory_r1.config.apply_overrides`) validated against the model of its ``stage``
    (:func:`memory_r1.config.validate_recipe`: a refusal is one line naming ``where``, the override
    and the dotted key).

    >>> train_recipe({"stage": "critic"}, "r.yaml")
    Traceback (most recent call last):
    ...
    memory_r1.config.RecipeError: r.yaml: stage must be one of answer, manager, got 'critic'
    """
    from memory_r1.config import RecipeError, apply_overrides, validate_recipe

    merged = (apply or apply_overrides)(raw, list(overrides)) if overrides else raw
    stage = merged.get("stage")
    if stage not in STAGES:
        raise RecipeError(f"{where}: stage must be one of {', '.join(STAGES)}, got {stage!r}")
    return validate_recipe(STAGES[stage].recipe, raw, where, overrides, apply)


def stage_for_source(data_source: str) -> Stage:
    """The stage whose rows carry ``data_source``."""
    for stage in STAGES.values():
        if stage.data_source == data_source:
            return stage
    raise ValueError(f"unknown data_source {data_source!r} (expected "
                     f"{' or '.join(s.data_source for s in STAGES.values())})")


@dataclass
class EpisodeSet:
    train: list[dict]
    val: list[dict]
    info: dict[str, Any] = field(default_factory=dict)


def build_episodes(
    stage: str,
    episodes: dict,
    *,
    backbone: str,
    out_dir: Path,
    manager: str | None = None,
    banks: str | Path | None = None,
    data: str | Path | None = None,
) -> EpisodeSet:
    """Train and validation rows of a stage from a recipe's ``episodes`` section.

    ``out_dir``: where the ``pipeline`` source keeps the banks it builds (``out_dir/banks``).
    ``manager``: Memory Manager checkpoint for the ``pipeline`` source (default: the backbone).
    ``banks``: pre-built banks (answer stage; sets the source to ``banks``)."""
    from memory_r1.data import load_split

    st = get_stage(stage)
    episodes = st.episodes_config(episodes)  # validated, every default filled in
    source = "banks" if banks is not None else episodes["source"]
    if manager is not None and source != "pipeline":
        raise EpisodeError(
            f"--manager builds banks with the Memory Manager, but the episodes' source is {source!r}; "
            "set episodes.source=pipeline"
        )
    if source not in st.sources:
        raise EpisodeError(f"the {stage} stage builds rows from {' or '.join(st.sources)}, not {source!r}")
    train_split = load_split(episodes["train_split"], data)
    val_name = episodes["val_split"]
    val_split = load_split(val_name, data) if val_name else None
    t0 = time.perf_counter()
    info: dict[str, Any] = {"stage": stage, "source": source, "manager": manager,
                            "train_split": train_split.name, "val_split": val_name}
    drop = wrong_gold_qids(train_split, data) if episodes["drop_wrong_golds"] else []
    info["dropped_wrong_golds"] = drop
    req = EpisodeRequest(source=source, episodes=episodes, train_split=train_split, val_split=val_split,
                         max_val=episodes["max_val_rows"], backbone=backbone, out_dir=Path(out_dir),
                         manager=manager, banks=banks, data=data, info=info, exclude_qids=frozenset(drop))
    train, val = st.build(req)
    info["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("%s episodes: %d train, %d val (%s, %.1f s)", stage, len(train), len(val), source, info["seconds"])
    return EpisodeSet(train, val, info)


def wrong_gold_qids(split, data: str | Path | None = None) -> list[str]:
    """The questions of ``split`` whose gold answer the audit marks wrong (train: 15 of 152). An
    audit that cannot be found is an error here: the recipe asked for these questions to be dropped."""
    from memory_r1.data.audit import find_gold_audit

    audit = find_gold_audit(data=data)
    if audit is None:
        raise EpisodeError("episodes.drop_wrong_golds=true, but no gold_audit.json was found (beside the "
                           "LoCoMo file, in the shared folder or the user cache; or set $MEMR1_GOLD_AUDIT)")
    drop = audit.wrong_among(q.qid for q in split.questions())
    log.info("leaving %d questions with audited-wrong gold answers out of the %s rows (%s)",
             len(drop), split.name, audit.path)
    return drop


def row_stats(rows: Sequence[dict]) -> dict:
    """Counts for a manifest: rows, data sources, bank sources, and each stage's own counts
    (:attr:`~.base.Stage.row_stats`) over its rows."""
    from memory_r1.train.verl.rows import common_stats

    out = common_stats(rows)
    for ds in out.get("data_sources", []):
        out.update(stage_for_source(ds).row_stats([r for r in rows if r["data_source"] == ds]))
    return out
