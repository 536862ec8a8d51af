"""The banks a stage's rows are built from, by source (``episodes.source``).

- ``observations``: LoCoMo's own per-session observations (:mod:`memory_r1.data.observations`),
  stamped with the session date. No LLM: the cheap source for CPU recipes.
- ``pipeline``: banks built by a Memory Manager with :class:`~memory_r1.agents.pipeline.Pipeline`
  (an LLM: the untrained backbone by default, or a trained manager checkpoint; the LLM and
  ingestion settings of the backbone's eval recipe).
- ``banks``: banks already built, e.g. the ``banks/`` folder of a ``memr1 eval`` run
  (:class:`~memory_r1.memory.BankFactory` path).

Banks are named as evaluation names them (:func:`memory_r1.agents.retrieval.bank_namespace`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from memory_r1.agents.retrieval import bank_namespace
from memory_r1.train.stages.base import EpisodeError

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.data.observations import Observation
    from memory_r1.llm.base import LLM
    from memory_r1.memory import BankFactory
    from memory_r1.types import Conversation, MemoryItem

log = logging.getLogger(__name__)

SOURCES = ("observations", "pipeline", "banks")
OBSERVATION_ACTOR = "locomo-observation"


def add_observations(bank, observations: Sequence[Observation]) -> list[MemoryItem]:
    """Store observations in a bank (timestamp = session date, the cited turns as metadata)."""
    if not observations:
        return []
    return bank.add_many(
        [o.text for o in observations],
        timestamps=[o.date for o in observations],
        metadatas=[{"dia_ids": list(o.dia_ids), "source": "observation"} for o in observations],
        actor=OBSERVATION_ACTOR,
    )


def observation_banks(
    conversations: Sequence[Conversation], factory: BankFactory, data: str | Path | None = None
) -> dict[str, int]:
    """Fill both speakers' banks of each conversation with its observations (banks cleared first).
    Returns ``{namespace: memories}``."""
    from memory_r1.data.observations import load_observations

    obs = load_observations([c.conversation_id for c in conversations], data)
    sizes = {}
    for conv in conversations:
        for speaker in conv.speakers:
            ns = bank_namespace(conv.conversation_id, speaker)
            bank = factory.bank(ns)
            bank.clear()
            add_observations(bank, [o for o in obs[conv.conversation_id] if o.speaker == speaker])
            sizes[ns] = len(bank)
    return sizes


def pipeline_banks(
    conversations: Sequence[Conversation], factory: BankFactory, llm: LLM, ingest: dict
) -> dict:
    """Build both speakers' banks of each conversation with the Memory-R1 pipeline (extractor +
    Memory Manager of ``llm``; ``ingest`` is an eval recipe's ``ingest`` section). Banks are cleared
    first. Returns the pipeline's ingestion statistics."""
    from memory_r1.agents.pipeline import Pipeline

    for conv in conversations:
        for speaker in conv.speakers:
            factory.bank(bank_namespace(conv.conversation_id, speaker)).clear()
    pipe = Pipeline(llm, factory.bank, {"ingest": ingest, "answer": {}}, method="memory-r1")
    return pipe.ingest(list(conversations)).as_dict()


def check_banks(conversations: Sequence[Conversation], factory: BankFactory) -> dict[str, int]:
    """Pre-built banks: every speaker of every conversation must have one. ``{namespace: size}``."""
    present = set(factory.namespaces())
    need = [bank_namespace(c.conversation_id, s) for c in conversations for s in c.speakers]
    missing = [ns for ns in need if ns not in present]
    if missing:
        raise EpisodeError(
            f"the banks at {factory.store.location} lack {', '.join(missing)} "
            f"(they hold {', '.join(sorted(present)) or 'nothing'})"
        )
    return {ns: len(factory.bank(ns)) for ns in need}


def scratch_factory(embedder=None) -> BankFactory:
    """An in-memory store for bank states built while making rows; the same facts recur in many
    states, so the default MiniLM embedder is wrapped in a text -> vector cache."""
    from memory_r1.memory import BankFactory, CachingEmbedder, MiniLMEmbedder

    return BankFactory.open(path=":memory:", embedder=embedder or CachingEmbedder(MiniLMEmbedder()))


def eval_settings(backbone: str, eval_recipe: str | Path | None = None) -> dict:
    """The ``llm`` and ``ingest`` sections the ``pipeline`` source uses (the backbone's eval recipe,
    or ``episodes.eval_recipe``), validated."""
    from memory_r1.config import load_eval_recipe, recipe_path

    path = eval_recipe or recipe_path(backbone, "eval")
    cfg = load_eval_recipe(path)
    return {"llm": cfg.llm, "ingest": cfg.ingest.model_dump(), "path": str(path)}


def load_manager_llm(backbone: str, manager: str | None, llm_cfg) -> LLM:
    """The LLM of the ``pipeline`` source: a Memory Manager checkpoint (default: the backbone) with
    the eval recipe's ``llm`` settings."""
    from memory_r1.llm import build_llm

    return build_llm(llm_cfg, manager or backbone)


def rebuild_banks(backbone: str, manager: str | None, conversations, folder: str | Path,
                  eval_recipe: str | Path | None = None) -> dict:
    """Build the banks of ``conversations`` in ``folder`` with a Memory Manager checkpoint (the
    backbone's eval recipe gives the LLM and ingestion settings); returns the ingestion statistics.
    ``memr1 train answer --banks folder`` then trains on them."""
    from memory_r1.memory import BankFactory

    ev = eval_settings(backbone, eval_recipe)
    llm = load_manager_llm(backbone, manager, ev["llm"])
    try:
        with BankFactory.open(path=str(folder)) as factory:
            return pipeline_banks(conversations, factory, llm, ev["ingest"])
    finally:
        llm.close()
