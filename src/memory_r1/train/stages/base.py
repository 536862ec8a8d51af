"""What a training stage is: one policy's rows, reward names and scoring, as one :class:`Stage`.

A stage module (``train/stages/<name>.py``) defines ``STAGE = Stage(...)``; the registry
(:mod:`memory_r1.train.stages`) finds it. Its ``recipe`` is the typed model of its training recipes
(a :class:`~memory_r1.recipes.TrainRecipe` with ``stage: Literal["<name>"]`` and its own ``episodes``
and ``reward`` sections): every recipe whose ``stage`` is the stage's name validates against it. Its
``build`` turns an :class:`EpisodeRequest` (the recipe's ``episodes`` section, the splits, the bank
source) into train and validation rows of verl's schema (:mod:`memory_r1.train.verl.rows`), all with
the stage's ``data_source``; its ``score`` is what the reward entry
(:func:`memory_r1.train.verl.reward.compute_score`) awaits for a completion of such a row, with one of
the stage's ``rewards`` (names recipes give as ``reward.name``; the first is the paper's). Its
``description`` is the help line of its ``memr1 train <name>`` command, which the CLI makes from the
registry (with ``--banks`` when ``"banks"`` is one of its ``sources``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from memory_r1.recipes import TrainRecipe

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


#: the ``episodes`` keys :func:`memory_r1.train.stages.build_episodes` reads, whatever the stage
EPISODES_KEYS = frozenset({"source", "train_split", "val_split", "max_val_rows", "drop_wrong_golds"})


def _no_kwargs(reward: Mapping) -> dict:
    return {}


def _no_stats(rows: Sequence[dict]) -> dict:
    return {}


@dataclass(frozen=True)
class Stage:
    """A training stage (see the module docstring). The ``recipe`` model is checked when the stage is
    made: a :class:`~memory_r1.recipes.TrainRecipe` with ``stage: Literal["<name>"] = "<name>"``, a
    ``reward`` section and an ``episodes`` section holding :data:`EPISODES_KEYS`."""

    name: str
    data_source: str  # every row's data_source: what the reward entry dispatches on
    description: str  # one line: the help of `memr1 train <name>`
    rewards: tuple[str, ...]  # reward.name values a recipe of this stage may give; the first is the paper's
    eval_flag: str  # the memr1 eval option that loads a checkpoint of this stage
    recipe: type[TrainRecipe]  # the model its recipes validate against (recipes/<backbone>/<name>/<algo>.yaml)
    build: Callable[[EpisodeRequest], tuple[list[dict], list[dict]]]
    score: Callable[..., Awaitable[Scored]]  # (solution_str, ground_truth, extra_info, *, reward, **reward_kwargs)
    reward_kwargs: Callable[[Mapping], dict] = _no_kwargs  # recipe reward section -> more kwargs for score
    row_stats: Callable[[Sequence[dict]], dict] = _no_stats  # the stage's own counts for the manifest
    sources: tuple[str, ...] = ("observations", "pipeline")  # the episodes.source values it builds from

    def __post_init__(self) -> None:
        if not (isinstance(self.recipe, type) and issubclass(self.recipe, TrainRecipe)):
            raise TypeError(f"stage {self.name}: recipe must be a TrainRecipe subclass, got {self.recipe!r}")
        fields = self.recipe.model_fields
        missing = [k for k in ("stage", "episodes", "reward") if k not in fields]
        if missing:
            raise TypeError(f"stage {self.name}: {self.recipe.__name__} has no {', '.join(missing)} field")
        episodes = fields["episodes"].annotation
        lacking = sorted(EPISODES_KEYS - set(getattr(episodes, "model_fields", {})))
        if lacking:
            raise TypeError(f"stage {self.name}: {self.recipe.__name__}.episodes has no {', '.join(lacking)} "
                            "(extend memory_r1.recipes.Episodes and add source)")
        stage = fields["stage"]
        if get_origin(stage.annotation) is not Literal or get_args(stage.annotation) != (self.name,) \
                or stage.default != self.name:
            raise TypeError(f"stage {self.name}: {self.recipe.__name__} needs "
                            f"stage: Literal[{self.name!r}] = {self.name!r}")

    @property
    def takes_banks(self) -> bool:
        """Whether it builds rows from pre-built banks (``memr1 train <name> --banks DIR``)."""
        return "banks" in self.sources

    def episodes_config(self, episodes: Mapping) -> dict:
        """A recipe's ``episodes`` section for this stage, validated, with every default filled in."""
        return self.recipe.model_fields["episodes"].annotation.model_validate(dict(episodes)).model_dump()


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
