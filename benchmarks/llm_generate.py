"""Prompt-processing and generation speed of the HF backend on SmolLM2-135M, bf16 vs fp32.

For each dtype, batch size (1, 8) and prompt length (~500, ~2000 tokens) it measures
- prefill: one forward pass over the whole batch of prompts (what ``generate`` does first), tokens/s
  = batch * prompt_len / seconds;
- decode: N - 1 greedy one-token forward steps on the prefill's KV cache (what ``generate`` loops
  over, without its logits-processing overhead), tokens/s = batch * (N - 1) / seconds;
each the best of ``--reps`` runs, the bf16 and fp32 runs interleaved so both see the same load of a
shared machine;
and the compute floor of each: 2 * params * tokens FLOPs over the bf16 (and fp32) matmul GFLOP/s
measured on this machine in the same run (prefill counts the non-embedding
parameters, since only the last position goes through the LM head; decode counts the LM head too;
the ``*_with_attention`` floors add the QK^T / AV FLOPs of causal attention).

It also times a first load (GGUF de-quantisation into a fresh cache) and a cached load, each in a
fresh process. Writes ``benchmarks/results/llm_generate.json``.

    .venv/bin/python benchmarks/llm_generate.py [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger("llm_generate")
HERE = Path(__file__).resolve().parent

WORDS = (
    "memory agent conversation event date friend city travel music book dinner family project "
    "remember answer question yesterday weekend morning garden painting concert school job "
    "birthday dog cat hiking recipe movie plan visit photo story coffee market river mountain"
).split()


def matmul_gflops(
    dtype, n: int = 2048, m: int | None = None, k: int | None = None, seconds: float = 2.0
) -> float:
    """Sustained GFLOP/s of an (n x k) @ (k x m) matmul in ``dtype`` (best of repeated timings)."""
    import torch

    m = m or n
    k = k or n
    a = torch.randn(n, k).to(dtype)
    b = torch.randn(k, m).to(dtype)
    for _ in range(3):
        torch.matmul(a, b)
    best = float("inf")
    t_end = time.perf_counter() + seconds
    reps = 0
    while time.perf_counter() < t_end or reps < 5:
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return 2.0 * n * m * k / best / 1e9


def make_prompts(tokenizer, batch: int, target_tokens: int, seed: int = 0) -> list[list[int]]:
    """``batch`` different chat prompts of exactly ``target_tokens`` tokens each (chat-templated)."""
    import random

    rng = random.Random(seed * 1000 + target_tokens)
    out = []
    for _ in range(batch):
        words = " ".join(rng.choice(WORDS) for _ in range(target_tokens * 2))
        body = tokenizer(words, add_special_tokens=False)["input_ids"]
        empty = tokenizer.apply_chat_template(
            [{"role": "user", "content": ""}], add_generation_prompt=True, tokenize=False
        )
        overhead = len(tokenizer(empty, add_special_tokens=False)["input_ids"])
        content = tokenizer.decode(body[: target_tokens - overhead], clean_up_tokenization_spaces=False)
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:target_tokens]
        out.append(ids)
    return out


def count_params(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    return {
        "total": total,
        "embedding": emb,
        "non_embedding": total - emb,
        "layers": cfg.num_hidden_layers,
        "attn_width": cfg.num_attention_heads * head_dim,
    }


def attention_flops_prefill(params: dict, batch: int, plen: int) -> float:
    """QK^T and AV over a causal prompt: 2 * L^2 * width per layer and sequence (half of 4 L^2 w)."""
    return 2.0 * plen * plen * params["attn_width"] * params["layers"] * batch


def attention_flops_decode(params: dict, batch: int, plen: int, steps: int) -> float:
    """Each decode step at context c: 4 * c * width per layer and row."""
    ctx = sum(plen + 1 + i for i in range(steps))
    return 4.0 * ctx * params["attn_width"] * params["layers"] * batch


def _prefill_then_decode(model, ids, mask, steps: int) -> tuple[float, float]:
    """One prefill forward over the prompts, then ``steps`` greedy one-token steps on its KV cache;
    returns (prefill seconds, decode seconds)."""
    import torch

    t0 = time.perf_counter()
    out = model(input_ids=ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
    t1 = time.perf_counter()
    cache = out.past_key_values
    tok = out.logits[:, -1].argmax(-1, keepdim=True)
    ones = torch.ones((ids.shape[0], 1), dtype=mask.dtype)
    for _ in range(steps):
        mask = torch.cat([mask, ones], dim=1)
        out = model(input_ids=tok, attention_mask=mask, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        tok = out.logits[:, -1].argmax(-1, keepdim=True)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def bench_config(llms: dict, batch: int, prompt_len: int, new_tokens: int, reps: int) -> dict[str, dict]:
    """For each dtype: best of ``reps`` (prefill, decode) timings. The dtypes' reps are interleaved
    (bf16, fp32, fp32, bf16, ...) so that both see the same load on a shared machine."""
    import torch

    any_llm = next(iter(llms.values()))
    ids = torch.tensor(make_prompts(any_llm.tokenizer, batch, prompt_len), dtype=torch.long)
    mask = torch.ones_like(ids)
    steps = new_tokens - 1
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in llms}
    order = list(llms)
    with torch.inference_mode():
        for k in order:  # warm-up (allocations, oneDNN kernels) on a short prefix
            _prefill_then_decode(llms[k].model, ids[:, :128], mask[:, :128], 2)
        for rep in range(reps):
            for k in order if rep % 2 == 0 else order[::-1]:
                times[k].append(_prefill_then_decode(llms[k].model, ids, mask, steps))
    rows = {}
    for k, ts in times.items():
        t_prefill = min(t[0] for t in ts)
        t_decode = min(t[1] for t in ts)
        rows[k] = {
            "dtype": k,
            "batch": batch,
            "prompt_tokens": prompt_len,
            "new_tokens": new_tokens,
            "prefill_s": round(t_prefill, 4),
            "prefill_s_all": [round(t[0], 4) for t in ts],
            "prefill_tok_s": round(batch * prompt_len / t_prefill, 1),
            "decode_s": round(t_decode, 4),
            "decode_s_all": [round(t[1], 4) for t in ts],
            "decode_tok_s": round(batch * steps / t_decode, 1),
            "decode_ms_per_step": round(1000 * t_decode / steps, 2),
        }
    return rows


def timed_load_subprocess(cache_root: Path, dtype: str) -> dict:
    code = (
        "import json, sys, time; t0 = time.perf_counter();"
        "from memory_r1.llm.hf import HFBackend; from pathlib import Path;"
        "m = HFBackend('smollm2-135m', device='cpu', dtype=sys.argv[2], cache_root=Path(sys.argv[1]));"
        "print(json.dumps({'process_s': round(time.perf_counter() - t0, 2),"
        "'load_s': round(m.load_seconds, 2), 'convert_s': round(m.convert_seconds, 2),"
        "'from_cache': m.from_cache}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(cache_root), dtype],
        capture_output=True, text=True, check=True, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "llm_generate.json")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-load", action="store_true", help="do not time first/cached loads")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: the backend's auto choice at start, then fixed)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from memory_r1.llm.hf import HFBackend
    from memory_r1.threads import CpuLoadMeter, configure_threads

    meter = CpuLoadMeter()
    load_before = os.getloadavg()
    threads = configure_threads(args.threads)
    batches = [1, 8] if not args.quick else [1, 2]
    lengths = [500, 2000] if not args.quick else [64, 128]
    new_tokens = args.new_tokens if not args.quick else 8
    reps = args.reps if not args.quick else 2

    result: dict = {
        "machine": {
            "cpu": _cpu_name(),
            "cores": os.cpu_count(),
            "torch_threads": threads,
            "loadavg_at_start": [round(x, 2) for x in load_before],
            "torch": torch.__version__,
            "python": platform.python_version(),
            "amx_bf16": "amx_bf16" in _cpu_flags(),
            "avx512_bf16": "avx512_bf16" in _cpu_flags(),
        },
        "model": "smollm2-135m (Q4_1 GGUF de-quantised to fp32 safetensors, loaded as bf16/fp32)",
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
    }

    log.info("matmul GFLOP/s ...")
    mm = {}
    for name, dt in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        mm[name] = {
            "square_2048": round(matmul_gflops(dt, 2048), 1),
            # a SmolLM2 MLP projection over a 2000-token prompt: (2000 x 576) @ (576 x 1536)
            "model_shape_2000x576x1536": round(matmul_gflops(dt, 2000, 1536, 576), 1),
            # one decode step at batch 8: (8 x 576) @ (576 x 1536)
            "decode_shape_8x576x1536": round(matmul_gflops(dt, 8, 1536, 576, seconds=1.0), 1),
        }
        log.info("%s: %s", name, mm[name])
    result["matmul_gflops"] = mm

    if not args.skip_load and not args.quick:
        with tempfile.TemporaryDirectory(prefix="memr1-bench-cache-") as tmp:
            first = timed_load_subprocess(Path(tmp), "bf16")
            cached = timed_load_subprocess(Path(tmp), "bf16")
        result["load"] = {"first_load_fresh_cache": first, "cached_load": cached}
        log.info("load: first %s, cached %s", first, cached)

    llms = {
        d: HFBackend("smollm2-135m", device="cpu", dtype=d, num_threads=threads) for d in ("bf16", "fp32")
    }
    params = count_params(llms["bf16"].model)
    fl = mm["bf16"]["square_2048"] * 1e9
    fl32 = mm["fp32"]["square_2048"] * 1e9
    rows = []
    for batch in batches:
        for plen in lengths:
            log.info("batch %d prompt %d ...", batch, plen)
            got = bench_config(llms, batch, plen, new_tokens, reps)
            pre_flops = 2 * params["non_embedding"] * batch * plen
            dec_flops = 2 * params["total"] * batch * (new_tokens - 1)
            pre_att = pre_flops + attention_flops_prefill(params, batch, plen)
            dec_att = dec_flops + attention_flops_decode(params, batch, plen, new_tokens - 1)
            for dtype, r in got.items():
                r["prefill_floor_s_bf16"] = round(pre_flops / fl, 4)
                r["prefill_floor_s_fp32"] = round(pre_flops / fl32, 4)
                r["prefill_floor_tok_s_bf16"] = round(batch * plen / (pre_flops / fl), 1)
                r["decode_floor_tok_s_bf16"] = round(batch * (new_tokens - 1) / (dec_flops / fl), 1)
                r["prefill_floor_tok_s_bf16_with_attention"] = round(batch * plen / (pre_att / fl), 1)
                r["decode_floor_tok_s_bf16_with_attention"] = round(
                    batch * (new_tokens - 1) / (dec_att / fl), 1
                )
                own = fl if dtype == "bf16" else fl32
                r["prefill_fraction_of_own_dtype_floor"] = round((pre_flops / own) / r["prefill_s"], 3)
                r["decode_fraction_of_own_dtype_floor"] = round((dec_flops / own) / r["decode_s"], 3)
                rows.append(r)
                log.info("%s", r)
    for llm in llms.values():
        llm.close()
    result["params"] = params
    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    others = meter.others_busy(min_interval=0.0)
    result["machine"]["other_processes_busy_cores_during_run"] = (
        round(others, 2) if others is not None else None
    )
    result["runs"] = rows
    speedup = []
    for r in rows:
        if r["dtype"] != "bf16":
            continue
        f = next(
            x
            for x in rows
            if x["dtype"] == "fp32" and (x["batch"], x["prompt_tokens"]) == (r["batch"], r["prompt_tokens"])
        )
        speedup.append(
            {
                "batch": r["batch"],
                "prompt_tokens": r["prompt_tokens"],
                "prefill_bf16_over_fp32": round(r["prefill_tok_s"] / f["prefill_tok_s"], 2),
                "decode_bf16_over_fp32": round(r["decode_tok_s"] / f["decode_tok_s"], 2),
            }
        )
    result["bf16_speedup"] = speedup
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", args.out)
    else:
        print(json.dumps(result, indent=2))
    return 0


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
