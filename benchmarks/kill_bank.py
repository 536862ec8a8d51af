"""kill -9 against the memory bank: is every operation whole or absent after reopening?

A child process writes to a bank on disk (qdrant-client local mode or qdrant-edge), logging each
operation's start and, once it returned, the bank's content; the child is killed with SIGKILL, the
bank is reopened, and its content is compared with the last logged one. The verdicts:

* ``absent`` / ``whole``: the operation in flight left no trace / is complete (both fine);
* ``between_ops``: killed while no operation was in flight, content as logged (fine);
* ``half_applied``: the operation in flight is partly there; ``lost_or_changed``: content differs
  from what acknowledged operations made; ``reopen_failed``: the bank did not open (all failures).

Two modes (both write ``benchmarks/results/kill_bank.json``):

* ``random`` (default): a fresh ``python kill_bank.py child`` per trial doing random operations
  (add_many of 1-3, update, delete, now and then clear, restore or drop), killed from outside at a
  random moment;
* ``sweep``: deterministic, the child kills itself just before its k-th durable write (a sqlite
  commit or meta save in local mode, a shard update in edge), for every k of a fixed sequence of
  operations: every point an operation can be cut at.

    .venv/bin/python benchmarks/kill_bank.py [--mode random|sweep] [--backend qdrant edge]
        [--trials 60] [--seed 0] [--out PATH]

Vectors are the real MiniLM embeddings of a fixed pool of texts, computed once (``--vectors``
caches them); children never load torch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NAMESPACE = "conv-99/Kim"
POOL = [f"Kim {verb} {obj} in {month} {year}" for verb in ("visited", "liked", "sold", "painted", "lost")
        for obj in ("Oslo", "a red bike", "the old piano", "a sunset", "her keys", "a puppy")
        for month, year in (("May", 2022), ("June", 2023))]
FAILURES = ("half_applied", "lost_or_changed", "reopen_failed")


# ------------------------------------------------------------------------------------ content


def canon(bank) -> dict:
    """What the checks compare: live memories (id -> [text, timestamp]) and every memory's events
    (id -> [[op, old, new, actor], ...]); times and vectors left out."""
    mems = {m.id: [m.text, m.timestamp] for m in bank.list()}
    hist: dict[str, list] = {}
    for e in bank.all_history():
        hist.setdefault(e.memory_id, []).append([e.op, e.old_text, e.new_text, e.actor])
    return {"memories": mems, "history": hist}


def canon_of_snapshot(snap: dict) -> dict:
    hist: dict[str, list] = {}
    for e in snap["history"]:
        hist.setdefault(e["memory_id"], []).append([e["op"], e["old_text"], e["new_text"], e["actor"]])
    return {"memories": {m["id"]: [m["text"], m["timestamp"]] for m in snap["memories"]}, "history": hist}


def applied(before: dict, op: dict, after: dict) -> bool:
    """Whether `after` is `before` with the whole of `op`."""
    kind = op["op"]
    if kind in ("clear", "drop"):
        return after == {"memories": {}, "history": {}}
    if kind == "restore":
        return after == op["target"]
    mems, hist = dict(before["memories"]), {k: list(v) for k, v in before["history"].items()}
    if kind == "add_many":
        new = set(after["memories"]) - set(mems)
        if sorted(after["memories"][i][0] for i in new) != sorted(op["texts"]):
            return False
        for i in new:
            mems[i] = after["memories"][i]
            hist[i] = [["ADD", None, after["memories"][i][0], op["actor"]]]
    elif kind == "update":
        old = mems[op["id"]][0]
        mems[op["id"]] = [op["text"], mems[op["id"]][1]]
        hist[op["id"]] = hist.get(op["id"], []) + [["UPDATE", old, op["text"], op["actor"]]]
    elif kind == "delete":
        old = mems.pop(op["id"])[0]
        hist[op["id"]] = hist.get(op["id"], []) + [["DELETE", old, None, op["actor"]]]
    return after == {"memories": mems, "history": hist}


def read_log(path: Path) -> tuple[dict, dict | None]:
    """(last content an acknowledged op left, the op in flight or None) from a child's log."""
    state, flight = None, None
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by the kill
        rec = json.loads(line)
        if "state" in rec:
            state, flight = rec["state"], None
        else:
            flight = rec
    return state, flight


