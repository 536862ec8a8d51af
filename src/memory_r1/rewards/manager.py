"""The Memory Manager's outcome reward: apply its operations, let a frozen Answer Agent answer.

For one completion of a Memory Manager episode (a row of
:func:`memory_r1.train.stages.manager.manager_rows`):

1. parse the operations with the row's ``id_map`` (ids the prompt showed; an invented id is
   rejected and counted, never applied to another memory);
2. restore the row's bank snapshots (both speakers) into fresh namespaces of an in-memory store and
   apply the operations to the owner's bank (ADDs stamped with the turn's session date);
3. a frozen Answer Agent answers each linked question from the edited banks (``top_k`` memories per
   speaker retrieved by the question);
4. reward = exact match of its answers with the gold answers, averaged over the linked questions
   (``metric="f1"``: token-set F1 instead, for CPU recipes, named so).

A completion with no recognisable operation scores :data:`UNPARSED_SCORE` (0.0), with
``parsed=False`` in the result so the caller counts it. Errors other than a bad completion (a bad
row, a failing answerer) are raised, never turned into a score.

The frozen Answer Agent is any object with ``answer(question, memories_a, memories_b, *,
speakers) -> str`` (sync or async) returning the answer text; :class:`LLMAnswerer` is the real one
over an LLM backend (micro-batches concurrent requests into one ``generate`` call).

>>> decode_id_map('{"0": "uuid-a", "1": "uuid-b"}')
{0: 'uuid-a', 1: 'uuid-b'}
>>> score_answers(["Rex", "in Paris"], ["rex", "Paris"], metric="em")
[1.0, 0.0]
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from memory_r1.types import MemoryItem

log = logging.getLogger(__name__)

UNPARSED_SCORE = 0.0
METRICS = ("em", "f1")


class Answerer(Protocol):
    """A frozen Answer Agent: the answer text for a question given both speakers' memories."""

    def answer(
        self, question: str, memories_a: list[MemoryItem], memories_b: list[MemoryItem], *, speakers: tuple[str, str]
    ) -> Any:  # str, or an awaitable of str
        ...


@dataclass
class ManagerRewardResult:
    score: float
    parsed: bool
    ops: dict = field(default_factory=dict)  # ApplyStats as a dict
    invalid_ids: int = 0
    malformed: int = 0
    per_question: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def decode_id_map(raw: str | Mapping | None) -> dict[int, str]:
    """A row's ``id_map`` (JSON ``{"0": id}`` or a mapping) as ``{int: id}``."""
    if raw is None or raw == "":
        return {}
    data = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return {int(k): str(v) for k, v in data.items()}


def score_answers(answers: Sequence[str], golds: Sequence[str], metric: str = "em") -> list[float]:
    """Per-question scores of predicted answers against gold answers (``em`` or ``f1``)."""
    from memory_r1.metrics import exact_match, f1_score

    if metric not in METRICS:
        raise ValueError(f"unknown manager reward metric {metric!r}; choose from {', '.join(METRICS)}")
    fn = exact_match if metric == "em" else f1_score
    return [float(fn(a, g)) for a, g in zip(answers, golds, strict=True)]


_default_factory = None
_default_lock = threading.Lock()


