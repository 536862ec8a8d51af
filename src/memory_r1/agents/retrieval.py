"""The one retrieval of the Memory-R1 agents, shared by evaluation, training rows and rewards.

What the Answer Agent reads (``top_k`` memories per speaker, retrieved by the question) and what the
Memory Manager is shown (the owner's memories related to the new facts) are chosen here and nowhere
else: :class:`~memory_r1.agents.pipeline.Pipeline` (``memr1 eval``), the training rows of
:mod:`memory_r1.train.stages` and the manager reward (:mod:`memory_r1.rewards.manager`) all call
these functions, so a model is trained on the prompts it is evaluated on
(``tests/agents/test_retrieval.py`` checks eval against the rows).

A bank is anything with ``__len__`` and ``search_many(queries, k)`` (a
:class:`~memory_r1.memory.MemoryBank`); an empty bank is not searched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from memory_r1.types import MemoryItem


class SearchableBank(Protocol):
    def __len__(self) -> int: ...

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[MemoryItem]]: ...


def bank_namespace(conversation_id: str, speaker: str) -> str:
    """The namespace of one speaker's bank of a conversation (two banks per conversation).

    >>> bank_namespace("conv-26", "Caroline")
    'conv-26/Caroline'
    """
    return f"{conversation_id}/{speaker}"


def search(bank: SearchableBank, queries: Sequence[str], k: int) -> list[list[MemoryItem]]:
    """``k`` memories per query, best first; one empty list per query when the bank is empty or
    ``k <= 0``, and no list when there is no query.

    >>> class Empty:
    ...     def __len__(self): return 0
    >>> search(Empty(), ["who?", "when?"], 30), search(Empty(), [], 30)
    ([[], []], [])
    """
    if not queries:
        return []
    if k <= 0 or not len(bank):
        return [[] for _ in queries]
    return bank.search_many(list(queries), k)


def per_speaker(
    bank_a: SearchableBank, bank_b: SearchableBank, queries: Sequence[str], k: int
) -> list[tuple[list[MemoryItem], list[MemoryItem]]]:
    """What the Answer Agent reads for each query: ``(memories of speaker a, memories of speaker
    b)``, ``k`` each (the paper's 30 + 30), in query order."""
    return list(zip(search(bank_a, queries, k), search(bank_b, queries, k), strict=True))


def related_memories(bank: SearchableBank, facts: Sequence[str], related_k: int, max_related: int) -> list[MemoryItem]:
    """The owner's memories the Memory Manager is shown with new ``facts``: ``related_k`` per fact
    (facts in order, each fact's hits best first), the first occurrence of a memory kept, at most
    ``max_related`` in all."""
    related: list[MemoryItem] = []
    seen: set[str] = set()
    for hits in search(bank, facts, related_k):
        for m in hits:
            if m.id not in seen and len(related) < max_related:
                seen.add(m.id)
                related.append(m)
    return related
