"""What a training stage is: one policy's rows, reward names and scoring, as one :class:`Stage`.

A stage module (``train/stages/<name>.py``) defines ``STAGE = Stage(...)``; the registry
(:mod:`memory_r1.train.stages`) finds it. Its ``build`` turns an :class:`EpisodeRequest` (the recipe's
``episodes`` section, the splits, the bank source) into train and validation rows of verl's schema
(:mod:`memory_r1.train.verl.rows`), all with the stage's ``data_source``; its ``score`` is what the
reward entry (:func:`memory_r1.train.verl.reward.compute_score`) awaits for a completion of such a
row, with one of the stage's ``rewards`` (names recipes give as ``reward.name``; the first is the
paper's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.splits import Split
    from memory_r1.types import QA, Conversation


class EpisodeError(ValueError):
    """Episodes that cannot be built as asked (unknown source, missing banks, ...)."""


@dataclass
class EpisodeRequest:
    """What a stage's ``build`` gets: the recipe's ``episodes`` section (validated, every default
    filled in), the bank ``source`` it resolves to, the splits, and the run's context."""

    source: str
    episodes: dict
    train_split: Split
    val_split: Split | None
    max_val: int | None
    backbone: str
    out_dir: Path
    manager: str | None = None  # Memory Manager checkpoint that builds the banks (pipeline source)
    banks: str | Path | None = None  # pre-built banks (banks source)
    data: str | Path | None = None
    info: dict = field(default_factory=dict)  # the stage adds what the manifest should record
    exclude_qids: frozenset[str] = frozenset()  # questions left out of the training rows


@dataclass
class Scored:
    """One completion scored: ``score``; ``parsed`` (False: the completion had no recognisable
    output and got the stage's defined score); ``id`` of the row (for the reward log); ``details``:
    more fields for the reward log."""

    score: float
    parsed: bool
    id: str | None = None
    details: dict = field(default_factory=dict)


def _no_kwargs(reward: Mapping) -> dict:
    return {}


def _no_stats(rows: Sequence[dict]) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    """A training stage (see the module docstring)."""

    name: str
    data_source: str  # every row's data_source: what the reward entry dispatches on
    description: str
    rewards: tuple[str, ...]  # reward.name values a recipe of this stage may give; the first is the paper's
    eval_flag: str  # the memr1 eval option that loads a checkpoint of this stage
    build: Callable[[EpisodeRequest], tuple[list[dict], list[dict]]]
    score: Callable[..., Awaitable[Scored]]  # (solution_str, ground_truth, extra_info, *, reward, **reward_kwargs)
    reward_kwargs: Callable[[Mapping], dict] = _no_kwargs  # recipe reward section -> more kwargs for score
    row_stats: Callable[[Sequence[dict]], dict] = _no_stats  # the stage's own counts for the manifest
    sources: tuple[str, ...] = ("observations", "pipeline")  # the episodes.source values it builds from
    takes_banks: bool = False  # accepts pre-built banks (memr1 train --banks)


def questions_of(split: Split, conv: Conversation, exclude_qids: Collection[str] = ()) -> list[QA]:
    """The questions of ``split`` about ``conv``, without ``exclude_qids``."""
    return [q for q in split.questions() if q.conversation_id == conv.conversation_id and q.qid not in exclude_qids]


def plain(obj: Any) -> Any:
    """OmegaConf containers (verl passes reward_kwargs as DictConfig) -> plain dict/list.

    >>> plain({"a": (1, {"b": 2})})
    {'a': [1, {'b': 2}]}
    """
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ in ("ListConfig", "ndarray"):
        return [plain(v) for v in obj]
    return obj
