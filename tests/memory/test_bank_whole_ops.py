"""Bank operations are whole or absent: cut short by SIGKILL at every durable write of a sequence
(and at random moments), or by an exception, reopening shows each op complete or not there; two
processes never share an on-disk edge folder."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from memory_r1.memory import INTENT_ID, BankFactory, MemoryStoreError, UnknownMemoryError, open_bank
from memory_r1.memory.stores import EdgeStore

from .conftest import HAVE_EDGE
from .test_memory_bank import State

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "benchmarks" / "kill_bank.py"


def _harness():
    spec = importlib.util.spec_from_file_location("kill_bank", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def vectors(tmp_path_factory, embedder) -> Path:
    path = tmp_path_factory.mktemp("kill") / "vectors.npy"
    np.save(path, np.asarray(embedder.embed(_harness().POOL), np.float32))
    return path


def _run_harness(mode: str, backend: str, vectors: Path, out: Path, *extra: str) -> dict:
    res = subprocess.run([sys.executable, str(HARNESS), mode, "--backend", backend, "--vectors", str(vectors),
                          "--out", str(out), "--workdir", str(out.parent), *extra],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("backend", ["qdrant", pytest.param("edge", marks=pytest.mark.skipif(not HAVE_EDGE, reason="no edge"))])
def test_kill_before_every_durable_write(backend, vectors, tmp_path):
    """Every point an op of the sequence (add_many, update, delete, restore, clear, drop) can be cut
    at: the child kills itself before its k-th durable write, for every k."""
    result = _run_harness("sweep", backend, vectors, tmp_path / "sweep.json")
    run = result["runs"][0]
    assert result["failures"] == 0, json.dumps(run["failures"])[:3000]
    assert run["trials"] == run["durable_writes"] > 30
    # the kills did land inside ops, and both outcomes occur (rolled back, and completed clears/drops)
    assert run["verdicts"].get("absent", 0) > 10 and run["verdicts"].get("whole", 0) > 3


@pytest.mark.parametrize("backend", ["qdrant", pytest.param("edge", marks=pytest.mark.skipif(not HAVE_EDGE, reason="no edge"))])
def test_kill_at_random_moments(backend, vectors, tmp_path):
    result = _run_harness("random", backend, vectors, tmp_path / "random.json", "--trials", "2", "--max-wait", "1.0")
    assert result["failures"] == 0, json.dumps(result["runs"][0]["failures"])[:3000]
    assert result["runs"][0]["trials"] == 2


def test_harness_sees_half_applied_ops():
    """The checker is not blind: a half-done add_many or a delete without its event is a failure."""
    kb = _harness()
    before = {"memories": {"a": ["x", ""]}, "history": {"a": [["ADD", None, "x", "u"]]}}
    add = {"op": "add_many", "texts": ["p", "q", "r"], "actor": "m"}
    one_of_three = {"memories": {**before["memories"], "b": ["p", ""]},
                    "history": {**before["history"], "b": [["ADD", None, "p", "m"]]}}
    assert kb.verdict(before, add, one_of_three) == "half_applied"
    deleted_no_event = {"memories": {}, "history": {"a": [["ADD", None, "x", "u"]]}}
    assert kb.verdict(before, {"op": "delete", "id": "a", "actor": "m"}, deleted_no_event) == "half_applied"
    whole = {"memories": {}, "history": {"a": [["ADD", None, "x", "u"], ["DELETE", "x", None, "m"]]}}
    assert kb.verdict(before, {"op": "delete", "id": "a", "actor": "m"}, whole) == "whole"
    assert kb.verdict(before, None, {"memories": {}, "history": {}}) == "lost_or_changed"


# ----------------------------------------------------------------------------- in-process failures


def _fail_on(store, monkeypatch, after: int, once: bool = False):
    """Make the store's writes fail (OSError) from the `after`+1-th on, or only that one if `once`."""
    calls = {"n": 0}
    for name in ("upsert", "delete"):
        real = getattr(store, name)

        def wrapped(*a, _real=real, **kw):
            calls["n"] += 1
            if calls["n"] > after and not (once and calls["n"] > after + 1):
                raise OSError("disk full")
            return _real(*a, **kw)
        monkeypatch.setattr(store, name, wrapped)
    return calls


def test_failure_after_the_first_write_is_rolled_back(make_bank, monkeypatch):
    bank = make_bank()
    a, b = bank.add_many(["Caroline adopted a dog", "Caroline moved to Oslo"])
    before = State(bank)
    snap = bank.snapshot()
    ops = [lambda: bank.update(a.id, "Caroline adopted a cat"), lambda: bank.delete(b.id),
           lambda: bank.restore({**snap, "memories": []})]
    if bank.store.atomic_points < 3:  # three points are more than one all-or-nothing write here
        ops.append(lambda: bank.add_many(["one", "two", "three"]))
    for op in ops:
        with monkeypatch.context() as m:
            calls = _fail_on(bank.store, m, after=2, once=True)  # the intent record and the first write go through
            with pytest.raises(OSError):
                op()
            assert calls["n"] > 3  # it did write, then undo
        assert State(bank) == before


