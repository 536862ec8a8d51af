"""Vector-store layer: the protocol on both backends, the one-client-per-path registry, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pytest

from memory_r1.memory import (
    EdgeStore,
    MemoryStoreError,
    QdrantStore,
    VectorStore,
    collection_name,
    default_store_path,
    open_bank,
    open_store,
)


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def store(backend, tmp_path):
    s = open_store(str(tmp_path / "s"), backend=backend)
    yield s
    s.close()


def test_store_contract(store):
    assert isinstance(store, VectorStore)
    rng = np.random.default_rng(0)
    assert store.create_collection("c1", 16) is True
    assert store.create_collection("c1", 16) is False  # idempotent
    assert store.has_collection("c1") and not store.has_collection("nope")
    ids = [str(uuid.uuid4()) for _ in range(50)]
    vecs = unit(rng, 50)
    store.upsert("c1", ids, vecs, [{"i": i, "text": f"t{i}"} for i in range(50)])
    assert store.count("c1") == 50
    # retrieve: order of the request, missing ids skipped, vectors on request
    got = store.retrieve("c1", [ids[3], str(uuid.uuid4()), ids[1]], with_vectors=True)
    assert [p.id for p in got] == [ids[3], ids[1]]
    assert got[0].payload == {"i": 3, "text": "t3"}
    np.testing.assert_allclose(got[0].vector, vecs[3], atol=1e-6)
    assert store.retrieve("c1", [ids[0]])[0].vector is None
    # search == exact numpy top-k
    q = unit(rng, 3)
    for qi, hits in zip(q, store.search_batch("c1", q, 5)):
        want = np.argsort(-(vecs @ qi))[:5]
        assert [h.id for h in hits] == [ids[i] for i in want]
        assert [h.score for h in hits] == pytest.approx((vecs @ qi)[want].tolist(), abs=1e-5)
        assert [h.id for h in store.search("c1", qi, 5)] == [h.id for h in hits]
    # scroll sees everything, across pages
    assert sorted(p.id for p in store.scroll("c1", batch_size=7)) == sorted(ids)
    # upsert overwrites, delete ignores missing ids
    store.upsert("c1", ids[:1], vecs[1:2], [{"i": -1}])
    assert store.retrieve("c1", ids[:1])[0].payload == {"i": -1}
    store.delete("c1", [ids[0], str(uuid.uuid4())])
    assert store.count("c1") == 49
    store.create_collection("h", 1, distance="dot")
    assert {"c1", "h"} <= set(store.list_collections())
    store.drop_collection("c1")
    assert not store.has_collection("c1") and store.has_collection("h")
    store.drop_collection("c1")  # dropping twice is fine


def test_store_persists(backend, tmp_path):
    path = str(tmp_path / "p")
    s = open_store(path, backend=backend)
    s.create_collection("c", 4)
    s.upsert("c", [str(uuid.uuid4())], np.ones((1, 4)), [{"a": 1}])
    s.close()
    s2 = open_store(path, backend=backend)
    try:
        assert s2.count("c") == 1 and [p.payload for p in s2.scroll("c")] == [{"a": 1}]
    finally:
        s2.close()


def test_qdrant_one_client_per_path(tmp_path):
    a = QdrantStore(tmp_path / "q")
    b = QdrantStore(str(tmp_path / "q") + "/")  # same folder, spelled differently
    try:
        assert a.client is b.client
        a.create_collection("c", 4)
        a.close()
        assert b.has_collection("c")  # still open for the other handle
    finally:
        b.close()
    with pytest.raises(MemoryStoreError):
        b.count("c")  # closed handle
    c = QdrantStore(tmp_path / "q")  # last close released the folder: it can be opened again
    try:
        assert c.has_collection("c")
    finally:
        c.close()


def test_edge_one_shard_set_per_path(tmp_path):
    pytest.importorskip("qdrant_edge")
    a, b = EdgeStore(tmp_path / "e"), EdgeStore(tmp_path / "e")
    try:
        a.create_collection("c", 4)
        a.upsert("c", [str(uuid.uuid4())], np.ones((1, 4)), [{}])
        assert b.count("c") == 1
    finally:
        a.close()
        b.close()


def test_banks_on_same_path_share_client(tmp_path, embedder):
    b1 = open_bank("conv-1/A", path=str(tmp_path / "q"), embedder=embedder)
    b2 = open_bank("conv-1/B", path=str(tmp_path / "q"), embedder=embedder)
    try:
        assert b1.store.client is b2.store.client
    finally:
        b1.close()
        b2.close()


def test_local_folder_locked_by_other_process(tmp_path):
    """Another process holding the folder -> a MemoryStoreError that says so, not a raw traceback."""
    path = tmp_path / "locked"
    holder = QdrantStore(path)
    try:
        code = textwrap.dedent(
            f"""
            from memory_r1.memory import QdrantStore, MemoryStoreError
            try:
                QdrantStore({str(path)!r})
            except MemoryStoreError as e:
                print("MemoryStoreError:", e)
            """
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "MemoryStoreError:" in out.stdout and "in use by another process" in out.stdout, out.stderr
        assert str(path) in out.stdout
    finally:
        holder.close()


def test_unreachable_server_names_url():
    url = "http://127.0.0.1:1"
    with pytest.raises(MemoryStoreError) as err:
        QdrantStore(url=url, timeout=2)
    assert url in str(err.value)
    with pytest.raises(MemoryStoreError):
        open_bank("conv-1/A", url=url, embedder=None)


def test_open_store_arguments(tmp_path):
    with pytest.raises(ValueError):
        open_store(str(tmp_path), backend="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        open_store(backend="edge", url="http://localhost:6333")
    with pytest.raises(ValueError):
        QdrantStore(str(tmp_path), url="http://localhost:6333")


def test_default_store_path(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMR1_MEMORY_DIR", str(tmp_path))
    assert default_store_path("edge") == tmp_path / "edge"


def test_collection_names_are_safe_and_deterministic():
    import re

    names = {collection_name(ns) for ns in ["conv-26/Caroline", "conv-26_Caroline", "conv 26/Caroline", "ü/../x", "a" * 300]}
    assert len(names) == 5
    for n in names:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,100}", n), n
    assert collection_name("conv-26/Caroline") == collection_name("conv-26/Caroline")
    assert collection_name("conv-26/Caroline", "hist") != collection_name("conv-26/Caroline", "mem")
    with pytest.raises(ValueError):
        collection_name("  ")