def verdict(before: dict | None, flight: dict | None, after: dict) -> str:
    if before is None:  # killed before the first state was logged: nothing was acknowledged
        before = {"memories": {}, "history": {}}
    if after == before:
        return "absent" if flight else "between_ops"
    if flight and applied(before, flight, after):
        return "whole"
    return "half_applied" if flight else "lost_or_changed"


# ------------------------------------------------------------------------------------ the child


def _embedder(vectors: Path):
    from memory_r1.memory import CachingEmbedder, MiniLMEmbedder

    emb = CachingEmbedder(MiniLMEmbedder())  # never loaded: every text is primed
    emb.prime(POOL, np.load(vectors))
    return emb


def _open(path: Path, backend: str, emb):
    from memory_r1.memory import open_bank

    return open_bank(NAMESPACE, path=str(path), backend=backend, embedder=emb)


class _Log:
    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()  # in the page cache: survives the process


def kill_before_write(k: int, backend: str) -> None:
    """SIGKILL this process just before its k-th durable write."""
    count = [0]

    def counted(fn):
        def wrapper(*a, **kw):
            count[0] += 1
            if count[0] == k:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*a, **kw)
        return wrapper

    if backend == "qdrant":
        from qdrant_client.local.persistence import CollectionPersistence
        from qdrant_client.local.qdrant_local import QdrantLocal

        CollectionPersistence.persist = counted(CollectionPersistence.persist)
        CollectionPersistence.delete = counted(CollectionPersistence.delete)
        QdrantLocal._save = counted(QdrantLocal._save)  # collection created or dropped
    else:
        from memory_r1.memory.stores import EdgeStore

        for name in ("upsert", "delete", "create_collection", "drop_collection"):
            setattr(EdgeStore, name, counted(getattr(EdgeStore, name)))
    return count


def run_ops(bank_path: Path, backend: str, vectors: Path, log_path: Path, ops, reopen) -> None:
    """Open the bank, log its content, then for each op: log it, run it, log the content."""
    emb = _embedder(vectors)
    log = _Log(log_path)
    bank = _open(bank_path, backend, emb)
    log.write({"state": canon(bank)})
    snapshots: list[dict] = []
    for op in ops(lambda: bank, snapshots):  # noqa: B023 - called within this iteration
        kind = op["op"]
        if kind == "restore":
            op = {**op, "target": canon_of_snapshot(snapshots[op["snapshot"]])}
        log.write({k: v for k, v in op.items() if k != "snapshot"})
        if kind == "add_many":
            bank.add_many(op["texts"], actor=op["actor"])
        elif kind == "update":
            bank.update(op["id"], op["text"], actor=op["actor"])
        elif kind == "delete":
            bank.delete(op["id"], actor=op["actor"])
        elif kind == "clear":
            bank.clear()
        elif kind == "restore":
            bank.restore(snapshots[op["snapshot"]])
        elif kind == "drop":
            bank.drop()
            bank = reopen(emb)
        log.write({"state": canon(bank)})
        snapshots.append(bank.snapshot(include_vectors=True))
    bank.close()


def random_ops(seed: int):
    rng = random.Random(seed)

    def gen(bank, snapshots):
        for i in range(100_000):
            ids = [m.id for m in bank().list()]
            r = rng.random()
            if len(ids) > 24 or r < 0.02:
                yield {"op": rng.choice(["clear", "drop"] if hasattr(bank(), "drop") else ["clear"])}
            elif r < 0.06 and snapshots:
                yield {"op": "restore", "snapshot": rng.randrange(len(snapshots))}
            elif r < 0.45 or not ids:
                yield {"op": "add_many", "texts": rng.sample(POOL, rng.randint(1, 3)), "actor": f"a{i}"}
            elif r < 0.75:
                yield {"op": "update", "id": rng.choice(ids), "text": rng.choice(POOL), "actor": f"a{i}"}
            else:
                yield {"op": "delete", "id": rng.choice(ids), "actor": f"a{i}"}
            if len(snapshots) > 5:
                snapshots.pop(0)
    return gen