def test_undo_that_fails_too_is_applied_before_anything_else(make_bank, monkeypatch, tmp_path, backend, embedder):
    bank = make_bank()
    a = bank.add("Caroline adopted a dog")
    before = bank.snapshot()
    with monkeypatch.context() as m:
        _fail_on(bank.store, m, after=2)  # the record and the memory write; history write and undo fail
        with pytest.raises(OSError):
            bank.update(a.id, "Caroline adopted a cat")
        assert bank.get(a.id).text == "Caroline adopted a cat"  # half done, for now
        with pytest.raises(MemoryStoreError, match="the update cut short could not be rolled back"):
            bank.add("Caroline likes coffee")  # refused while the record cannot be applied
    # the next op first applies the record: the update is rolled back, then the add happens
    c = bank.add("Caroline likes tea")
    assert bank.get(a.id).text == "Caroline adopted a dog"
    assert [e.op for e in bank.history(a.id)] == ["ADD"]
    assert {m.id for m in bank.list()} == {a.id, c.id}
    assert before["memories"][0]["text"] == "Caroline adopted a dog"


def test_left_record_is_applied_on_open(tmp_path, backend, embedder, monkeypatch):
    path = tmp_path / "store"
    bank = open_bank("conv-1/A", path=str(path), backend=backend, embedder=embedder)
    a = bank.add("Caroline adopted a dog")
    with monkeypatch.context() as m:
        _fail_on(bank.store, m, after=2)
        with pytest.raises(OSError):
            bank.delete(a.id)
    assert a.id not in bank  # the memory write went through; history and undo did not
    bank.close()
    again = open_bank("conv-1/A", path=str(path), backend=backend, embedder=embedder)
    try:
        assert again.get(a.id).text == "Caroline adopted a dog"
        assert [e.op for e in again.history(a.id)] == ["ADD"]
        assert not again.store.retrieve(again.collections[1], [INTENT_ID])
    finally:
        again.close()


def test_intent_record_is_invisible(make_bank):
    bank = make_bank()
    bank.add("Caroline adopted a dog")
    bank._store.upsert(bank.collections[1], [INTENT_ID], np.ones((1, 1), np.float32),
                       [{"kind": "intent", "op": "update", "rollback": True, "steps": []}])
    assert len(bank.list()) == 1 and len(bank.snapshot()["memories"]) == 1
    assert all(e.memory_id != INTENT_ID for e in bank.all_history())
    with pytest.raises(UnknownMemoryError):
        bank.get(INTENT_ID)


def test_drop_is_whole_and_namespace_starts_afresh(tmp_path, backend, embedder):
    f = BankFactory.open(path=str(tmp_path / "s"), backend=backend, embedder=embedder)
    try:
        f.bank("c/A").add("Caroline adopted a dog")
        f.bank("c/B").add("Melanie paints")
        f.drop("c/A")
        assert f.namespaces() == ["c/B"]
        assert f.bank("c/A").list() == [] and f.bank("c/A").all_history() == []
        f.drop("never/opened")  # nothing there: nothing to do
    finally:
        f.close()


# ----------------------------------------------------------------------------- edge: one process


CREATE = textwrap.dedent("""
    import sys, time
    from memory_r1.memory import MemoryStoreError
    from memory_r1.memory.stores import EdgeStore
    go = float(sys.argv[2])
    while time.time() < go:
        pass
    try:
        s = EdgeStore(sys.argv[1])
        s.create_collection("mr1_mem_x", 4)
        s.upsert("mr1_mem_x", ["00000000-0000-4000-8000-000000000001"], [[1, 0, 0, 0]], [{"t": sys.argv[3]}])
        time.sleep(0.5)
        s.close()
        print("won")
    except MemoryStoreError as exc:
        print("refused:", exc)
""")


@pytest.mark.skipif(not HAVE_EDGE, reason="qdrant-edge-py not installed")
def test_edge_folder_is_one_process_at_a_time(tmp_path):
    import time

    for trial in range(2):
        folder = tmp_path / f"fresh-{trial}"
        go = time.time() + 2.5  # both start together (imports done)
        procs = [subprocess.Popen([sys.executable, "-c", CREATE, str(folder), str(go), str(i)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        lines = sorted(o.strip() for o, _ in outs)
        assert all(p.returncode == 0 for p in procs), [e[-500:] for _, e in outs]
        assert lines[1] == "won" and lines[0].startswith("refused: qdrant-edge storage at") and "\n" not in lines[0], lines
        with EdgeStore(folder) as s:
            assert s.count("mr1_mem_x") == 1
    # and while this process holds a folder, another one cannot open it
    with EdgeStore(tmp_path / "held"):
        res = subprocess.run([sys.executable, "-c", CREATE, str(tmp_path / "held"), "0", "x"],
                             capture_output=True, text=True, timeout=120)
        assert res.stdout.startswith("refused: qdrant-edge storage at") and "in use by another process" in res.stdout
    assert os.path.exists(tmp_path / "held" / ".memr1-edge.lock")
