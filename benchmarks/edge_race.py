"""Two processes open the same fresh qdrant-edge bank folder at the same moment, N times.

Each process creates a bank (``open_bank`` on the edge backend: two collections and the meta
record) and adds a memory. Wanted: one wins, the other gets one clear ``MemoryStoreError`` line
saying the folder is in use (``one_won_clear_line``); otherwise ``one_won_engine_text`` (the loser
reports the engine's own error), ``one_won_other_error`` (not an error of the memory layer),
``both_failed`` or ``both_won``.

    .venv/bin/python benchmarks/edge_race.py [--tries 20] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT = "Ann moved to Oslo"

CHILD = f"TEXT = {TEXT!r}\n" + textwrap.dedent("""
    import sys, time
    import numpy as np
    from memory_r1.memory import CachingEmbedder, MemoryBankError, MiniLMEmbedder, open_bank

    embedder = CachingEmbedder(MiniLMEmbedder())  # primed with the real vector: torch never loads
    embedder.prime([TEXT], np.load(sys.argv[4]))
    go = float(sys.argv[2])
    while time.time() < go:
        pass
    try:
        bank = open_bank("conv-1/Ann", path=sys.argv[1], backend="edge", embedder=embedder)
        bank.add(TEXT, actor=sys.argv[3])
        time.sleep(0.3)
        bank.close()
        print("won")
    except MemoryBankError as exc:
        print("refused: " + " ".join(str(exc).split()))
    except Exception as exc:
        print("other: " + type(exc).__name__ + ": " + " ".join(str(exc).split())[:300])
""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tries", type=int, default=20)
    ap.add_argument("--lead", type=float, default=2.5, help="seconds given to both children to import")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "edge_race.json")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memr1-race-"))
    import numpy as np

    from memory_r1.memory import MiniLMEmbedder

    vectors = work / "vector.npy"
    np.save(vectors, np.asarray(MiniLMEmbedder().embed([TEXT]), np.float32))
    outcomes: Counter = Counter()
    examples: dict[str, list[str]] = {}
    try:
        for t in range(args.tries):
            folder = work / f"bank-{t}"
            go = time.time() + args.lead
            procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(folder), str(go), f"p{i}", str(vectors)],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
            outs = [p.communicate(timeout=300) for p in procs]
            lines = sorted((o.strip().splitlines() or [f"crash: {e.strip()[-300:]}"])[-1] for o, e in outs)
            won = sum(ln == "won" for ln in lines)
            clear = sum(ln.startswith("refused: ") and "in use by another process" in ln for ln in lines)
            kind = ("one_won_clear_line" if won == 1 and clear == 1 else
                    "one_won_engine_text" if won == 1 and any(ln.startswith("refused: ") for ln in lines) else
                    "both_won" if won == 2 else "both_failed" if won == 0 else "one_won_other_error")
            outcomes[kind] += 1
            examples.setdefault(kind, lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "benchmark": "two processes creating the same fresh qdrant-edge bank folder together",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "tries": args.tries,
        "outcomes": dict(outcomes),
        "examples": examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