def sweep_ops(bank, snapshots):
    """A fixed sequence touching every kind of op. `bank()`: the bank now open."""
    yield {"op": "add_many", "texts": POOL[0:3], "actor": "s1"}
    first = [m.id for m in bank().list()]
    yield {"op": "update", "id": first[0], "text": POOL[3], "actor": "s2"}
    yield {"op": "update", "id": first[0], "text": POOL[4], "actor": "s3"}
    yield {"op": "delete", "id": first[1], "actor": "s4"}
    yield {"op": "add_many", "texts": POOL[5:6], "actor": "s5"}
    yield {"op": "restore", "snapshot": 0}
    yield {"op": "add_many", "texts": POOL[6:8], "actor": "s6"}
    yield {"op": "clear"}
    yield {"op": "add_many", "texts": POOL[8:10], "actor": "s7"}
    yield {"op": "delete", "id": bank().list()[0].id, "actor": "s8"}
    if hasattr(bank(), "drop"):  # (an older checkout has no MemoryBank.drop)
        yield {"op": "drop"}
    yield {"op": "add_many", "texts": POOL[10:12], "actor": "s9"}


# ------------------------------------------------------------------------------------ the parent


def check(bank_path: Path, backend: str, vectors: Path, log_path: Path,
          previous: dict | None = None) -> tuple[str, str | None, dict | None]:
    """(verdict, detail of a failure, content after reopening). `previous`: the content the bank
    had before the child started (when the child died before logging its own first view)."""
    before, flight = read_log(log_path) if log_path.exists() else (None, None)
    try:
        bank = _open(bank_path, backend, _embedder(vectors))
    except Exception as exc:  # noqa: BLE001 - a failure to reopen is a verdict
        return "reopen_failed", f"{type(exc).__name__}: {exc}", None, (flight or {}).get("op")
    try:
        after = canon(bank)
    finally:
        bank.close()
    v = verdict(before if before is not None else previous, flight, after)
    detail = None if v not in FAILURES else json.dumps({"op": flight, "before": before, "after": after})[:2000]
    return v, detail, after, (flight or {}).get("op")


def ensure_vectors(path: Path | None) -> Path:
    path = path or Path(tempfile.gettempdir()) / "memr1-kill-bank-vectors.npy"
    if not path.exists():
        from memory_r1.memory import MiniLMEmbedder

        np.save(path, np.asarray(MiniLMEmbedder().embed(POOL), np.float32))
    return path


def sweep(backend: str, vectors: Path, work: Path) -> dict:
    """Kill before every durable write of `sweep_ops` (one forked child per write)."""
    counts: Counter = Counter()
    by_op: Counter = Counter()
    failures = []
    k, total = 1, None
    while total is None or k <= total:
        folder = work / f"sweep-{backend}-{k}"
        log_path = folder / "log.jsonl"
        folder.mkdir(parents=True)
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                count = kill_before_write(k, backend)
                run_ops(folder / "bank", backend, vectors, log_path, sweep_ops,
                        lambda emb: _open(folder / "bank", backend, emb))  # noqa: B023 - called within this iteration
                (folder / "writes").write_text(str(count[0]))
                code = 0
            except BaseException as exc:  # noqa: BLE001 - reported by the parent
                (folder / "error").write_text(f"{type(exc).__name__}: {exc}")
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status):  # no k-th write: every point was covered (or the child failed)
            if os.WEXITSTATUS(status) != 0:
                counts["child_error"] += 1
                failures.append({"kill_before_write": k, "verdict": "child_error",
                                 "detail": (folder / "error").read_text()[:2000]})
            else:
                total = int((folder / "writes").read_text())
            shutil.rmtree(folder)
            break
        v, detail, _, op = check(folder / "bank", backend, vectors, log_path)
        counts[v] += 1
        by_op[f"{op or '-'}: {v}"] += 1
        if detail:
            failures.append({"kill_before_write": k, "verdict": v, "op": op, "detail": detail})
        shutil.rmtree(folder)
        k += 1
    return {"backend": backend, "mode": "sweep", "durable_writes": total, "trials": sum(counts.values()),
            "verdicts": dict(counts), "by_op": dict(sorted(by_op.items())), "failures": failures}


