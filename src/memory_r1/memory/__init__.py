"""Memory layer: embedders, vector stores and the namespaced `MemoryBank` (no LLM code here).

Import-light: torch / sentence-transformers load on the first embedding, qdrant libraries on the
first store opened.

    >>> from memory_r1.memory import open_bank
    >>> bank = open_bank("conv-26/Caroline", path=":memory:")       # doctest: +SKIP
    >>> m = bank.add("Caroline adopted a dog named Rex", timestamp="8 May 2023")  # doctest: +SKIP
    >>> bank.search("pet dog", k=1)[0].id == m.id                   # doctest: +SKIP
    True
"""

from memory_r1.memory.bank import (
    INTENT_ID,
    META_ID,
    SNAPSHOT_FORMAT,
    SNAPSHOT_VERSION,
    MemoryBank,
    utc_now,
)
from memory_r1.memory.embedders import MINILM_DIM, MINILM_NAME, CachingEmbedder, Embedder, MiniLMEmbedder
from memory_r1.memory.errors import EmbeddingError, MemoryBankError, MemoryStoreError, UnknownMemoryError
from memory_r1.memory.factory import BankFactory, open_bank
from memory_r1.memory.naming import collection_name, namespace_key
from memory_r1.memory.stores import EdgeStore, QdrantStore, StoredPoint, VectorStore, default_store_path, open_store

__all__ = [
    "INTENT_ID",
    "META_ID",
    "MINILM_DIM",
    "MINILM_NAME",
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_VERSION",
    "BankFactory",
    "CachingEmbedder",
    "EdgeStore",
    "Embedder",
    "EmbeddingError",
    "MemoryBank",
    "MemoryBankError",
    "MemoryStoreError",
    "MiniLMEmbedder",
    "QdrantStore",
    "StoredPoint",
    "UnknownMemoryError",
    "VectorStore",
    "collection_name",
    "default_store_path",
    "namespace_key",
    "open_bank",
    "open_store",
    "utc_now",
]
