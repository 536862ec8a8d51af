"""`EdgeStore` - qdrant-edge-py, the Rust Qdrant engine in-process. One shard (a directory) per
collection under a root folder, one handle per folder per process (a refcounted registry).

Each upsert/delete chunk is one WAL record (``atomic_points`` = the chunk). The store is
single-process: it takes an exclusive lock on ``<folder>/.memr1-edge.lock`` for as long as it is
open, so a second process opening the same folder gets one `MemoryStoreError` instead of racing the
first one (creating the same collection twice, each taking the other's half-made shard for
leftovers). qdrant-edge is imported lazily.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
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

_EDGE_ROOTS: dict[str, SharedHandle] = {}
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
                shared = _EDGE_ROOTS[str(root)] = SharedHandle(str(root), {})
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
    def upsert(self, name: str, ids: Sequence[str], vectors: Any, payloads: Sequence[dict]) -> None:
        import qdrant_edge as qe

        mat = check_upsert(ids, vectors, payloads)
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
            str(r.id): StoredPoint(str(r.id), dict(r.payload or {}), point_vector(r.vector) if with_vectors else None)
            for r in recs
        }
        return [by_id[str(i)] for i in ids if str(i) in by_id]

    def search(self, name: str, vector: Any, k: int) -> list[StoredPoint]:
        import qdrant_edge as qe

        if k <= 0:
            return []
        q = as_matrix(vector, 1)[0]
        shard = self._shard(name)
        req = qe.QueryRequest(limit=int(k), query=qe.Query.Nearest(q.tolist()), with_payload=True)
        res = self._call("query", shard.query, req)
        return [StoredPoint(str(p.id), dict(p.payload or {}), None, float(p.score)) for p in res]

    def search_batch(self, name: str, vectors: Any, k: int) -> list[list[StoredPoint]]:
        import qdrant_edge as qe

        mat = as_matrix(vectors)
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
                yield StoredPoint(str(r.id), dict(r.payload or {}), point_vector(r.vector) if with_vectors else None)
            if offset is None or not recs:
                return

    def count(self, name: str) -> int:
        import qdrant_edge as qe

        shard = self._shard(name)
        return int(self._call("count", shard.count, qe.CountRequest(exact=True)))


def _close_all_at_exit() -> None:
    """Flush and release edge shards still open at interpreter exit, and remove ":memory:" roots."""
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
