"""What this CPU computes fast, measured: the dtype ``auto`` means on CPU, and the facts `memr1 doctor` prints.

The CPUs this project runs on differ from session to session, and their bf16 speed differs by 300x
(2 cores each, torch 2.13; a 256 x 576 @ 576 x 1536 linear, GFLOP/s):

==============================  =========  ===========  ==========
kind                            fp32       bf16         ``auto``
==============================  =========  ===========  ==========
Xeon with AMX                   265-400    2,080-2,590  bfloat16
EPYC with AVX512-BF16, no AMX   ~175       ~400         bfloat16
Xeon with AVX-512, no bf16      ~248       ~61          float32
EPYC with AVX2 + FMA only       50-55      5-7          float32
==============================  =========  ===========  ==========

On the last two kinds bf16 has no native instructions (oneDNN emulates it on AVX-512 at ~0.25x the
fp32 rate; on AVX2 torch emulates it ~10x slower than fp32), so a
hard-coded bf16 made the main job several times slower there. The choice is therefore made from a
measurement, never from a machine's name: :func:`profile` times that linear in fp32 and bf16 with the
threads torch will use (about 0.1 s; cached per CPU model, flags, torch version, thread count and ISA
limits such as ``ONEDNN_MAX_CPU_ISA`` in ``cache_dir()/hardware/``), and :func:`choose_dtype` takes
bf16 only where oneDNN reports native bf16 support *and* bf16 ran at least :data:`BF16_MIN_SPEEDUP`
times the fp32 rate. ``$MEMR1_CPU_DTYPE`` (``float32`` / ``bfloat16``) overrides the choice; a dtype
given explicitly (a recipe's ``llm.dtype``, ``dtype=`` of a backend) always wins over ``auto``.

>>> choose_dtype(CpuProfile(model="x", flags=("avx2",), isa="AVX2", onednn_bf16=False, threads=2,
...                         gflops={"float32": 52.0, "bfloat16": 6.0}))[0]
'float32'
>>> choose_dtype(CpuProfile(model="x", flags=("amx_bf16",), isa="AVX512", onednn_bf16=True, threads=2,
...                         gflops={"float32": 265.0, "bfloat16": 2080.0}))
('bfloat16', 'bf16 matmul 2080 GFLOP/s = 7.8x fp32 (265 GFLOP/s), native bf16 (amx_bf16)')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: CPU flags (as /proc/cpuinfo names them) that decide how fast bf16/int8/fp32 run
INTERESTING_FLAGS = (
    "amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512f", "avx512_vnni", "avx_vnni",
    "avx2", "fma",
)
#: environment variables that limit the instruction sets the math libraries use (part of the cache key)
ISA_ENV = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
#: bf16 is chosen only when it runs this many times the fp32 rate (it also rounds more coarsely)
BF16_MIN_SPEEDUP = 1.25
DTYPE_ENV = "MEMR1_CPU_DTYPE"
#: the timed linear: rows x inner @ inner x outer (SmolLM2-135M's MLP shape, a prefill-sized batch)
SHAPE = (256, 576, 1536)
_PROFILE_VERSION = 1
_DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32",
                "float": "float32", "fp16": "float16", "float16": "float16", "half": "float16"}


def cpu_info() -> dict:
    """CPU model name, the :data:`INTERESTING_FLAGS` it has, and the usable core count (Linux
    ``/proc/cpuinfo``; elsewhere the model from ``platform`` and no flags)."""
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and not model:
                model = value.strip()
            elif key == "flags" and not flags:
                flags = set(value.split())
    model = model or platform.processor() or platform.machine()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return {
        "model": model,
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "cores": cores,
        "isa_limits": {k: os.environ[k] for k in ISA_ENV if os.environ.get(k)},
    }


def matmul_gflops(dtype, shape: tuple[int, int, int] = SHAPE, budget_s: float = 0.25) -> float:
    """GFLOP/s of ``torch.nn.functional.linear`` at ``shape`` in ``dtype``: the best of the calls that
    fit in ``budget_s`` (at least 2 after a warm-up call)."""
    import torch
    import torch.nn.functional as F

    m, k, n = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(m, k, generator=gen).to(dtype)
    w = torch.randn(n, k, generator=gen).to(dtype)
    with torch.inference_mode():
        F.linear(x, w)
        best, spent, calls = float("inf"), 0.0, 0
        while calls < 2 or (spent < budget_s and calls < 50):
            t = time.perf_counter()
            F.linear(x, w)
            dt = time.perf_counter() - t
            best, spent, calls = min(best, dt), spent + dt, calls + 1
    return 2.0 * m * k * n / max(best, 1e-9) / 1e9


@dataclass(frozen=True)
class CpuProfile:
    """One CPU's measured matmul rates (GFLOP/s per dtype name) with the facts they depend on."""

    model: str
    flags: tuple[str, ...]
    isa: str  # torch's CPU capability (DEFAULT, AVX2, AVX512, ...)
    onednn_bf16: bool  # oneDNN reports native bf16 kernels
    threads: int
    gflops: dict = field(default_factory=dict)
    measured_at: str = ""
    cached: bool = False

    def to_json(self) -> dict:
        d = asdict(self)
        d["flags"] = list(self.flags)
        return d


