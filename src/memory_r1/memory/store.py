"""Vector stores behind the memory bank: a small protocol and two implementations.

* `QdrantStore` - qdrant-client: local mode on disk (a path; the default), ``":memory:"``, or a
  Qdrant server (``url=...``), with the same code. Local mode locks its folder, so one client is
  kept per storage path per process (a refcounted registry: opening a path twice shares the
  client; the last `close()` releases it).
* `EdgeStore` - qdrant-edge-py, the Rust Qdrant engine in-process. One shard (a directory) per
  collection under a root folder; the same one-handle-per-path registry.

Collections are plain names (see `naming.collection_name`); ids are UUID strings; payloads are
JSON-able dicts; vectors float32. Every backend failure the caller can act on is raised as
`MemoryStoreError` naming the URL or path. The qdrant libraries are imported lazily.

What survives a killed process, per store (the bank builds whole operations on it, see
`MemoryBank`): `durable` says whether anything does (False for ``":memory:"``), `atomic_points`
how many points one `upsert` or `delete` call writes all-or-nothing. qdrant-client local mode
commits each point to sqlite on its own (1); a server applies each request whole (one chunk);
qdrant-edge writes each chunk as one WAL record.

Both on-disk stores are single-process: local mode locks its folder (qdrant-client), and
`EdgeStore` takes an exclusive lock on ``<folder>/.memr1-edge.lock`` for as long as it is open, so a
second process opening the same folder gets one `MemoryStoreError` instead of racing the first one
(creating the same collection twice, each taking the other's half-made shard for leftovers).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from memory_r1.memory.errors import MemoryStoreError

log = logging.getLogger(__name__)

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


def _as_matrix(vectors: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(vectors, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or (n is not None and arr.shape[0] != n):
        raise ValueError(f"expected {n if n is not None else 'N'} vectors, got array of shape {arr.shape}")
    return arr


def _check_upsert(ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> np.ndarray:
    if len(payloads) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(payloads)} payloads")
    return _as_matrix(vectors, len(ids))


class _Shared:
    """A backend handle shared by every store object opened on the same path in this process."""

    def __init__(self, key: str, handle: Any) -> None:
        self.key = key
        self.handle = handle
        self.refs = 0
        self.lock = threading.RLock()
        self.folder_lock: Any = None  # the open lock file of an on-disk EdgeStore


# =================================================================================== QdrantStore

_QDRANT_CLIENTS: dict[str, _Shared] = {}
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
        self._shared: _Shared | None = None
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
                    shared = _QDRANT_CLIENTS[str(root)] = _Shared(str(root), client)
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

        mat = _check_upsert(ids, vectors, payloads)
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

    @staticmethod
    def _vector(v: Any) -> np.ndarray | None:
        if v is None:
            return None
        if isinstance(v, dict):
            v = v.get("", next(iter(v.values()), None))
        return None if v is None else np.asarray(v, dtype=np.float32)

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        with self._op("retrieve") as c:
            recs = c.retrieve(name, ids=[str(i) for i in ids], with_payload=True, with_vectors=with_vectors)
        by_id = {
            str(r.id): StoredPoint(str(r.id), dict(r.payload or {}), self._vector(r.vector) if with_vectors else None)
            for r in recs
        }
        return [by_id[str(i)] for i in ids if str(i) in by_id]

    def search(self, name: str, vector: Any, k: int) -> list[StoredPoint]:
        if k <= 0:
            return []
        q = _as_matrix(vector, 1)[0]
        with self._op("query_points") as c:
            res = c.query_points(name, query=q.tolist(), limit=int(k), with_payload=True, with_vectors=False)
        return [StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in res.points]

    def search_batch(self, name: str, vectors: Any, k: int) -> list[list[StoredPoint]]:
        from qdrant_client import models

        mat = _as_matrix(vectors)
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
                yield StoredPoint(str(r.id), dict(r.payload or {}), self._vector(r.vector) if with_vectors else None)
            if offset is None:
                return

    def count(self, name: str) -> int:
        with self._op("count") as c:
            return int(c.count(name, exact=True).count)


# ===================================================================================== EdgeStore

_EDGE_ROOTS: dict[str, _Shared] = {}
_EDGE_TEMP_DIRS: set[str] = set()  # ":memory:" roots, removed on close or at exit
_EDGE_LOCK = threading.Lock()
_EDGE_CONFIG_FILE = "edge_config.json"
_EDGE_LOCK_FILE = ".memr1-edge.lock"
_EDGE_CHUNK = 2048


def _lock_folder(root: Path) -> Any:
    """An open file holding an exclusive, non-blocking lock on ``root/.memr1-edge.lock`` (released
    when it is closed, or by the kernel when the process dies); MemoryStoreError if another process
    holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
        log.warning("no folder lock on this platform: do not open %s from two processes", root)
        return None
    f = open(root / _EDGE_LOCK_FILE, "a+")  # noqa: SIM115 - held open for the store's life
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise MemoryStoreError(
            f"qdrant-edge storage at {root} is in use by another process (one process per folder)"
        ) from None
    return f


