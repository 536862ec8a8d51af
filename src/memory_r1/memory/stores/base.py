"""What every vector store shares: the `VectorStore` protocol the bank uses, `StoredPoint`, the
default on-disk folder, and small helpers (vector checks, the per-path shared handle).

Collections are plain names (see `memory_r1.memory.naming.collection_name`); ids are UUID strings;
payloads are JSON-able dicts; vectors float32. Every backend failure the caller can act on is
raised as `MemoryStoreError` naming the URL or path.

What survives a killed process, per store (the bank builds whole operations on it, see
`MemoryBank`): `durable` says whether anything does (False for ``":memory:"``), `atomic_points`
how many points one `upsert` or `delete` call writes all-or-nothing.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

Distance = Literal["cosine", "dot"]
MEMORY_LOCATION = ":memory:"
#: Env var for the default on-disk store folder (else <memr1 cache>/memory/<backend>).
STORE_DIR_ENV = "MEMR1_MEMORY_DIR"


@dataclass
class StoredPoint:
    """One point as a store returns it; `score` is set by search, `vector` when asked for."""

    id: str
    payload: dict = field(default_factory=dict)
    vector: np.ndarray | None = None
    score: float | None = None


@runtime_checkable
class VectorStore(Protocol):
    """What the bank needs from a vector store. Collections must exist before use (create is
    idempotent); missing ids are skipped by retrieve and ignored by delete."""

    location: str
    #: whether writes outlive the process (False for ":memory:")
    durable: bool
    #: how many points one upsert or delete call writes all-or-nothing if the process is killed
    atomic_points: int

    def create_collection(self, name: str, dim: int, *, distance: Distance = "cosine") -> bool:
        """Create if absent; True when created now."""
        ...

    def drop_collection(self, name: str) -> None: ...

    def has_collection(self, name: str) -> bool: ...

    def list_collections(self) -> list[str]: ...

    def upsert(
        self, name: str, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict]
    ) -> None: ...

    def delete(self, name: str, ids: Sequence[str]) -> None: ...

    def retrieve(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = False
    ) -> list[StoredPoint]:
        """Found points, in the order of `ids`."""
        ...

    def search(self, name: str, vector: np.ndarray, k: int) -> list[StoredPoint]:
        """Top-k by similarity, best first, payloads included."""
        ...

    def search_batch(self, name: str, vectors: np.ndarray, k: int) -> list[list[StoredPoint]]: ...

    def scroll(
        self, name: str, *, with_vectors: bool = False, batch_size: int = 1024
    ) -> Iterator[StoredPoint]: ...

    def count(self, name: str) -> int: ...

    def close(self) -> None: ...


def default_store_path(backend: str = "qdrant") -> Path:
    """$MEMR1_MEMORY_DIR/<backend>, else <memr1 cache dir>/memory/<backend>."""
    if os.environ.get(STORE_DIR_ENV):
        return Path(os.environ[STORE_DIR_ENV]).expanduser() / backend
    from memory_r1.paths import cache_dir

    return cache_dir() / "memory" / backend


def as_matrix(vectors: Any, n: int | None = None) -> np.ndarray:
    """``vectors`` as a float32 matrix (one vector becomes one row); ValueError unless 2-D with ``n``
    rows (when given)."""
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"expected {n if n is not None else 'N'} vectors, got array of shape {arr.shape}")
    return arr


def check_upsert(ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> np.ndarray:
    """The vectors of an upsert as a matrix, after checking there is one vector and payload per id."""
    if len(payloads) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
    return as_matrix(vectors, len(ids))


class SharedHandle:
    """A backend handle shared by every store object opened on the same path in this process."""

    def __init__(self, key: str, handle: Any) -> None:
        self.key = key
        self.handle = handle
        self.refs = 0
        self.lock = threading.RLock()
        self.folder_lock: Any = None  # the open lock file of an on-disk EdgeStore


def point_vector(v: Any) -> np.ndarray | None:
    """A point's vector as a backend returns it (a list, or ``{name: list}`` for named vectors) as
    float32, None when absent."""
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("", next(iter(v.values()), None))
    return None if v is None else np.asarray(v, dtype=np.float32)
