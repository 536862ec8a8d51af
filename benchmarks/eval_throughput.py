"""Throughput of `memr1 eval` on the CPU default: turns ingested per second, questions answered per
minute, generated tokens per second, the share of wall time per stage, and generation speed beside
this machine's compute floor (model FLOPs per token over the matmul rate, in the dtype the run used,
measured in the same process).

    python benchmarks/eval_throughput.py [--split val] [--limit-questions N] [--out benchmarks/results/eval_throughput.json]

It also projects the full test split (5,094 turns, 1,307 questions) from the measured rates.
``--from-run DIR`` reads a finished ``memr1 eval`` folder (e.g. the main job's
runs/eval/smollm2-135m-val) instead of evaluating again; its wall time is the sum of its stages,
over every process that worked on the folder (a resumed run included). ``--note`` lines are kept
in the JSON (what ran, on which machine, anything the clocks missed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="val")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--limit-questions", type=int, default=None)
    ap.add_argument("--judge", default=None, help="judge backend (default: the recipe's)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "eval_throughput.json")
    ap.add_argument("--from-run", type=Path, default=None, help="a finished `memr1 eval` folder to read")
    ap.add_argument("--note", action="append", default=[], help="a line about the run, kept in the JSON")
    ap.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    args = ap.parse_args()

    from memory_r1.data import load_split
    from memory_r1.eval.folder import read_predictions
    from memory_r1.eval.runner import EvalRequest, ingest_batches, run_eval

    if args.from_run:
        out = args.from_run
        summary = json.loads((out / "summary.json").read_text())
        preds = read_predictions(out / "predictions.jsonl")
        manifest = json.loads((out / "manifest.json").read_text())
        wall = sum(summary["timings_s"].values())
        args.split, args.backbone = summary["split"], summary["backbone"]
    else:
        work = Path(tempfile.mkdtemp(prefix="memr1-bench-eval-"))
        t0 = time.perf_counter()
        try:
            out = run_eval(EvalRequest(
                backbone=args.backbone, split=args.split, limit_questions=args.limit_questions,
                judge=args.judge, out=work / "run", overrides=args.overrides, show_progress=False,
            ))
            wall = time.perf_counter() - t0
            summary = json.loads((out / "summary.json").read_text())
            preds = read_predictions(out / "predictions.jsonl")
            manifest = json.loads((out / "manifest.json").read_text())
        finally:
            shutil.rmtree(work, ignore_errors=True)

    timings = summary["timings_s"]
    batches = ingest_batches(summary["ingest"])
    ingest = batches[0] if len(batches) == 1 else {"batches": batches}
    turns = sum(b.get("turns", 0) for b in batches)
    gen_tokens = sum(b.get("completion_tokens", 0) for b in batches) + sum(p["completion_tokens"] for p in preds)
    prompt_tokens = sum(b.get("prompt_tokens", 0) for b in batches) + sum(p["prompt_tokens"] for p in preds)
    llm_s = timings["ingest_s"] + timings["answer_s"]
    n_q = len(preds)

    from memory_r1 import hardware

    cpu = manifest.get("host", {}).get("cpu") or {}
    dtype = cpu.get("dtype") or hardware.resolve_cpu_dtype(manifest["config"]["llm"].get("dtype", "auto"))[0]
    import torch

    # the model's own matmul shape (SmolLM2's MLP linear, 256 rows), in the run's dtype, best of ~0.5 s
    gflops = hardware.matmul_gflops(getattr(torch, dtype), budget_s=0.5)
    from memory_r1.llm import load_llm  # parameter count of the backbone actually used

    llm = load_llm("hf", args.backbone, dtype=dtype)
    n_params = sum(p.numel() for p in llm.model.parameters())
    llm.close()
    flops_per_token = 2 * n_params
    floor_tok_s = gflops * 1e9 / flops_per_token  # tokens/s if every matmul ran at the measured rate

    split = load_split(args.split)
    test = load_split("test").stats()
    turns_per_s = turns / timings["ingest_s"] if timings["ingest_s"] else None
    q_per_min = n_q / ((timings["answer_s"] + timings["judge_s"]) / 60) if n_q else None
    projected = None
    if turns_per_s and q_per_min:
        projected = test["turns"] / turns_per_s + test["qa"] / q_per_min * 60 + timings["load_s"]

    result = {
        "benchmark": "eval_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                 "cpu_kind": hardware.kind_name(hardware.profile()), "cpu_of_run": cpu},
        "dtype": dtype,
        "quantize": manifest["config"]["llm"].get("quantize"),
        "versions": manifest["versions"],
        "split": args.split,
        "source": str(args.from_run) if args.from_run else "fresh run in a temporary folder",
        "conversations": sorted(summary["ingest"]) or split.conversation_ids,
        "questions": n_q,
        "turns_ingested": turns,
        "wall_s": round(wall, 1),
        "stage_s": timings,
        "stage_share": {k: round(v / wall, 3) for k, v in timings.items()},
        "turns_per_s": turns_per_s and round(turns_per_s, 3),
        "questions_per_min": q_per_min and round(q_per_min, 2),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": gen_tokens,
        "tokens_per_s_processed": round((prompt_tokens + gen_tokens) / llm_s, 1) if llm_s else None,
        "generated_tokens_per_s": round(gen_tokens / llm_s, 2) if llm_s else None,
        "compute_floor": {
            "matmul_dtype": dtype,
            "matmul_shape": list(hardware.SHAPE),
            "matmul_gflops": round(gflops, 1),
            "params": n_params,
            "flops_per_token": flops_per_token,
            "floor_tokens_per_s": round(floor_tok_s, 1),
            "share_of_floor": round((prompt_tokens + gen_tokens) / llm_s / floor_tok_s, 3) if llm_s else None,
        },
        "projected_test_split_s": projected and round(projected, 0),
        "summary_rows": summary["rows"],
        "notes": args.note,
        "ingest_stats": ingest,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("wall_s", "stage_s", "turns_per_s", "questions_per_min",
                                               "generated_tokens_per_s", "compute_floor", "projected_test_split_s")},
                     indent=2))


if __name__ == "__main__":
    main()
