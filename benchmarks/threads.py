"""Thread policy, measured: 1 vs 2 torch threads for CPU generation under no, light and heavy load.

For each load level (a second process keeping ``--loads`` cores busy: 0, ~0.5 and a full core, made
by a busy loop with that duty cycle over 20 ms periods) and each OpenMP wait policy (the default,
which spins before sleeping, and ``PASSIVE``), a fresh child process loads SmolLM2-135M (the
project's HF backend, dtype ``auto`` unless ``--dtype``) and times the same generation work with 1
and with 2 threads, interleaved, ``--reps`` times each:

* ``prefill``: 8 prompts of ~600 tokens, 8 new tokens (prompt-bound, like the answer stage);
* ``decode``: 8 short prompts, 48 new tokens (decode-bound, like the manager stage).

It writes one JSON (default ``benchmarks/results/threads-<kind>.json``) with every timing, the
median per cell, the 2-thread speedup per load and policy, and the CPU profile it ran on; the rule
in :func:`memory_r1.threads.auto_num_threads` is read off these tables (see benchmarks/README.md).

    .venv/bin/python benchmarks/threads.py                      # ~5 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def burn(duty: float, stop: mp.Event) -> None:  # pragma: no cover - a load generator
    period = 0.02
    while not stop.is_set():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < duty * period:
            pass
        rest = period - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)


def start_load(cores: float) -> tuple[list, mp.Event]:
    stop = mp.Event()
    procs = []
    left = cores
    while left > 1e-6:
        duty = min(1.0, left)
        p = mp.Process(target=burn, args=(duty, stop), daemon=True)
        p.start()
        procs.append(p)
        left -= duty
    return procs, stop


def child(args: argparse.Namespace) -> None:
    import torch

    from memory_r1.llm import SamplingParams
    from memory_r1.llm.hf import HFBackend

    llm = HFBackend("smollm2-135m", device="cpu", dtype=args.dtype, num_threads=2, batch_size=8)
    filler = "We talked about the trip to the lake, the new job and the dog. " * 9
    prefill = [[{"role": "user", "content": f"{i}: {filler} What did we talk about?"}] for i in range(8)]
    decode = [[{"role": "user", "content": f"Tell me a story about the number {i}."}] for i in range(8)]
    work = {
        "prefill": (prefill, SamplingParams(max_new_tokens=8)),
        "decode": (decode, SamplingParams(max_new_tokens=48)),
    }
    for prompts, params in work.values():  # warm-up
        llm.generate(prompts[:2], params)
    out: dict = {"dtype": str(llm.dtype).replace("torch.", ""), "times": {}}
    for _ in range(args.reps):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, (prompts, params) in work.items():
                t0 = time.perf_counter()
                llm.generate(prompts, params)
                out["times"].setdefault(f"{name}/{threads}", []).append(round(time.perf_counter() - t0, 3))
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loads", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    ap.add_argument("--policies", nargs="+", default=["default", "PASSIVE"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    sys.path.insert(0, str(HERE.parent / "src"))
    from memory_r1 import hardware

    prof = hardware.profile()
    dtype, reason = hardware.resolve_cpu_dtype(args.dtype)
    kind = hardware.kind_name(prof)
    cells: dict = {}
    for policy in args.policies:
        for load in args.loads:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            else:
                env.pop("OMP_WAIT_POLICY", None)
            procs, stop = start_load(load)
            try:
                t0 = time.perf_counter()
                res = subprocess.run(
                    [sys.executable, __file__, "--child", "--reps", str(args.reps), "--dtype", args.dtype],
                    env=env, capture_output=True, text=True, check=True,
                )
            finally:
                stop.set()
                for p in procs:
                    p.join(timeout=5)
            line = next(ln for ln in res.stdout.splitlines() if ln.startswith("RESULT "))
            r = json.loads(line[len("RESULT "):])
            med = {k: round(statistics.median(v), 3) for k, v in r["times"].items()}
            cell = {"policy": policy, "load_cores": load, "dtype": r["dtype"], "times": r["times"], "median_s": med,
                    "speedup_2_over_1": {w: round(med[f"{w}/1"] / med[f"{w}/2"], 2) for w in ("prefill", "decode")},
                    "wall_s": round(time.perf_counter() - t0, 1)}
            cells[f"{policy}/{load}"] = cell
            print(f"{policy:8s} load {load:.1f}: " + ", ".join(f"{k} {v:.2f}s" for k, v in med.items())
                  + f"  2-thread speedup {cell['speedup_2_over_1']}", flush=True)
    result = {
        "benchmark": "threads",
        "cpu": {**prof.to_json(), "kind": kind},
        "dtype": dtype,
        "dtype_reason": reason,
        "loadavg_end": os.getloadavg(),
        "notes": args.note,
        "cells": cells,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = args.out or HERE / "results" / f"threads-{kind}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
