"""`MemoryBank`: a namespaced, persistent memory bank with mem0-style verbs and a full history.

Storage layout (any `VectorStore`): per namespace two collections,

* ``mr1_mem_<key>``  - one point per live memory: id = memory id (UUID4), the text's embedding,
  payload ``{text, namespace, created_at, updated_at, timestamp, metadata, created_by}``;
* ``mr1_hist_<key>`` - the sidecar: one point per memory that was ever updated or deleted (id =
  memory id, a 1-d dummy vector) whose payload holds that memory's append-only event list, plus
  one meta point (readable namespace, embedder, dim). History therefore lives in the same store as
  the memories (local disk, server, edge) and survives DELETE, close and reopen.

A memory's ADD event is implied by its own payload (text, created_at, created_by) until its first
UPDATE or DELETE, which writes the sidecar point starting with that ADD event. So an ADD is one
write (the memory point), an UPDATE or DELETE two: it halves the cost of adds, which dominate
(qdrant-client local mode commits each point to sqlite separately).

Whole operations. Every op validates and embeds *before* writing. An op that needs more than one
write the store applies all-or-nothing (an UPDATE or DELETE: memory + history; ``add_many`` of
several memories on qdrant-client local mode, which commits point by point; ``clear``, ``restore``,
``BankFactory.drop``) first writes an *intent record* into the history collection (one point, so it
is itself written whole): the list of writes that make the bank whole again if the op is cut short.
The op then makes its writes and deletes the record. Cut short by an exception, the op applies the
record's writes at once; cut short by a killed process, the next open of the namespace applies them.
Either way each op ends whole or absent: ADD, UPDATE, DELETE and ``restore`` are rolled back (an op
that did not return is not acknowledged, so no acknowledged write is undone), ``clear`` and ``drop``,
which only remove, are completed. A record that cannot be applied leaves the bank refusing ops until
it can. One process writes a namespace at a time (local mode and qdrant-edge lock their folder; with
a server that is the caller's part). Stores that do not outlive the process (``":memory:"``) skip
the record and keep only the in-process path.

Times are ISO-8601 UTC strings from a process-wide strictly increasing clock, so `list()`
(created_at, then id) is insertion order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone

import numpy as np

from memory_r1.memory.embedders import Embedder
from memory_r1.memory.errors import EmbeddingError, MemoryStoreError, UnknownMemoryError
from memory_r1.memory.naming import collection_name, validate_namespace
from memory_r1.memory.stores import StoredPoint, VectorStore
from memory_r1.types import HistoryEvent, MemoryItem

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = "memory_r1.bank"
SNAPSHOT_VERSION = 1
#: Id of the meta point in a namespace's history collection (never a memory id: memory ids are UUID4).
META_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "memory_r1/bank/meta"))
#: Id of the intent record of the op in flight (history collection; see the module docstring).
INTENT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "memory_r1/bank/intent"))
_RESERVED = frozenset({META_ID, INTENT_ID})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _Clock:
    """Strictly increasing ISO-8601 UTC timestamps (microseconds) across the whole process."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> str:
        import time

        with self._lock:
            us = max(time.time_ns() // 1000, self._last + 1)
            self._last = us
        return (_EPOCH + timedelta(microseconds=us)).isoformat(timespec="microseconds")


_CLOCK = _Clock()


def utc_now() -> str:
    """The bank clock's next timestamp, e.g. ``2025-01-31T12:00:00.000001+00:00``."""
    return _CLOCK.now()


# ------------------------------------------------------------------------------------ validation


def _text(text: object, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} must not be empty or whitespace")
    return text


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def _actor(actor: object) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise ValueError(f"actor must be a non-empty str, got {actor!r}")
    return actor


def _metadata(md: object) -> dict:
    if md is None:
        return {}
    if not isinstance(md, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(md).__name__}")
    try:  # plain JSON only: it goes into a payload and into snapshots
        return json.loads(json.dumps(dict(md), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata is not plain JSON: {exc}") from exc


def _texts(texts: object, what: str = "texts") -> list:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a list of strings, not a single string")
    return list(texts)  # type: ignore[call-overload]


def _event(op: str, old: str | None, new: str | None, time: str, actor: str) -> dict:
    return {"op": op, "old_text": old, "new_text": new, "time": time, "actor": actor}


class MemoryBank:
    """The memories of one namespace (e.g. ``conv-26/Caroline``) in a vector store.

    Ops never see or touch another namespace's memories: an id from another namespace is unknown.
    Thread-safe within a process (one lock per bank).
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        namespace: str,
        *,
        owns_store: bool = False,
    ) -> None:
        self._namespace = validate_namespace(namespace)
        self._store = store
        self._embedder = embedder
        self._dim = int(embedder.dim)
        self._owns_store = owns_store
        self._mem = collection_name(namespace, "mem")
        self._hist = collection_name(namespace, "hist")
        self._lock = threading.RLock()
        self._closed = False
        self._unsettled = False  # an intent record is left to apply (see _intent)
        self._ensure_collections()

    # ------------------------------------------------------------------------------ properties
    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def store(self) -> VectorStore:
        return self._store

    @property
    def embedder(self) -> Embedder:
        return self._embedder

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def collections(self) -> tuple[str, str]:
        """(memory collection, history collection) names in the store."""
        return (self._mem, self._hist)

    # ------------------------------------------------------------------------------ plumbing
    def _meta_payload(self) -> dict:
        return {
            "kind": "meta",
            "namespace": self._namespace,
            "embedder": self._embedder.name,
            "dim": self._dim,
            "format_version": SNAPSHOT_VERSION,
        }

    def _ensure_collections(self) -> None:
        self._store.create_collection(self._mem, self._dim, distance="cosine")
        self._store.create_collection(self._hist, 1, distance="dot")
        meta = self._store.retrieve(self._hist, [META_ID])
        if not meta:
            self._store.upsert(self._hist, [META_ID], np.ones((1, 1), np.float32), [self._meta_payload()])
            return  # a new namespace: no intent record can be left in it
        m = meta[0].payload
        if m.get("namespace") != self._namespace:
            raise MemoryStoreError(
                f"collection {self._hist} at {self._store.location} belongs to namespace "
                f"{m.get('namespace')!r}, not {self._namespace!r}"
            )
        if int(m.get("dim", self._dim)) != self._dim:
            raise MemoryStoreError(
                f"namespace {self._namespace!r} at {self._store.location} holds {m.get('dim')}-d vectors "
                f"({m.get('embedder')}); the embedder {self._embedder.name} makes {self._dim}-d ones"
            )
        if m.get("embedder") != self._embedder.name:
            log.warning(
                "namespace %r was embedded with %s, now searched with %s",
                self._namespace, m.get("embedder"), self._embedder.name,
            )
        self._settle()

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryStoreError(f"bank {self._namespace!r} is closed")

    def _id(self, memory_id: object) -> str:
        if isinstance(memory_id, uuid.UUID):
            mid = str(memory_id)
        elif isinstance(memory_id, str):
            try:
                mid = str(uuid.UUID(memory_id.strip()))
            except ValueError:
                raise UnknownMemoryError(memory_id, self._namespace) from None
        else:
            raise UnknownMemoryError(repr(memory_id), self._namespace)
        if mid in _RESERVED:
            raise UnknownMemoryError(memory_id if isinstance(memory_id, str) else mid, self._namespace)
        return mid

    def _embed(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self._embedder.embed(texts), dtype=np.float32)
        if vecs.shape != (len(texts), self._dim):
            raise EmbeddingError(
                f"{self._embedder.name} returned shape {vecs.shape} for {len(texts)} texts (dim {self._dim})"
            )
        if not np.isfinite(vecs).all():
            raise EmbeddingError(f"{self._embedder.name} returned non-finite values")
        return vecs

    def _item(self, p: StoredPoint) -> MemoryItem:
        pl = p.payload
        return MemoryItem(
            id=p.id,
            text=pl["text"],
            namespace=self._namespace,
            created_at=pl.get("created_at", ""),
            updated_at=pl.get("updated_at", ""),
            timestamp=pl.get("timestamp", ""),
            metadata=pl.get("metadata") or {},
            score=p.score,
        )

    def _fetch(self, mid: str, *, with_vectors: bool = False) -> StoredPoint:
        pts = self._store.retrieve(self._mem, [mid], with_vectors=with_vectors)
        if not pts:
            raise UnknownMemoryError(mid, self._namespace)
        return pts[0]

    @staticmethod
    def _implied_add(payload: dict) -> dict:
        """The ADD event of a memory that has no sidecar history point yet."""
        return _event("ADD", None, payload["text"], payload.get("created_at", ""), payload.get("created_by", "user"))

    def _history_point(self, mid: str) -> list[dict] | None:
        """A memory's stored event list, or None when it has no history point yet."""
        pts = self._store.retrieve(self._hist, [mid])
        return list(pts[0].payload.get("events", [])) if pts else None

    @staticmethod
    def _history_payload(mid: str, events: list[dict]) -> dict:
        return {"kind": "history", "memory_id": mid, "events": events}

    def _write_history(self, events: dict[str, list[dict]]) -> None:
        ids = list(events)
        if ids:
            payloads = [self._history_payload(mid, events[mid]) for mid in ids]
            self._store.upsert(self._hist, ids, np.ones((len(ids), 1), np.float32), payloads)

    # -- whole operations: intent records (module docstring) -------------------------------------
    # An intent's steps are plain JSON: {"put": "mem"|"hist", "points": [{id, vector, payload}]},
    # {"delete": "mem"|"hist", "ids": [...]}, {"wipe": true} (every memory and history point gone,
    # the collections kept). Applying them twice is the same as once.

    @staticmethod
    def _put_step(kind: str, points: list[tuple[str, np.ndarray | None, dict]]) -> dict:
        return {"put": kind, "points": [{"id": mid, "vector": v, "payload": pl} for mid, v, pl in points]}

    @staticmethod
    def _jsonable(steps: list[dict]) -> list[dict]:
        """Steps as a record payload holds them (vectors as lists of floats: float32 round-trips)."""
        out = []
        for step in steps:
            if "put" in step:
                step = {**step, "points": [
                    {**pt, "vector": None if pt["vector"] is None else np.asarray(pt["vector"], np.float32).ravel().tolist()}
                    for pt in step["points"]]}
            out.append(step)
        return out

    def _history_steps(self, mid: str, events: list[dict] | None) -> dict:
        """The step that puts a memory's history back as it is now (`events`; None: no point)."""
        if events is None:
            return {"delete": "hist", "ids": [mid]}
        return self._put_step("hist", [(mid, np.ones(1, np.float32), self._history_payload(mid, events))])

    def _apply(self, steps: list[dict]) -> None:
        coll = {"mem": self._mem, "hist": self._hist}
        for step in steps:
            if step.get("wipe"):
                self._wipe()
            elif step.get("drop"):
                self._store.drop_collection(self._mem)
                self._store.drop_collection(self._hist)  # the intent record goes with it
            elif "delete" in step:
                self._store.delete(coll[step["delete"]], list(step["ids"]))
            elif "put" in step:
                points = step["points"]
                if not points:
                    continue
                name = coll[step["put"]]
                mat = np.zeros((len(points), self._dim if name == self._mem else 1), np.float32)
                missing = [i for i, pt in enumerate(points) if pt["vector"] is None]
                if missing:  # a store that did not give a vector back: embed the text again
                    mat[missing] = self._embed([points[i]["payload"]["text"] for i in missing])
                for i, pt in enumerate(points):
                    if pt["vector"] is not None:
                        mat[i] = np.asarray(pt["vector"], np.float32).ravel()
                self._store.upsert(name, [pt["id"] for pt in points], mat, [pt["payload"] for pt in points])
            else:  # pragma: no cover - written by this module only
                raise MemoryStoreError(f"bank {self._namespace!r}: unknown intent step {sorted(step)}")

    def _wipe(self) -> None:
        """Every memory and history point gone; the meta and intent records stay."""
        self._store.drop_collection(self._mem)
        self._store.create_collection(self._mem, self._dim, distance="cosine")
        stale = [p.id for p in self._store.scroll(self._hist) if p.id not in _RESERVED]
        self._store.delete(self._hist, stale)

    def _settle(self) -> None:
        """Apply and remove the intent record left by an op that was cut short (a killed process, or a
        failure that could not be undone at once); nothing when there is none."""
        pts = self._store.retrieve(self._hist, [INTENT_ID])
        if not pts:
            self._unsettled = False
            return
        intent = pts[0].payload
        steps = list(intent.get("steps", []))
        try:
            self._apply(steps)
            if any(st.get("drop") for st in steps):
                self._ensure_collections()  # the namespace was dropped: it starts afresh
            else:
                self._store.delete(self._hist, [INTENT_ID])
        except Exception as exc:
            self._unsettled = True
            raise MemoryStoreError(
                f"bank {self._namespace!r} at {self._store.location}: the {intent.get('op')} cut short could "
                f"not be {'rolled back' if intent.get('rollback', True) else 'completed'}: {exc}"
            ) from exc
        self._unsettled = False
        log.warning("bank %r: the %s cut short was %s", self._namespace, intent.get("op"),
                    "rolled back" if intent.get("rollback", True) else "completed")

    @contextlib.contextmanager
    def _intent(self, op: str, steps: list[dict], *, rollback: bool = True, record: bool = True) -> Iterator[None]:
        """Run an op's writes whole: `steps` make the bank whole again if they are cut short (undo
        them when `rollback`, else finish them). The record is written only when `record` (the op makes
        more than one all-or-nothing write) and the store outlives the process."""
        if self._unsettled:
            self._settle()
        written = record and getattr(self._store, "durable", True)
        if written:
            payload = {"kind": "intent", "op": op, "rollback": rollback, "steps": self._jsonable(steps),
                       "time": _CLOCK.now()}
            self._store.upsert(self._hist, [INTENT_ID], np.ones((1, 1), np.float32), [payload])
        dropped = any(st.get("drop") for st in steps)  # the record goes with the collection
        try:
            yield
            if written and not dropped:
                self._store.delete(self._hist, [INTENT_ID])
        except BaseException:
            try:
                self._apply(steps)
                if written and not dropped:
                    self._store.delete(self._hist, [INTENT_ID])
            except Exception:
                self._unsettled = written  # the record stays; applied before the next op or on open
                log.exception("bank %r: %s failed and could not be %s at once", self._namespace, op,
                              "undone" if rollback else "completed")
            raise

    def _single_write(self, n_points: int) -> bool:
        """Whether one store call of `n_points` points is written all-or-nothing."""
        return n_points <= int(getattr(self._store, "atomic_points", 1))

    # ------------------------------------------------------------------------------ verbs
    def add(
        self,
        text: str,
        *,
        timestamp: str = "",
        metadata: dict | None = None,
        actor: str = "user",
    ) -> MemoryItem:
        """Store a new memory; returns it (with its new UUID id)."""
        return self.add_many([text], timestamps=[timestamp], metadatas=[metadata], actor=actor)[0]

    def add_many(
        self,
        texts: Sequence[str],
        timestamps: Sequence[str] | None = None,
        metadatas: Sequence[dict | None] | None = None,
        *,
        actor: str = "user",
    ) -> list[MemoryItem]:
        """Store several memories with one batched embedding call; all or nothing."""
        items = _texts(texts)
        n = len(items)
        for i, t in enumerate(items):
            _text(t, f"texts[{i}]")
        stamps = [""] * n if timestamps is None else [_str(t, "timestamp") for t in _texts(timestamps, "timestamps")]
        mds = [{} for _ in range(n)] if metadatas is None else [_metadata(m) for m in _texts(metadatas, "metadatas")]
        if len(stamps) != n or len(mds) != n:
            raise ValueError(f"{n} texts but {len(stamps)} timestamps and {len(mds)} metadatas")
        _actor(actor)
        self._check_open()
        if n == 0:
            return []
        vecs = self._embed(items)
        with self._lock:
            self._check_open()
            ids = [str(uuid.uuid4()) for _ in range(n)]
            times = [_CLOCK.now() for _ in range(n)]
            payloads = [
                {
                    "text": t,
                    "namespace": self._namespace,
                    "created_at": tm,
                    "updated_at": tm,
                    "timestamp": ts,
                    "metadata": md,
                    "created_by": actor,
                }
                for t, tm, ts, md in zip(items, times, stamps, mds, strict=True)
            ]
            undo = [{"delete": "mem", "ids": ids}]
            with self._intent("add", undo, record=not self._single_write(n)):
                self._store.upsert(self._mem, ids, vecs, payloads)  # the ADD events are implied
        return [self._item(StoredPoint(mid, pl)) for mid, pl in zip(ids, payloads, strict=True)]

    def update(
        self,
        memory_id: str,
        text: str,
        *,
        actor: str = "user",
        timestamp: str | None = None,
        metadata: dict | None = None,
    ) -> MemoryItem:
        """Replace a memory's text (re-embedded; `timestamp`/`metadata` replaced when given).
        Unknown id -> UnknownMemoryError; either way a failure leaves the old memory in place."""
        text = _text(text)
        _actor(actor)
        if timestamp is not None:
            _str(timestamp, "timestamp")
        md = _metadata(metadata) if metadata is not None else None
        mid = self._id(memory_id)
        with self._lock:
            self._check_open()
            old = self._fetch(mid, with_vectors=True)
            old_text = old.payload["text"]
            if text == old_text and old.vector is not None:
                vec = old.vector[None, :]
            else:
                vec = self._embed([text])
            now = _CLOCK.now()
            payload = {**old.payload, "text": text, "namespace": self._namespace, "updated_at": now}
            if timestamp is not None:
                payload["timestamp"] = timestamp
            if md is not None:
                payload["metadata"] = md
            events = self._history_point(mid)
            undo = [self._put_step("mem", [(mid, old.vector, old.payload)]), self._history_steps(mid, events)]
            new_events = (events if events is not None else [self._implied_add(old.payload)]) + [_event("UPDATE", old_text, text, now, actor)]
            with self._intent("update", undo):
                self._store.upsert(self._mem, [mid], vec, [payload])
                self._write_history({mid: new_events})
        return self._item(StoredPoint(mid, payload))

    def delete(self, memory_id: str, *, actor: str = "user") -> MemoryItem:
        """Remove a memory (its history stays); returns what was deleted."""
        _actor(actor)
        mid = self._id(memory_id)
        with self._lock:
            self._check_open()
            old = self._fetch(mid, with_vectors=True)
            now = _CLOCK.now()
            events = self._history_point(mid)
            undo = [self._put_step("mem", [(mid, old.vector, old.payload)]), self._history_steps(mid, events)]
            new_events = (events if events is not None else [self._implied_add(old.payload)]) + [
                _event("DELETE", old.payload["text"], None, now, actor)]
            with self._intent("delete", undo):
                self._store.delete(self._mem, [mid])
                self._write_history({mid: new_events})
        return self._item(old)

    def get(self, memory_id: str) -> MemoryItem:
        mid = self._id(memory_id)
        self._check_open()
        return self._item(self._fetch(mid))

    def __contains__(self, memory_id: object) -> bool:
        try:
            mid = self._id(memory_id)
        except UnknownMemoryError:
            return False
        return bool(self._store.retrieve(self._mem, [mid]))

    def search(self, query: str, k: int = 10) -> list[MemoryItem]:
        """The k memories closest to `query` (cosine similarity in `score`), best first."""
        query = _text(query, "query")
        self._check_open()
        if k <= 0:
            return []
        vec = self._embed([query])[0]
        return [self._item(p) for p in self._store.search(self._mem, vec, int(k))]

    def search_many(self, queries: Sequence[str], k: int = 10) -> list[list[MemoryItem]]:
        """`search` for several queries, with one batched embedding call and one batched store query."""
        qs = _texts(queries, "queries")
        for i, q in enumerate(qs):
            _text(q, f"queries[{i}]")
        self._check_open()
        if not qs:
            return []
        if k <= 0:
            return [[] for _ in qs]
        vecs = self._embed(qs)
        return [[self._item(p) for p in hits] for hits in self._store.search_batch(self._mem, vecs, int(k))]

    def list(self) -> list[MemoryItem]:
        """Every live memory, oldest first (created_at, then id)."""
        self._check_open()
        items = [self._item(p) for p in self._store.scroll(self._mem)]
        items.sort(key=lambda m: (m.created_at, m.id))
        return items

    def history(self, memory_id: str) -> list[HistoryEvent]:
        """A memory's events, oldest first; still there after it is deleted."""
        mid = self._id(memory_id)
        self._check_open()
        pts = self._store.retrieve(self._hist, [mid])
        if pts:
            events = pts[0].payload.get("events", [])
        else:
            mem = self._store.retrieve(self._mem, [mid])
            if not mem:
                raise UnknownMemoryError(mid, self._namespace)
            events = [self._implied_add(mem[0].payload)]
        return [HistoryEvent(memory_id=mid, **e) for e in events]

    def all_history(self) -> list[HistoryEvent]:
        """Every event of the namespace, in time order."""
        with self._lock:
            self._check_open()
            return [HistoryEvent(**e) for e in self._history_dicts(list(self._store.scroll(self._mem)))]

    def _history_dicts(self, mem_points: list[StoredPoint]) -> list[dict]:
        per_id: dict[str, list[dict]] = {}
        for p in self._store.scroll(self._hist):
            if p.payload.get("kind") == "history":
                per_id[p.id] = list(p.payload.get("events", []))
        for p in mem_points:
            if p.id not in per_id:
                per_id[p.id] = [self._implied_add(p.payload)]
        rows = [
            (e.get("time", ""), mid, j, {"memory_id": mid, **e})
            for mid, events in per_id.items()
            for j, e in enumerate(events)
        ]
        rows.sort(key=lambda r: r[:3])
        return [r[3] for r in rows]

    def __len__(self) -> int:
        self._check_open()
        return self._store.count(self._mem)

    # ------------------------------------------------------------------------------ snapshots
    def snapshot(self, *, include_vectors: bool = False) -> dict:
        """The whole bank as plain JSON-able data (memories in `list()` order, history in time
        order); vectors as lists of floats when `include_vectors`."""
        with self._lock:
            self._check_open()
            pts = list(self._store.scroll(self._mem, with_vectors=include_vectors))
            history = self._history_dicts(pts)
        pts.sort(key=lambda p: (p.payload.get("created_at", ""), p.id))
        memories = []
        for p in pts:
            pl = p.payload
            m = {
                "id": p.id,
                "text": pl["text"],
                "created_at": pl.get("created_at", ""),
                "updated_at": pl.get("updated_at", ""),
                "timestamp": pl.get("timestamp", ""),
                "metadata": pl.get("metadata") or {},
            }
            if include_vectors and p.vector is not None:
                m["vector"] = [float(x) for x in p.vector]
            memories.append(m)
        return {
            "format": SNAPSHOT_FORMAT,
            "version": SNAPSHOT_VERSION,
            "namespace": self._namespace,
            "embedder": self._embedder.name,
            "dim": self._dim,
            "memories": memories,
            "history": history,
        }

    def _prepare_restore(self, snap: Mapping) -> tuple[list[str], np.ndarray, list[dict], dict[str, list[dict]]]:
        if not isinstance(snap, Mapping):
            raise TypeError(f"snapshot must be a dict, got {type(snap).__name__}")
        if snap.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"not a memory bank snapshot (format {snap.get('format')!r})")
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {snap.get('version')!r}")
        reuse = snap.get("dim") == self._dim and snap.get("embedder") in (None, self._embedder.name)
        ids: list[str] = []
        seen: set[str] = set()
        payloads: list[dict] = []
        vecs: list[np.ndarray | None] = []
        for i, m in enumerate(snap.get("memories") or []):
            if not isinstance(m, Mapping):
                raise ValueError(f"memories[{i}] is not a dict")
            try:
                mid = self._id(m.get("id"))
            except UnknownMemoryError:
                raise ValueError(f"memories[{i}].id {m.get('id')!r} is not a memory id") from None
            if mid in seen:
                raise ValueError(f"duplicate memory id {mid} in snapshot")
            seen.add(mid)
            ids.append(mid)
            payloads.append(
                {
                    "text": _text(m.get("text"), f"memories[{i}].text"),
                    "namespace": self._namespace,
                    "created_at": _str(m.get("created_at", ""), "created_at"),
                    "updated_at": _str(m.get("updated_at", ""), "updated_at"),
                    "timestamp": _str(m.get("timestamp", ""), "timestamp"),
                    "metadata": _metadata(m.get("metadata")),
                }
            )
            v = m.get("vector") if reuse else None
            if v is not None:
                v = np.asarray(v, dtype=np.float32)
                if v.shape != (self._dim,) or not np.isfinite(v).all():
                    raise ValueError(f"memories[{i}].vector is not a finite {self._dim}-d vector")
            vecs.append(v)
        events: dict[str, list[dict]] = {}
        for j, e in enumerate(snap.get("history") or []):
            ev = HistoryEvent.model_validate(e)
            try:
                mid = self._id(ev.memory_id)
            except UnknownMemoryError:
                raise ValueError(f"history[{j}].memory_id {ev.memory_id!r} is not a memory id") from None
            events.setdefault(mid, []).append(_event(ev.op, ev.old_text, ev.new_text, ev.time, ev.actor))
        for mid, pl in zip(ids, payloads, strict=True):
            evs = events.setdefault(mid, [])  # explicit (maybe empty) history for every memory
            adds = [e for e in evs if e["op"] == "ADD"]
            pl["created_by"] = adds[0]["actor"] if adds else "user"
        todo = [i for i, v in enumerate(vecs) if v is None]
        mat = np.zeros((len(ids), self._dim), dtype=np.float32)
        if todo:
            mat[todo] = self._embed([payloads[i]["text"] for i in todo])
        for i, v in enumerate(vecs):
            if v is not None:
                norm = float(np.linalg.norm(v))
                mat[i] = v / norm if norm > 0 and not math.isclose(norm, 1.0, rel_tol=1e-5) else v
        return ids, mat, payloads, events

    def _content_steps(self, ids: list[str], mat: np.ndarray | None, payloads: list[dict],
                       events: dict[str, list[dict]]) -> list[dict]:
        """Steps that make the bank hold exactly this content (wipe, then put)."""
        vecs = [None] * len(ids) if mat is None else list(mat)
        return [{"wipe": True}, self._put_step("mem", list(zip(ids, vecs, payloads, strict=True))),
                self._put_step("hist", [(mid, np.ones(1, np.float32), self._history_payload(mid, evs))
                                        for mid, evs in events.items()])]

    def restore(self, snapshot: Mapping) -> None:
        """Replace the bank's content with a snapshot's, exactly: same ids, texts, times, metadata
        and history (memories re-embedded where the snapshot has no usable vectors). A snapshot
        taken in another namespace may be restored; its memories then belong to this one. The
        snapshot is fully validated (and embedded) first; a restore cut short (an error, a killed
        process) puts the previous content back."""
        ids, mat, payloads, events = self._prepare_restore(snapshot)
        with self._lock:
            self._check_open()
            old_pts = list(self._store.scroll(self._mem, with_vectors=True))
            old_hist = {p.id: list(p.payload.get("events", []))
                        for p in self._store.scroll(self._hist) if p.payload.get("kind") == "history"}
            old_mat = np.stack([p.vector for p in old_pts]) if old_pts and all(
                p.vector is not None for p in old_pts) else None
            undo = self._content_steps([p.id for p in old_pts], old_mat, [p.payload for p in old_pts], old_hist)
            with self._intent("restore", undo):
                self._apply(self._content_steps(ids, mat, payloads, events))
        log.info("restored bank %r: %d memories, %d with history", self._namespace, len(ids), len(events))

    def clear(self) -> None:
        """Remove every memory *and* the history: the namespace starts afresh. A clear cut short is
        completed (on the next op or open)."""
        with self._lock:
            self._check_open()
            steps = [{"wipe": True}]
            with self._intent("clear", steps, rollback=False):
                self._apply(steps)

    def drop(self) -> None:
        """Delete the namespace's memories, history and collections, and close the bank. A drop cut
        short is completed when the namespace is next opened (which then starts afresh)."""
        with self._lock:
            self._check_open()
            steps = [{"drop": True}]
            with self._intent("drop", steps, rollback=False):
                self._apply(steps)
        self.close()

    # ------------------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the bank (and its store, when the bank opened it)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> MemoryBank:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MemoryBank(namespace={self._namespace!r}, store={self._store!r})"
