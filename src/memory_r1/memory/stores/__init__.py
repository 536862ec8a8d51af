"""Vector stores behind the memory bank, one module per store (as mem0 keeps its vector stores):

* `base` - the `VectorStore` protocol the bank uses, `StoredPoint`, the default folder;
* `qdrant` - `QdrantStore` (qdrant-client: local mode on disk, ``":memory:"``, or a server);
* `edge` - `EdgeStore` (qdrant-edge-py, the Rust engine in-process).

`open_store` picks one by backend name. The qdrant libraries load on the first store opened.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from memory_r1.memory.stores.base import (
    MEMORY_LOCATION,
    STORE_DIR_ENV,
    Distance,
    StoredPoint,
    VectorStore,
    default_store_path,
)
from memory_r1.memory.stores.edge import EdgeStore
from memory_r1.memory.stores.qdrant import QdrantStore

Backend = Literal["qdrant", "edge"]


def open_store(
    path: str | os.PathLike | None = None,
    *,
    url: str | None = None,
    backend: Backend = "qdrant",
    **kwargs: Any,
) -> QdrantStore | EdgeStore:
    """A store by backend name: ``qdrant`` (local path / ``:memory:`` / ``url=``) or ``edge``
    (local path / ``:memory:``; no server mode)."""
    if backend == "qdrant":
        return QdrantStore(path, url=url, **kwargs)
    if backend == "edge":
        if url is not None:
            raise ValueError("the edge backend is in-process only: give a path, not a url")
        return EdgeStore(path, **kwargs)
    raise ValueError(f"unknown backend {backend!r} (expected 'qdrant' or 'edge')")


__all__ = [
    "MEMORY_LOCATION",
    "STORE_DIR_ENV",
    "Backend",
    "Distance",
    "EdgeStore",
    "QdrantStore",
    "StoredPoint",
    "VectorStore",
    "default_store_path",
    "open_store",
]