class EdgeStore:
    """qdrant-edge store: one in-process Rust shard per collection, each in ``<path>/<name>/``.

    ``EdgeStore(":memory:")`` uses a temporary folder removed on close. Search is an exact scan
    of the shard (no HNSW is built unless `optimize()` is called), written through a WAL, so every
    acknowledged write survives a process crash; `close()` flushes.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, max_search_threads: int | None = None) -> None:
        try:
            import qdrant_edge  # noqa: F401  (fail early if the optional dependency is missing)
        except ImportError as exc:
            raise ImportError(
                "the edge backend needs qdrant-edge-py: pip install 'memory-r1[edge]'"
            ) from exc

        self._closed = False
        self.max_search_threads = max_search_threads
        self._temp = str(path) == MEMORY_LOCATION
        if self._temp:
            root = Path(tempfile.mkdtemp(prefix="memr1-edge-")).resolve()
            _EDGE_TEMP_DIRS.add(str(root))
        else:
            root = (Path(path) if path is not None else default_store_path("edge")).expanduser().resolve()
            root.mkdir(parents=True, exist_ok=True)
        self.path = root
        self.location = MEMORY_LOCATION if self._temp else str(root)
        self.durable, self.atomic_points = not self._temp, _EDGE_CHUNK  # one WAL record per chunk
        with _EDGE_LOCK:
            shared = _EDGE_ROOTS.get(str(root))
            if shared is None:
                lock = _lock_folder(root)
                shared = _EDGE_ROOTS[str(root)] = _Shared(str(root), {})
                shared.folder_lock = lock
            shared.refs += 1
        self._shared = shared
        self._lock = shared.lock
        log.debug("opened EdgeStore at %s", root)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def _shards(self) -> dict[str, Any]:
        return self._shared.handle

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryStoreError(f"EdgeStore at {self.location} is closed")

    def _dir(self, name: str) -> Path:
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"unsafe collection name {name!r}")
        return self.path / name

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (MemoryStoreError, ValueError, TypeError):
            raise
        except Exception as exc:  # qdrant-edge raises plain Exception
            raise MemoryStoreError(f"qdrant-edge {what} at {self.path} failed: {exc}") from exc

    def _shard(self, name: str) -> Any:
        self._check_open()
        with self._lock:
            shard = self._shards.get(name)
            if shard is not None:
                return shard
            d = self._dir(name)
            if not (d / _EDGE_CONFIG_FILE).is_file():
                raise MemoryStoreError(f"no collection {name!r} in EdgeStore at {self.path}")
            import qdrant_edge as qe

            try:
                shard = qe.EdgeShard.load(str(d), self._load_config())
            except Exception as exc:
                if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                    raise MemoryStoreError(
                        f"qdrant-edge shard {d} is in use by another process: {exc}"
                    ) from exc
                raise MemoryStoreError(f"cannot load qdrant-edge shard {d}: {exc}") from exc
            self._shards[name] = shard
            return shard

    def _load_config(self) -> Any:
        if self.max_search_threads is None:
            return None
        import qdrant_edge as qe

        return qe.EdgeConfig(max_search_threads=self.max_search_threads)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with _EDGE_LOCK:
            shared = self._shared
            shared.refs -= 1
            if shared.refs > 0:
                return
            _EDGE_ROOTS.pop(shared.key, None)
        with shared.lock:
            for name, shard in list(shared.handle.items()):
                try:
                    shard.flush()
                    shard.close()
                except Exception:  # keep closing the others
                    log.exception("closing qdrant-edge shard %s failed", name)
            shared.handle.clear()
            if shared.folder_lock is not None:
                shared.folder_lock.close()  # releases the folder for other processes
                shared.folder_lock = None
        if self._temp:
            shutil.rmtree(self.path, ignore_errors=True)
            _EDGE_TEMP_DIRS.discard(str(self.path))
        log.debug("closed EdgeStore at %s", self.path)

    def flush(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                self._call("flush", shard.flush)

    def optimize(self, name: str) -> bool:
        """Run the shard's optimizers (may build an HNSW index: faster, approximate search)."""
        shard = self._shard(name)
        with self._lock:
            return bool(self._call("optimize", shard.optimize))

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EdgeStore({self.location!r}{', closed' if self._closed else ''})"

    # -- collections ---------------------------------------------------------------------------
    def create_collection(self, name: str, dim: int, *, distance: Distance = "cosine") -> bool:
        import qdrant_edge as qe

        self._check_open()
        with self._lock:
            if self.has_collection(name):
                return False
            d = self._dir(name)
            if d.exists():  # leftovers of a creation that died half-way
                shutil.rmtree(d)
            dist = {"cosine": qe.Distance.Cosine, "dot": qe.Distance.Dot}[distance]
            cfg = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=int(dim), distance=dist),
                max_search_threads=self.max_search_threads,
            )
            self._shards[name] = self._call("create", qe.EdgeShard.create, str(d), cfg)
            return True

    def drop_collection(self, name: str) -> None:
        self._check_open()
        with self._lock:
            shard = self._shards.pop(name, None)
            if shard is not None:
                self._call("close", shard.close)
            d = self._dir(name)
            if d.exists():
                shutil.rmtree(d)

    def has_collection(self, name: str) -> bool:
        self._check_open()
        return name in self._shards or (self._dir(name) / _EDGE_CONFIG_FILE).is_file()

    def list_collections(self) -> list[str]:
        self._check_open()
        on_disk = {p.parent.name for p in self.path.glob(f"*/{_EDGE_CONFIG_FILE}")}
        return sorted(on_disk | set(self._shards))

    # -- points --------------------------------------------------------------------------------
    @staticmethod
    def _vector(v: Any) -> np.ndarray | None:
        if v is None:
            return None
        if isinstance(v, dict):
            v = v.get("", next(iter(v.values()), None))
        return None if v is None else np.asarray(v, dtype=np.float32)

    def upsert(self, name: str, ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> None:
        import qdrant_edge as qe

        mat = _check_upsert(ids, vectors, payloads)
        shard = self._shard(name)
        chunk = _EDGE_CHUNK
        with self._lock:
            for s in range(0, len(ids), chunk):
                pts = [
                    qe.Point(str(i), v, p)
                    for i, v, p in zip(ids[s : s + chunk], mat[s : s + chunk].tolist(), payloads[s : s + chunk], strict=True)
                ]
                self._call("upsert", shard.update, qe.UpdateOperation.upsert_points(pts))

    def delete(self, name: str, ids: Sequence[str]) -> None:
        import qdrant_edge as qe

        if not ids:
            return
        shard = self._shard(name)
        with self._lock:
            self._call("delete", shard.update, qe.UpdateOperation.delete_points([str(i) for i in ids]))

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = False) -> list[StoredPoint]:
        if not ids:
            return []
        shard = self._shard(name)
        recs = self._call(
            "retrieve", shard.retrieve, [str(i) for i in ids], with_payload=True, with_vector=with_vectors
        )
        by_id = {
            str(r.id): StoredPoint(str(r.id), dict(r.payload or {}), self._vector(r.vector) if with_vectors else None)
            for r in recs
        }
        return [by_id[str(i)] for i in ids if str(i) in by_id]

    def search(self, name: str, vector: Any, k: int) -> list[StoredPoint]:
        import qdrant_edge as qe

        if k <= 0:
            return []
        q = _as_matrix(vector, 1)[0]
        shard = self._shard(name)
        req = qe.QueryRequest(limit=int(k), query=qe.Query.Nearest(q.tolist()), with_payload=True)
        res = self._call("query", shard.query, req)
        return [StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in res]

    def search_batch(self, name: str, vectors: Any, k: int) -> list[list[StoredPoint]]:
        import qdrant_edge as qe

        mat = _as_matrix(vectors)
        if k <= 0 or len(mat) == 0:
            return [[] for _ in range(len(mat))]
        shard = self._shard(name)
        reqs = [qe.QueryRequest(limit=int(k), query=qe.Query.Nearest(v), with_payload=True) for v in mat.tolist()]
        res = self._call("query_batch", shard.query_batch, qe.QueryBatchRequest(reqs))
        return [[StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in r] for r in res]

    def scroll(self, name: str, *, with_vectors: bool = False, batch_size: int = 1024) -> Iterator[StoredPoint]:
        import qdrant_edge as qe

        shard = self._shard(name)
        offset = None
        while True:
            req = qe.ScrollRequest(offset=offset, limit=batch_size, with_payload=True, with_vector=with_vectors)
            recs, offset = self._call("scroll", shard.scroll, req)
            for r in recs:
                yield StoredPoint(str(r.id), dict(r.payload or {}), self._vector(r.vector) if with_vectors else None)
            if offset is None or not recs:
                return

    def count(self, name: str) -> int:
        import qdrant_edge as qe

        shard = self._shard(name)
        return int(self._call("count", shard.count, qe.CountRequest(exact=True)))


def _close_all_at_exit() -> None:
    """Release local clients and edge shards still open at interpreter exit (flushes edge WALs and
    avoids qdrant-client's __del__ failing during shutdown)."""
    with _QDRANT_LOCK:
        clients = list(_QDRANT_CLIENTS.values())
        _QDRANT_CLIENTS.clear()
    for shared in clients:
        try:
            shared.handle.close()
        except Exception:  # pragma: no cover - best effort at exit
            pass
    with _EDGE_LOCK:
        roots = list(_EDGE_ROOTS.values())
        _EDGE_ROOTS.clear()
    for shared in roots:
        for shard in shared.handle.values():
            try:
                shard.flush()
                shard.close()
            except Exception:  # pragma: no cover
                pass
        if shared.folder_lock is not None:
            shared.folder_lock.close()
    for d in list(_EDGE_TEMP_DIRS):
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_close_all_at_exit)


# ======================================================================================= factory

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