def default_factory():
    """One in-memory store per process for the reward's scratch banks (each call uses fresh
    namespaces and drops them), with the MiniLM embedder behind a text -> vector cache (the same
    snapshot is restored for every sampled completion of a prompt)."""
    global _default_factory
    with _default_lock:
        if _default_factory is None:
            from memory_r1.memory import BankFactory, CachingEmbedder, MiniLMEmbedder

            _default_factory = BankFactory.open(path=":memory:", embedder=CachingEmbedder(MiniLMEmbedder()))
        return _default_factory


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def manager_reward(
    completion: str,
    extra_info: Mapping,
    answerer: Answerer,
    *,
    factory=None,
    metric: str = "em",
    top_k: int | None = None,
) -> ManagerRewardResult:
    """Score one Memory Manager completion (see the module docstring).

    ``extra_info``: the row's (``id_map``, ``banks``, ``owner``, ``speakers``, ``timestamp``,
    ``questions``, ``top_k``). ``factory``: a :class:`~memory_r1.memory.BankFactory` for the
    scratch banks (default: :func:`default_factory`). ``top_k``: memories per speaker for the
    answerer (default: the row's)."""
    from memory_r1.agents.manager import apply_operations, parse_operations
    from memory_r1.agents.retrieval import per_speaker

    if metric not in METRICS:
        raise ValueError(f"unknown manager reward metric {metric!r}; choose from {', '.join(METRICS)}")
    parsed = parse_operations(completion, decode_id_map(extra_info.get("id_map")))
    if not parsed.parsed:
        log.debug("unparseable Memory Manager completion: %r", completion[:200])
        return ManagerRewardResult(UNPARSED_SCORE, False, invalid_ids=len(parsed.invalid_ids),
                                   malformed=parsed.malformed)
    questions = list(extra_info.get("questions") or [])
    if not questions:
        raise ValueError(f"row {extra_info.get('dia_id')!r} links no question")
    speakers = tuple(extra_info["speakers"])
    owner = extra_info["owner"]
    if owner not in speakers:
        raise ValueError(f"owner {owner!r} is not one of the speakers {speakers}")
    raw_banks = extra_info["banks"]
    snaps = json.loads(raw_banks) if isinstance(raw_banks, str) else raw_banks
    k = int(top_k if top_k is not None else extra_info["top_k"])  # every manager row carries it (episodes.top_k)
    factory = factory or default_factory()
    tag = f"reward/{uuid.uuid4().hex}"
    names = {sp: f"{tag}/{sp}" for sp in speakers}
    try:
        banks = {}
        for sp in speakers:
            bank = factory.bank(names[sp])
            bank.restore(snaps[sp])
            banks[sp] = bank
        stats = apply_operations(banks[owner], parsed.ops, timestamp=str(extra_info.get("timestamp", "")))
        texts = [str(q["question"]) for q in questions]
        a, b = speakers
        hits = per_speaker(banks[a], banks[b], texts, k)
    finally:
        for name in names.values():
            factory.drop(name)
    answers = await asyncio.gather(
        *[_maybe_await(answerer.answer(t, ma, mb, speakers=(a, b))) for t, (ma, mb) in zip(texts, hits)]
    )
    answers = [str(x) for x in answers]
    per_q = score_answers(answers, [str(q["answer"]) for q in questions], metric)
    return ManagerRewardResult(
        score=sum(per_q) / len(per_q),
        parsed=True,
        ops=asdict(stats),
        invalid_ids=len(parsed.invalid_ids),
        malformed=parsed.malformed,
        per_question=per_q,
        answers=answers,
    )


class LLMAnswerer:
    """The frozen Answer Agent over an LLM backend (:class:`memory_r1.llm.LLM`).

    ``answer`` is async: concurrent requests (verl scores every sample of a batch concurrently) are
    gathered for ``wait_s`` seconds or up to ``max_batch`` requests
    (:class:`memory_r1.llm.batcher.AsyncBatcher`) and sent as one ``generate`` call in a worker
    thread; the result is the text after ``Answer:`` (the last line when the model wrote no marker).
    ``answer_sync`` answers one question directly."""

    def __init__(self, llm, *, params=None, distill: bool = False, max_batch: int = 32, wait_s: float = 0.05):
        from memory_r1.llm.base import SamplingParams
        from memory_r1.llm.batcher import AsyncBatcher

        self.llm = llm
        self.params = params or SamplingParams(temperature=0.0, max_new_tokens=48)
        self.distill = distill
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._batcher = AsyncBatcher(self._generate, max_batch=max_batch, idle_s=wait_s, max_wait_s=wait_s,
                                     name="frozen Answer Agent batch")
        self._lock = threading.Lock()  # one generate at a time (the backend is not re-entrant)
        self.calls = 0
        self.batches = 0

    def _messages(self, question, memories_a, memories_b, speakers) -> list[dict]:
        from memory_r1.agents.answerer import build_answer_messages

        a, b = speakers
        return build_answer_messages(question, a, memories_a, b, memories_b, distill=self.distill)

    def _generate(self, prompts: list[list[dict]]) -> list[str]:
        from memory_r1.agents.answerer import parse_answer

        with self._lock:
            gens = self.llm.generate(prompts, self.params)
        self.batches += 1
        self.calls += len(prompts)
        return [parse_answer(g.text).answer for g in gens]

    def answer_sync(self, question, memories_a, memories_b, *, speakers=("A", "B")) -> str:
        return self._generate([self._messages(question, memories_a, memories_b, speakers)])[0]

    async def answer(self, question, memories_a, memories_b, *, speakers=("A", "B")) -> str:
        return await self._batcher.submit(self._messages(question, memories_a, memories_b, speakers))