def random_trials(backend: str, vectors: Path, work: Path, trials: int, seed: int, max_wait: float) -> dict:
    """`trials` children, each killed from outside at a random moment; one bank folder across trials."""
    rng = random.Random(seed)
    counts: Counter = Counter()
    by_op: Counter = Counter()
    failures = []
    bank_path = work / f"random-{backend}" / "bank"
    bank_path.parent.mkdir(parents=True)
    previous = None  # the content the last check saw
    for t in range(trials):
        log_path = bank_path.parent / f"log-{t}.jsonl"
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "child", "--backend", backend, "--path", str(bank_path),
             "--vectors", str(vectors), "--log", str(log_path), "--seed", str(seed * 100_000 + t)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started = time.monotonic()
        while not (log_path.exists() and log_path.stat().st_size) and child.poll() is None:
            if time.monotonic() - started > 120:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, max_wait))
        child.send_signal(signal.SIGKILL)
        _, err = child.communicate()
        if child.returncode != -signal.SIGKILL:
            counts["child_error"] += 1
            failures.append({"trial": t, "verdict": "child_error", "detail": err[-1000:]})
            continue
        v, detail, previous, op = check(bank_path, backend, vectors, log_path, previous)
        counts[v] += 1
        by_op[f"{op or '-'}: {v}"] += 1
        if detail:
            failures.append({"trial": t, "verdict": v, "op": op, "detail": detail})
            shutil.rmtree(bank_path, ignore_errors=True)  # start the next trial from a clean bank
            previous = None
    return {"backend": backend, "mode": "random", "trials": trials, "verdicts": dict(counts),
            "by_op": dict(sorted(by_op.items())), "failures": failures[:10]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", nargs="?", default="random", choices=["random", "sweep", "child"])
    ap.add_argument("--backend", nargs="+", default=["qdrant", "edge"])
    ap.add_argument("--trials", type=int, default=60, help="random mode: children killed per backend")
    ap.add_argument("--max-wait", type=float, default=2.0, help="random mode: kill within this many seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vectors", type=Path, default=None, help="cache of the pool's MiniLM vectors (.npy)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "kill_bank.json")
    ap.add_argument("--path", type=Path, help=argparse.SUPPRESS)  # child mode
    ap.add_argument("--log", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode == "child":
        backend = args.backend[0]
        run_ops(args.path, backend, args.vectors, args.log, random_ops(args.seed),
                lambda emb: _open(args.path, backend, emb))
        return
    vectors = ensure_vectors(args.vectors)
    work = Path(tempfile.mkdtemp(prefix="memr1-kill-", dir=args.workdir))
    started = time.perf_counter()
    try:
        runs = [sweep(b, vectors, work) if args.mode == "sweep"
                else random_trials(b, vectors, work, args.trials, args.seed, args.max_wait) for b in args.backend]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": f"SIGKILL during bank operations ({args.mode})",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in ("path", "log")},
        "runs": runs,
        "failures": sum(r["verdicts"].get(f, 0) for r in runs for f in (*FAILURES, "child_error")),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"failures": result["failures"], "runs": [{k: r[k] for k in ("backend", "mode", "trials", "verdicts")}
                                                                  for r in runs], "wall_s": result["wall_s"]}, indent=1))


if __name__ == "__main__":
    main()
