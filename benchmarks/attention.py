"""Causal prefill attention on CPU: PyTorch's fused SDPA kernel against attention written as
blocked matmuls, at the shape of an answer prompt of the CPU default (SmolLM2-135M: 9 query and 3
key-value heads of 64, one ~2,200-token row).

Why it exists: answering dominates `memr1 eval` on 2 cores and is bound by prefill, and the fused
kernel runs far below the bf16 matmul rate. This checks whether a hand-written attention made of
bf16 matmuls (scores to fp32, masked softmax, probabilities back to bf16) would be faster. Each
variant's time per layer, its rate over the causal QK^T + AV FLOPs, and its largest error against
fp32 SDPA are written to ``benchmarks/results/attention.json``.

    .venv/bin/python benchmarks/attention.py [--tokens 2157] [--reps 5] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2157, help="prompt length (the test split's mean)")
    ap.add_argument("--heads", type=int, default=9)
    ap.add_argument("--kv-heads", type=int, default=3)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--blocks", type=int, nargs="+", default=[128, 256, 512], help="query block sizes")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "attention.json")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    t, h, hkv, d = args.tokens, args.heads, args.kv_heads, args.head_dim
    g = h // hkv
    q = torch.randn(1, h, t, d, dtype=torch.bfloat16)
    k = torch.randn(1, hkv, t, d, dtype=torch.bfloat16)
    v = torch.randn(1, hkv, t, d, dtype=torch.bfloat16)
    scale = d**-0.5

    def sdpa(dtype):
        return lambda: F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), is_causal=True,
                                                      scale=scale, enable_gqa=True)

    def blocked(bs):
        def run():
            out = torch.empty(1, hkv, g, t, d, dtype=q.dtype)
            qg = q.view(1, hkv, g, t, d)
            for s in range(0, t, bs):
                e = min(t, s + bs)
                scores = torch.matmul(qg[:, :, :, s:e], k[:, :, None, :e].transpose(-1, -2)).float() * scale
                scores.masked_fill_(~torch.ones(e - s, e, dtype=torch.bool).tril(s), float("-inf"))
                probs = torch.softmax(scores, -1).to(v.dtype)
                out[:, :, :, s:e] = torch.matmul(probs, v[:, :, None, :e])
            return out.view(1, h, t, d)
        return run

    ref = sdpa(torch.float32)()
    flops = 4 * (t * (t + 1) / 2) * d * h  # QK^T and AV over the causal half
    variants = {"sdpa_bf16": sdpa(torch.bfloat16), "sdpa_fp32": sdpa(torch.float32)}
    variants.update({f"blocked_bf16_{bs}": blocked(bs) for bs in args.blocks})
    results = {}
    for name, fn in variants.items():
        out = fn()  # warm-up
        best = float("inf")
        for _ in range(args.reps):
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        results[name] = {
            "ms_per_layer": round(best * 1e3, 2),
            "gflops": round(flops / best / 1e9, 1),
            "max_abs_err_vs_fp32": round((out.float() - ref).abs().max().item(), 5),
        }
        print(f"{name:>18}: {best * 1e3:7.1f} ms/layer {flops / best / 1e9:6.0f} GFLOP/s "
              f"err {results[name]['max_abs_err_vs_fp32']}", file=sys.stderr)

    doc = {
        "benchmark": "attention",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0],
                 "torch": torch.__version__, "threads": torch.get_num_threads()},
        "shape": {"tokens": t, "heads": h, "kv_heads": hkv, "head_dim": d},
        "causal_flops_per_layer": flops,
        "best_of": args.reps,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
