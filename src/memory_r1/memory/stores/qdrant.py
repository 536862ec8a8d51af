"""`QdrantStore` - qdrant-client: local mode on disk (a path; the default), ``":memory:"``, or a
Qdrant server (``url=...``), with the same code. Local mode locks its folder, so one client is kept
per storage path per process (a refcounted registry: opening a path twice shares the client; the
last `close()` releases it); it is single-process (a second process gets one `MemoryStoreError`).

Durability: local mode commits each point to sqlite on its own (``atomic_points`` 1); a server
applies each request whole (one chunk). qdrant-client is imported lazily.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from memory_r1.memory.errors import MemoryStoreError
from memory_r1.memory.stores.base import (
    MEMORY_LOCATION,
    Distance,
    SharedHandle,
    StoredPoint,
    as_matrix,
    check_upsert,
    default_store_path,
    point_vector,
)

log = logging.getLogger(__name__)

_QDRANT_CLIENTS: dict[str, SharedHandle] = {}
_QDRANT_LOCK = threading.Lock()
_SERVER_CHUNK = 256
_LOCAL_CHUNK = 4096


def _remote_errors() -> tuple[type[BaseException], ...]:
    from qdrant_client.http.exceptions import ApiException

    errs: list[type[BaseException]] = [ApiException, ConnectionError, TimeoutError]
    try:
        import httpx

        errs.append(httpx.HTTPError)
    except ImportError:  # pragma: no cover
        pass
    try:
        import grpc

        errs.append(grpc.RpcError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errs)


def _check_server_version(client: Any, url: str) -> None:
    """Warn (log) when client and server major.minor versions are more than one minor apart."""
    try:
        from importlib.metadata import version

        server = str(client.info().version)
        mine = version("qdrant-client")
        s_major, s_minor = (int(x) for x in server.split(".")[:2])
        c_major, c_minor = (int(x) for x in mine.split(".")[:2])
    except Exception:  # version info is best effort
        log.debug("could not compare qdrant-client and server versions at %s", url)
        return
    if s_major != c_major or abs(s_minor - c_minor) > 1:
        log.warning("qdrant-client %s may be incompatible with the Qdrant server %s at %s", mine, server, url)
    else:
        log.info("Qdrant server %s at %s", server, url)


class QdrantStore:
    """qdrant-client store: ``QdrantStore(path)`` local on disk, ``QdrantStore(":memory:")``,
    or ``QdrantStore(url="http://host:6333")``.

    Local mode is a pure-Python engine (numpy brute force, sqlite persistence with one commit per
    point); use it for correctness and small banks, a server or `EdgeStore` for speed.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        *,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        prefer_grpc: bool = False,
    ) -> None:
        from qdrant_client import QdrantClient

        self._closed = False
        self._shared: SharedHandle | None = None
        self.url = url
        self.path: Path | None = None
        if url is not None:
            if path is not None:
                raise ValueError("give either path or url, not both")
            self.location = url
            self.mode = "server"
            self.durable, self.atomic_points = True, _SERVER_CHUNK  # one request is one WAL operation
            self._errors = _remote_errors()
            try:
                # the client's own version check runs in a thread and only warns; probe here instead
                client = QdrantClient(
                    url=url,
                    api_key=api_key,
                    timeout=int(max(1, timeout)),
                    prefer_grpc=prefer_grpc,
                    check_compatibility=False,
                )
                client.get_collections()  # the client is lazy: fail here, not in the first op
            except Exception as exc:
                raise MemoryStoreError(f"cannot reach Qdrant server at {url}: {exc}") from exc
            _check_server_version(client, url)
            self._client = client
            self._lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        elif str(path) == MEMORY_LOCATION:
            self.location = MEMORY_LOCATION
            self.mode = "memory"
            self.durable, self.atomic_points = False, _LOCAL_CHUNK
            self._errors = ()
            self._client = QdrantClient(location=MEMORY_LOCATION)
            self._lock = threading.RLock()
        else:
            root = Path(path) if path is not None else default_store_path("qdrant")
            root = root.expanduser().resolve()
            self.path = root
            self.location = str(root)
            self.mode = "local"
            self.durable, self.atomic_points = True, 1  # sqlite commits each point on its own
            self._errors = ()
            with _QDRANT_LOCK:
                shared = _QDRANT_CLIENTS.get(str(root))
                if shared is None:
                    root.mkdir(parents=True, exist_ok=True)
                    try:
                        client = QdrantClient(path=str(root))
                    except RuntimeError as exc:
                        if "already accessed" in str(exc):
                            raise MemoryStoreError(
                                f"Qdrant local storage at {root} is in use by another process "
                                "(local mode locks its folder; use a Qdrant server to share it)"
                            ) from exc
                        raise MemoryStoreError(f"cannot open Qdrant local storage at {root}: {exc}") from exc
                    shared = _QDRANT_CLIENTS[str(root)] = SharedHandle(str(root), client)
                shared.refs += 1
            self._shared = shared
            self._client = shared.handle
            self._lock = shared.lock
        log.debug("opened QdrantStore (%s) at %s", self.mode, self.location)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The underlying QdrantClient (shared by every store on the same local path)."""
        self._check_open()
        return self._client

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryStoreError(f"QdrantStore at {self.location} is closed")

    @contextlib.contextmanager
    def _op(self, what: str) -> Iterator[Any]:
        self._check_open()
        with self._lock:
            try:
                yield self._client
            except MemoryStoreError:
                raise
            except self._errors as exc:  # remote failures only; () in local mode
                raise MemoryStoreError(f"Qdrant {what} at {self.location} failed: {exc}") from exc

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.mode == "local":
            with _QDRANT_LOCK:
                shared = self._shared
                assert shared is not None
                shared.refs -= 1
                if shared.refs == 0:
                    _QDRANT_CLIENTS.pop(shared.key, None)
                    with shared.lock:
                        shared.handle.close()
                    log.debug("closed Qdrant local client at %s", shared.key)
        else:
            self._client.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"QdrantStore({self.mode}: {self.location!r}{', closed' if self._closed else ''})"

    # -- collections ---------------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, *, distance: Distance = "cosine") -> bool:
        from qdrant_client import models

        dist = {"cosine": models.Distance.COSINE, "dot": models.Distance.DOT}[distance]
        with self._op("create_collection") as c:
            if c.collection_exists(name):
                return False
            c.create_collection(name, vectors_config=models.VectorParams(size=int(dim), distance=dist))
            return True

    def drop_collection(self, name: str) -> None:
        with self._op("drop_collection") as c:
            if c.collection_exists(name):
                c.delete_collection(name)

    def has_collection(self, name: str) -> bool:
        with self._op("collection_exists") as c:
            return bool(c.collection_exists(name))

    def list_collections(self) -> list[str]:
        with self._op("get_collections") as c:
            return sorted(col.name for col in c.get_collections().collections)

    # -- points --------------------------------------------------------------------------------
    def upsert(self, name: str, ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> None:
        from qdrant_client import models

        mat = check_upsert(ids, vectors, payloads)
        chunk = _SERVER_CHUNK if self.mode == "server" else _LOCAL_CHUNK  # server requests well under 32 MB
        with self._op("upsert") as c:
            for s in range(0, len(ids), chunk):
                c.upsert(
                    name,
                    points=models.Batch(
                        ids=[str(i) for i in ids[s : s + chunk]],
                        vectors=mat[s : s + chunk].tolist(),
                        payloads=list(payloads[s : s + chunk]),
                    ),
                    wait=True,
                )

    def delete(self, name: str, ids: Sequence[str]) -> None:
        from qdrant_client import models

        if not ids:
            return
        with self._op("delete") as c:
            c.delete(name, points_selector=models.PointIdsList(points=[str(i) for i in ids]), wait=True)

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        with self._op("retrieve") as c:
            recs = c.retrieve(name, ids=[str(i) for i in ids], with_payload=True, with_vectors=with_vectors)
        by_id = {
            str(r.id): StoredPoint(str(r.id), dict(r.payload or {}), point_vector(r.vector) if with_vectors else None)
            for r in recs
        }
        return [by_id[str(i)] for i in ids if str(i) in by_id]

    def search(self, name: str, vector: Any, k: int) -> list[StoredPoint]:
        if k <= 0:
            return []
        q = as_matrix(vector, 1)[0]
        with self._op("query_points") as c:
            res = c.query_points(name, query=q.tolist(), limit=int(k), with_payload=True, with_vectors=False)
        return [StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in res.points]

    def search_batch(self, name: str, vectors: Any, k: int) -> list[list[StoredPoint]]:
        from qdrant_client import models

        mat = as_matrix(vectors)
        if k <= 0 or len(mat) == 0:
            return [[] for _ in range(len(mat))]
        reqs = [models.QueryRequest(query=v.tolist(), limit=int(k), with_payload=True) for v in mat]
        with self._op("query_batch_points") as c:
            res = c.query_batch_points(name, requests=reqs)
        return [
            [StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in r.points]
            for r in res
        ]

    def scroll(self, name: str, *, with_vectors: bool = False, batch_size: int = 1024) -> Iterator[StoredPoint]:
        offset = None
        while True:
            with self._op("scroll") as c:
                recs, offset = c.scroll(
                    name, limit=batch_size, offset=offset, with_payload=True, with_vectors=with_vectors
                )
            for r in recs:
                yield StoredPoint(str(r.id), dict(r.payload or {}), point_vector(r.vector) if with_vectors else None)
            if offset is None:
                return

    def count(self, name: str) -> int:
        with self._op("count") as c:
            return int(c.count(name, exact=True).count)


def _close_all_at_exit() -> None:
    """Release local clients still open at interpreter exit (avoids qdrant-client's __del__ failing
    during shutdown)."""
    with _QDRANT_LOCK:
        clients = list(_QDRANT_CLIENTS.values())
        _QDRANT_CLIENTS.clear()
    for shared in clients:
        try:
            shared.handle.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass


atexit.register(_close_all_at_exit)