def _cache_key(info: dict, threads: int) -> str:
    import torch

    raw = json.dumps([_PROFILE_VERSION, info["model"], info["flags"], info["isa_limits"], threads,
                      torch.__version__], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _cache_file(key: str) -> Path:
    from memory_r1.paths import cache_dir

    return cache_dir() / "hardware" / f"cpu-{key}.json"


def profile(refresh: bool = False, use_cache: bool = True) -> CpuProfile:
    """This CPU's profile with torch's current thread count: from the cache unless ``refresh``;
    measured (and cached, when ``use_cache``) otherwise."""
    import torch

    info = cpu_info()
    threads = torch.get_num_threads()
    path = _cache_file(_cache_key(info, threads))
    if use_cache and not refresh:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            d = json.loads(path.read_text())
            return CpuProfile(**{**d, "flags": tuple(d["flags"]), "cached": True})
    gflops = {}
    t0 = time.perf_counter()
    for name in ("float32", "bfloat16"):
        try:
            gflops[name] = round(matmul_gflops(getattr(torch, name)), 1)
        except RuntimeError as exc:  # pragma: no cover - a build without the dtype on CPU
            log.warning("cannot time a %s matmul on this CPU: %s", name, exc)
            gflops[name] = 0.0
    try:
        onednn_bf16 = bool(torch.backends.mkldnn.is_available()
                           and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - torch without the check
        onednn_bf16 = False
    prof = CpuProfile(
        model=info["model"], flags=tuple(info["flags"]), isa=torch.backends.cpu.get_cpu_capability(),
        onednn_bf16=onednn_bf16, threads=threads, gflops=gflops,
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )
    log.info("measured this CPU in %.2f s: %s", time.perf_counter() - t0, gflops)
    if use_cache:
        try:
            from memory_r1.runs import atomic_write

            atomic_write(path, json.dumps(prof.to_json(), indent=2))
        except OSError as exc:
            log.warning("cannot cache the CPU profile at %s: %s", path, exc)
    return prof


def choose_dtype(prof: CpuProfile) -> tuple[str, str]:
    """``(dtype name, reason)``: bfloat16 where oneDNN runs it natively and it measured at least
    :data:`BF16_MIN_SPEEDUP` x fp32, float32 otherwise (see the module docstring for examples)."""
    fp32, bf16 = prof.gflops.get("float32", 0.0), prof.gflops.get("bfloat16", 0.0)
    ratio = bf16 / fp32 if fp32 > 0 else 0.0
    rates = f"bf16 matmul {bf16:.0f} GFLOP/s = {ratio:.1f}x fp32 ({fp32:.0f} GFLOP/s)"
    if not prof.onednn_bf16:
        return "float32", f"no native bf16 on this CPU (oneDNN), {rates}"
    if ratio < BF16_MIN_SPEEDUP:
        return "float32", f"{rates}, under the {BF16_MIN_SPEEDUP}x that bf16 needs"
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in prof.flags]
    return "bfloat16", f"{rates}, native bf16 ({', '.join(native) or 'oneDNN'})"


def normalize_dtype(name: object) -> str:
    """A dtype name in canonical form (``bf16`` -> ``bfloat16``; ``auto`` stays ``auto``).

    >>> normalize_dtype("bf16"), normalize_dtype("torch.float32"), normalize_dtype(None)
    ('bfloat16', 'float32', 'auto')
    """
    if name is None:
        return "auto"
    key = str(name).lower().replace("torch.", "")
    if key == "auto":
        return "auto"
    if key not in _DTYPE_NAMES:
        raise ValueError(f"unknown dtype {name!r}: use auto, bf16/bfloat16, fp32/float32 or fp16/float16")
    return _DTYPE_NAMES[key]


def resolve_cpu_dtype(requested: object = "auto", prof: CpuProfile | None = None) -> tuple[str, str]:
    """``(dtype name, reason)`` for work on this CPU: an explicit dtype as asked; ``auto`` from
    ``$MEMR1_CPU_DTYPE`` if set, else from :func:`choose_dtype` over ``prof`` (default: the cached
    :func:`profile`)."""
    name = normalize_dtype(requested)
    if name != "auto":
        return name, "asked for"
    forced = os.environ.get(DTYPE_ENV)
    if forced:
        return normalize_dtype(forced), f"${DTYPE_ENV}"
    return choose_dtype(prof or profile())


def describe(requested: object = "auto") -> dict:
    """What a run records about its CPU (manifest ``host.cpu``): model, flags, measured rates, and
    the dtype that ``requested`` resolves to with the reason."""
    prof = profile()
    dtype, reason = resolve_cpu_dtype(requested, prof)
    return {
        "model": prof.model, "flags": list(prof.flags), "isa": prof.isa, "onednn_bf16": prof.onednn_bf16,
        "threads": prof.threads, "matmul_gflops": prof.gflops, "dtype": dtype, "dtype_reason": reason,
        "isa_limits": cpu_info()["isa_limits"],
    }


def memory_gib() -> dict:
    """This machine's total and available memory in GiB (``/proc/meminfo``; None where it cannot be read)."""
    out: dict = {}
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                out[key] = round(int(rest.split()[0]) / 1024**2, 1)
    return {"total_gib": out.get("MemTotal"), "available_gib": out.get("MemAvailable")}


def kind_name(prof: CpuProfile, isa_limits: dict | None = None) -> str:
    """A short name for the CPU kind, for result files: ``amx``, ``avx512bf16``, ``avx512`` (AVX-512
    without bf16: fp32 ~5x an AVX2-only CPU's, bf16 emulated), ``avx2`` or ``other`` by the flags,
    with ``-as-<isa>`` when environment variables limit the instruction sets.

    >>> kind_name(CpuProfile("x", ("avx512_bf16", "avx512f", "avx2"), "AVX512", True, 2), {})
    'avx512bf16'
    >>> kind_name(CpuProfile("x", ("avx512f", "avx512_vnni", "avx2"), "AVX512", True, 2), {})
    'avx512'
    >>> kind_name(CpuProfile("x", ("avx2", "fma"), "AVX2", False, 2), {})
    'avx2'
    >>> kind_name(CpuProfile("x", ("amx_bf16", "avx2"), "AVX2", False, 2), {"ONEDNN_MAX_CPU_ISA": "AVX2"})
    'amx-as-avx2'
    """
    flags = set(prof.flags)
    kinds = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))
    base = next((name for flag, name in kinds if flag in flags), "other")
    limits = cpu_info()["isa_limits"] if isa_limits is None else isa_limits
    return f"{base}-as-{prof.isa.lower()}" if limits else base


def kind_record() -> dict:
    """What a benchmark's JSON result records about its CPU: the kind (:func:`kind_name`), the model
    and the usable cores."""
    info = cpu_info()
    return {"kind": kind_name(profile(), info["isa_limits"]), "model": info["model"], "cores": info["cores"]}
