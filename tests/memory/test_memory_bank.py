"""MemoryBank contract, run against both backends (qdrant-client local mode and qdrant-edge) with the
real MiniLM embedder."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from memory_r1.memory import (
    BankFactory,
    MemoryBank,
    UnknownMemoryError,
    open_bank,
)
from memory_r1.types import HistoryEvent, MemoryItem

FACTS = [
    "Caroline adopted a golden retriever puppy named Rex",
    "Caroline filed her income taxes with an accountant in April",
    "Melanie painted a sunset over the lake last weekend",
    "Melanie is training for the city marathon in October",
]


class State:
    """Everything observable about a bank (for 'unchanged' checks); vectors compared to float32
    rounding (a store may renormalise a vector it is given back)."""

    def __init__(self, bank: MemoryBank) -> None:
        snap = bank.snapshot(include_vectors=True)
        self.vectors = np.array([m.pop("vector") for m in snap["memories"]], dtype=np.float32)
        self.snap = snap

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and self.snap == other.snap
            and self.vectors.shape == other.vectors.shape
            and np.allclose(self.vectors, other.vectors, atol=1e-6)
        )

    def __repr__(self) -> str:
        return f"State({self.snap!r})"


state = State


# ------------------------------------------------------------------------------------- basics


def test_add_get_and_fields(make_bank):
    bank = make_bank()
    m = bank.add(FACTS[0], timestamp="8 May 2023", metadata={"dia_id": "D1:3"}, actor="mm")
    assert isinstance(m, MemoryItem)
    assert str(uuid.UUID(m.id)) == m.id
    assert (m.text, m.namespace, m.timestamp, m.metadata) == (FACTS[0], "conv-26/Caroline", "8 May 2023", {"dia_id": "D1:3"})
    assert m.created_at == m.updated_at and m.score is None
    got = bank.get(m.id)
    assert got == m
    assert len(bank) == 1 and m.id in bank
    assert bank.history(m.id) == [
        HistoryEvent(memory_id=m.id, op="ADD", old_text=None, new_text=FACTS[0], time=m.created_at, actor="mm")
    ]


def test_add_many_one_batch_in_order(make_bank):
    bank = make_bank()
    items = bank.add_many(FACTS, timestamps=["t0", "t1", "t2", "t3"], metadatas=[{"i": i} for i in range(4)], actor="a")
    assert [m.text for m in items] == FACTS
    assert [m.timestamp for m in items] == ["t0", "t1", "t2", "t3"]
    assert len({m.id for m in items}) == 4
    # list(): created_at then id == insertion order (the bank clock is strictly increasing)
    assert [m.id for m in bank.list()] == [m.id for m in items]
    assert [m.metadata for m in bank.list()] == [{"i": i} for i in range(4)]
    assert bank.add_many([]) == []
    with pytest.raises(ValueError):
        bank.add_many(["a", "b"], timestamps=["only one"])


def test_update_and_history(make_bank):
    bank = make_bank()
    m = bank.add(FACTS[0], timestamp="8 May 2023")
    u = bank.update(m.id, "Caroline adopted two dogs, Rex and Max", actor="manager")
    assert u.id == m.id and u.text == "Caroline adopted two dogs, Rex and Max"
    assert u.created_at == m.created_at and u.updated_at > m.created_at
    assert u.timestamp == "8 May 2023"  # kept unless given
    assert bank.get(m.id) == u
    assert bank.search("how many dogs does Caroline have", k=1)[0].text == u.text
    u2 = bank.update(m.id, u.text, timestamp="9 May 2023", metadata={"k": 1})
    assert (u2.timestamp, u2.metadata) == ("9 May 2023", {"k": 1})
    ops = [(e.op, e.old_text, e.new_text, e.actor) for e in bank.history(m.id)]
    assert ops == [
        ("ADD", None, FACTS[0], "user"),
        ("UPDATE", FACTS[0], u.text, "manager"),
        ("UPDATE", u.text, u.text, "user"),
    ]
    times = [e.time for e in bank.history(m.id)]
    assert times == sorted(times) and len(set(times)) == 3
    assert len(bank) == 1


def test_delete_keeps_history(make_bank):
    bank = make_bank()
    a, b = bank.add_many(FACTS[:2])
    gone = bank.delete(a.id, actor="manager")
    assert gone.id == a.id and gone.text == FACTS[0]
    assert len(bank) == 1 and a.id not in bank
    with pytest.raises(UnknownMemoryError):
        bank.get(a.id)
    assert all(r.id != a.id for r in bank.search("dog puppy", k=5))
    assert [(e.op, e.old_text, e.new_text, e.actor) for e in bank.history(a.id)] == [
        ("ADD", None, FACTS[0], "user"),
        ("DELETE", FACTS[0], None, "manager"),
    ]
    with pytest.raises(UnknownMemoryError):  # deleting twice
        bank.delete(a.id)
    assert bank.get(b.id).text == FACTS[1]


def test_unknown_ids_leave_bank_unchanged(make_bank):
    bank = make_bank()
    bank.add_many(FACTS)
    before = state(bank)
    for bad in [str(uuid.uuid4()), "not-a-uuid", "3", "", 42, None]:
        for call in (
            lambda: bank.update(bad, "new text"),  # noqa: B023 - called at once
            lambda: bank.delete(bad),  # noqa: B023 - called at once
            lambda: bank.get(bad),  # noqa: B023 - called at once
            lambda: bank.history(bad),  # noqa: B023 - called at once
        ):
            with pytest.raises(UnknownMemoryError) as err:
                call()
            assert isinstance(err.value, KeyError)
    assert "unknown memory id" in str(err.value)
    assert state(bank) == before


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_rejected_bank_unchanged(make_bank, bad):
    bank = make_bank()
    m = bank.add(FACTS[0])
    before = state(bank)
    with pytest.raises(ValueError):
        bank.add(bad)
    with pytest.raises(ValueError):
        bank.update(m.id, bad)
    with pytest.raises(ValueError):
        bank.add_many([FACTS[1], bad])  # all or nothing
    with pytest.raises(ValueError):
        bank.search(bad)
    assert state(bank) == before


def test_embedding_failure_keeps_old_memory(make_bank, embedder):
    bank = make_bank()
    m = bank.add(FACTS[0])
    before = state(bank)

    class Boom(RuntimeError):
        pass

    def failing(texts):
        raise Boom("embedding service down")

    bank._embedder = type("Failing", (), {"name": embedder.name, "dim": embedder.dim, "embed": staticmethod(failing)})()
    try:
        with pytest.raises(Boom):
            bank.update(m.id, "Caroline has a cat now")
        with pytest.raises(Boom):
            bank.add("something new")
        with pytest.raises(Boom):
            bank.add_many(["x y", "z w"])
    finally:
        bank._embedder = embedder
    assert state(bank) == before
    assert bank.get(m.id).text == FACTS[0]


def test_store_failure_mid_op_is_undone(make_bank):
    """The history write fails after the memory write: the op is undone, the old memory is back."""
    bank = make_bank()
    m = bank.add(FACTS[0])
    other = bank.add(FACTS[1])
    before = state(bank)
    store = bank.store
    real_upsert = store.upsert
    hist = bank.collections[1]

    failing = {hist}

    def upsert(name, *a, **kw):
        if name in failing:
            raise OSError("disk full")
        return real_upsert(name, *a, **kw)

    store.upsert = upsert  # instance attribute shadows the method
    try:
        with pytest.raises(OSError):
            bank.update(m.id, "Caroline adopted a cat")
        with pytest.raises(OSError):
            bank.delete(other.id)
        failing.add(bank.collections[0])
        with pytest.raises(OSError):
            bank.add_many(["new one", "new two"])
    finally:
        del store.upsert
    assert state(bank) == before
    assert [e.op for e in bank.history(m.id)] == ["ADD"]


# ------------------------------------------------------------------------------------- search


def test_semantic_sanity(make_bank):
    bank = make_bank()
    dog, tax = bank.add_many(["I walked my dog in the park this morning", "I need to pay my taxes before Friday"])
    hits = bank.search("pet dog", k=2)
    assert [h.id for h in hits] == [dog.id, tax.id]
    assert hits[0].score > hits[1].score
    assert all(h.score is not None and -1.0 <= h.score <= 1.0 + 1e-5 for h in hits)


def test_search_many_matches_search(make_bank):
    bank = make_bank()
    bank.add_many(FACTS)
    queries = ["dog", "marathon running", "painting"]
    many = bank.search_many(queries, k=2)
    assert len(many) == 3
    for q, hits in zip(queries, many):
        single = bank.search(q, k=2)
        assert [h.id for h in hits] == [h.id for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], abs=1e-5)
    assert bank.search("dog", k=0) == [] and bank.search_many([], k=3) == []
    assert len(bank.search("dog", k=100)) == 4


def test_empty_bank(make_bank):
    bank = make_bank()
    assert len(bank) == 0 and bank.list() == [] and bank.search("anything") == []
    snap = bank.snapshot()
    assert snap["memories"] == [] and snap["history"] == []


# ------------------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("include_vectors", [False, True])
def test_snapshot_restore_round_trip(make_bank, tmp_path, include_vectors):
    src = make_bank()
    a, b, c, d = src.add_many(FACTS, timestamps=["t0", "t1", "t2", "t3"], metadatas=[{"n": i} for i in range(4)])
    src.update(b.id, "Caroline's accountant filed her taxes late", actor="mm")
    src.delete(c.id, actor="mm")
    snap = json.loads(json.dumps(src.snapshot(include_vectors=include_vectors)))  # plain JSON
    assert snap["namespace"] == "conv-26/Caroline"
    assert ("vector" in snap["memories"][0]) is include_vectors

    dst = make_bank(path=tmp_path / "other-store")  # a fresh bank in another store
    dst.add("something that must disappear")
    dst.restore(snap)
    assert [(m.id, m.text, m.created_at, m.updated_at, m.timestamp, m.metadata) for m in dst.list()] == [
        (m.id, m.text, m.created_at, m.updated_at, m.timestamp, m.metadata) for m in src.list()
    ]
    for mid in (a.id, b.id, c.id, d.id):
        assert dst.history(mid) == src.history(mid)
    assert dst.all_history() == src.all_history()
    for q in ["pet dog", "taxes", "painting", "marathon"]:
        s, r = src.search(q, k=3), dst.search(q, k=3)
        assert [x.id for x in r] == [x.id for x in s]
        assert [x.score for x in r] == pytest.approx([x.score for x in s], abs=1e-4)
    assert dst.snapshot() == src.snapshot()
    # and new ops keep working on restored content
    dst.update(a.id, "Rex the dog is two years old")
    assert [e.op for e in dst.history(a.id)] == ["ADD", "UPDATE"]


def test_restore_rejects_bad_snapshot_unchanged(make_bank):
    bank = make_bank()
    bank.add_many(FACTS[:2])
    before = state(bank)
    good = bank.snapshot()
    bad_snaps = [
        {"format": "something else"},
        {**good, "memories": [{"id": "nope", "text": "x"}]},
        {**good, "memories": [{"id": str(uuid.uuid4()), "text": "  "}]},
        {**good, "memories": good["memories"] + good["memories"][:1]},  # duplicate id
        {**good, "history": [{"memory_id": str(uuid.uuid4()), "op": "EXPLODE", "old_text": None,
                              "new_text": "x", "time": "t", "actor": "a"}]},
    ]
    for snap in bad_snaps:
        with pytest.raises((ValueError, TypeError)):
            bank.restore(snap)
    assert state(bank) == before


def test_clear(make_bank):
    bank = make_bank()
    m = bank.add(FACTS[0])
    bank.clear()
    assert len(bank) == 0 and bank.list() == []
    with pytest.raises(UnknownMemoryError):
        bank.history(m.id)
    bank.add(FACTS[1])
    assert len(bank) == 1


# ------------------------------------------------------------------------------------- namespaces


def test_namespace_isolation(backend, embedder, tmp_path):
    with BankFactory.open(path=str(tmp_path / "store"), backend=backend, embedder=embedder) as f:
        a, b = f["conv-26/Caroline"], f["conv-26/Melanie"]
        assert f["conv-26/Caroline"] is a
        ma = a.add("We went camping by the lake")
        mb = b.add("We went camping by the lake")
        b.add("Melanie loves pottery")
        assert [h.id for h in a.search("camping", k=10)] == [ma.id]
        assert {h.id for h in b.search("camping", k=10)} == {mb.id, b.list()[1].id}
        assert all(h.namespace == "conv-26/Melanie" for h in b.search("camping", k=10))
        for call in (lambda: a.update(mb.id, "x"), lambda: a.delete(mb.id), lambda: a.get(mb.id), lambda: a.history(mb.id)):
            with pytest.raises(UnknownMemoryError):
                call()
        a.delete(ma.id)
        assert b.get(mb.id).text == "We went camping by the lake" and len(b) == 2 and len(a) == 0
        assert f.namespaces() == ["conv-26/Caroline", "conv-26/Melanie"]
        # namespaces that slug alike are still different collections
        c = f["conv-26_Caroline"]
        assert c.collections != a.collections and len(c) == 0
        f.drop("conv-26/Melanie")
        assert "conv-26/Melanie" not in f.namespaces()


# ------------------------------------------------------------------------------------- persistence


def test_close_and_reopen_on_disk(backend, embedder, tmp_path):
    path = str(tmp_path / "disk")
    bank = open_bank("conv-30/Jon", path=path, backend=backend, embedder=embedder)
    a, b, c = bank.add_many(FACTS[:3], timestamps=["s1", "s1", "s2"])
    bank.update(a.id, "Jon adopted a puppy", actor="mm")
    bank.delete(b.id, actor="mm")
    before = State(bank)
    hist = {m: bank.history(m) for m in (a.id, b.id, c.id)}
    bank.close()

    again = open_bank("conv-30/Jon", path=path, backend=backend, embedder=embedder)
    try:
        assert State(again) == before
        assert {m: again.history(m) for m in (a.id, b.id, c.id)} == hist
        assert again.search("dog", k=1)[0].id == a.id
        again.add("a memory after reopening")
        assert len(again) == 3
    finally:
        again.close()


def test_in_memory_location(backend, embedder):
    with open_bank("conv-1/A", path=":memory:", backend=backend, embedder=embedder) as bank:
        m = bank.add(FACTS[0])
        assert bank.search("dog", k=1)[0].id == m.id
        assert len(bank) == 1
    # a second :memory: bank is a different, empty store
    with open_bank("conv-1/A", path=":memory:", backend=backend, embedder=embedder) as other:
        assert len(other) == 0


def test_closed_bank_refuses_ops(make_bank):
    from memory_r1.memory import MemoryStoreError

    bank = make_bank()
    bank.close()
    with pytest.raises(MemoryStoreError):
        bank.add("x")
    with pytest.raises(MemoryStoreError):
        bank.search("x")


def test_vectors_are_normalised_in_snapshot(make_bank):
    bank = make_bank()
    bank.add_many(FACTS[:2])
    vecs = np.array([m["vector"] for m in bank.snapshot(include_vectors=True)["memories"]], dtype=np.float32)
    assert vecs.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)


def test_concurrent_adds_and_updates(make_bank):
    """One bank used from several threads: nothing lost, every history complete."""
    from concurrent.futures import ThreadPoolExecutor

    bank = make_bank()

    def work(i: int) -> str:
        m = bank.add(f"thread {i} remembers fact number {i}")
        bank.update(m.id, f"thread {i} remembers an updated fact number {i}", actor=f"t{i}")
        return m.id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(work, range(8)))
    assert len(bank) == 8 and {m.id for m in bank.list()} == set(ids)
    for mid in ids:
        assert [e.op for e in bank.history(mid)] == ["ADD", "UPDATE"]


def test_restore_empty_history_and_cross_namespace(make_bank):
    src = make_bank("conv-1/A")
    m = src.add(FACTS[0], actor="mm")
    snap = src.snapshot()
    snap["history"] = []  # a snapshot may carry no history
    dst = make_bank("conv-2/B")
    dst.restore(snap)
    got = dst.get(m.id)
    assert got.namespace == "conv-2/B" and got.text == FACTS[0]
    assert dst.history(m.id) == []
    dst.delete(m.id, actor="x")
    assert [e.op for e in dst.history(m.id)] == ["DELETE"]
