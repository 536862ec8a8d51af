"""Opening banks: :class:`BankFactory` (one `MemoryBank` per namespace over one shared store and
embedder, as a run uses them: two banks per conversation) and :func:`open_bank` (one bank on its own
store handle)."""

from __future__ import annotations

import threading
from typing import Any

from memory_r1.memory.bank import INTENT_ID, META_ID, MemoryBank
from memory_r1.memory.embedders import Embedder
from memory_r1.memory.errors import MemoryStoreError
from memory_r1.memory.naming import collection_name, is_collection_of_kind, validate_namespace
from memory_r1.memory.stores import Backend, VectorStore, open_store


def _default_embedder() -> Embedder:
    from memory_r1.memory.embedders import MiniLMEmbedder

    return MiniLMEmbedder()


class BankFactory:
    """Hands out one `MemoryBank` per namespace, all sharing one store (client) and one embedder.

    >>> f = BankFactory.open(path=":memory:")
    >>> f.bank("conv-26/Caroline") is f["conv-26/Caroline"]
    True
    >>> f.namespaces()
    ['conv-26/Caroline']
    >>> f.close()
    """

    def __init__(self, store: VectorStore, embedder: Embedder | None = None, *, owns_store: bool = False) -> None:
        self.store = store
        self.embedder = embedder if embedder is not None else _default_embedder()
        self._owns_store = owns_store
        self._banks: dict[str, MemoryBank] = {}
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        *,
        path: str | None = None,
        url: str | None = None,
        backend: Backend = "qdrant",
        embedder: Embedder | None = None,
        **store_kwargs: Any,
    ) -> BankFactory:
        """A factory over a new store handle, which it closes on `close()`."""
        return cls(open_store(path, url=url, backend=backend, **store_kwargs), embedder, owns_store=True)

    def bank(self, namespace: str) -> MemoryBank:
        validate_namespace(namespace)
        with self._lock:
            if self._closed:
                raise MemoryStoreError("BankFactory is closed")
            b = self._banks.get(namespace)
            if b is None:
                b = self._banks[namespace] = MemoryBank(self.store, self.embedder, namespace)
            return b

    __getitem__ = bank

    def namespaces(self) -> list[str]:
        """Every namespace with a bank in the store (read from the banks' meta records)."""
        out = []
        for name in self.store.list_collections():
            if is_collection_of_kind(name, "hist"):
                recs = {p.id: p.payload for p in self.store.retrieve(name, [META_ID, INTENT_ID])}
                if recs.get(INTENT_ID, {}).get("op") == "drop":
                    continue  # dropped, but the process died before the end
                if recs.get(META_ID, {}).get("namespace"):
                    out.append(recs[META_ID]["namespace"])
        return sorted(out)

    def drop(self, namespace: str) -> None:
        """Delete a namespace's memories and history from the store (whole, see `MemoryBank.drop`)."""
        validate_namespace(namespace)
        with self._lock:
            b = self._banks.pop(namespace, None)
            if b is None:
                if not self.store.has_collection(collection_name(namespace, "hist")):
                    self.store.drop_collection(collection_name(namespace, "mem"))
                    return
                b = MemoryBank(self.store, self.embedder, namespace)
            b.drop()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for b in self._banks.values():
                b.close()
            self._banks.clear()
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> BankFactory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_bank(
    namespace: str,
    *,
    path: str | None = None,
    url: str | None = None,
    backend: Backend = "qdrant",
    embedder: Embedder | None = None,
    **store_kwargs: Any,
) -> MemoryBank:
    """One bank on its own store handle (closed with the bank). `path` is a folder,
    ``":memory:"``, or None for the default folder; `url` a Qdrant server (qdrant backend only).
    Banks opened on the same local path in one process share the underlying client."""
    store = open_store(path, url=url, backend=backend, **store_kwargs)
    try:
        return MemoryBank(store, embedder if embedder is not None else _default_embedder(), namespace, owns_store=True)
    except BaseException:
        store.close()
        raise
