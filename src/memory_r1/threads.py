"""The one thread policy: how many torch threads CPU work in this process uses.

Measured by ``benchmarks/threads.py`` (SmolLM2-135M generation through the HF backend, 2 cores, a
second process keeping 0, 0.5 or 1 core busy; ``benchmarks/results/threads-*.json``, table in
``benchmarks/README.md``). On a quiet Xeon with AMX (bf16), seconds for 8 prompts of ~600 tokens
(prefill) / 8 short prompts with 48 new tokens (decode), 1 thread vs 2 threads:

===================  =====================  =====================  =====================
OpenMP wait policy   no other load          0.5 core busy          1 core busy
===================  =====================  =====================  =====================
default (spins)      1.18 / 2.74 vs         1.25 / 2.75 vs         1.21 / 2.67 vs
                     **0.78 / 1.91**        1.48 / 3.88            14.66 / 57.12
PASSIVE (sleeps)     1.16 / 2.58 vs         1.23 / 2.74 vs         1.15 / 2.55 vs
                     1.12 / 3.58            1.30 / 3.50            1.23 / 2.76
===================  =====================  =====================  =====================

So: the default wait policy (passive sleeping made every 2-thread decode slower, 0.72-0.92x of one
thread), every core while the machine is otherwise idle (1.4-1.5x), and one core fewer per core
that other processes keep busy, because a spinning 2-thread pool is 12-20x slower than one thread
beside a full core of other work. Half a core of other load is the close call: here (bf16 on AMX,
small ops) two threads lost 16-29%, while on an AVX2-only EPYC in fp32 (larger ops) dropping to one
thread at that load halved the eval's throughput. The rule keeps every core until at least 0.75 of
a core is busy elsewhere, re-checked before each generation batch (:class:`CpuLoadMeter`).
OMP_NUM_THREADS / MKL_NUM_THREADS, or an explicit ``num_threads``, always win.

The price of adapting: bf16 sums round otherwise with another thread count, so a greedy run that
switched counts under load is not repeated by a quiet one (the val base row re-run beside the test
suite built other banks, F1 -1.75 points). The CPU eval recipe therefore fixes the count
(``llm.num_threads: all``); the adaptive policy is what ``num_threads: null`` asks for.

verl's Ray worker processes are another regime (several processes of one run on the same cores):
they use :func:`worker_threads` (``$MEMR1_CPU_THREADS``, default all cores) with
``OMP_WAIT_POLICY=PASSIVE`` in their environment (:func:`worker_env`, given to every Ray process by
``train/verl/cpu/``: spinning made their 2-thread steps 2-4x slower there).
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

WORKER_THREADS_ENV = "MEMR1_CPU_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: cores busy elsewhere at which one core is left to them (measured: see the module docstring)
YIELD_AT = 0.75


def auto_num_threads(cores: int | None = None, others_busy: float | None = None) -> int:
    """Threads for torch's intra-op pool: every usable core less one per core other processes keep
    busy, counted from :data:`YIELD_AT` (``others_busy``; default the 1-minute load average less this
    process).

    >>> auto_num_threads(2, 0.0), auto_num_threads(2, 0.5), auto_num_threads(2, 0.8), auto_num_threads(2, 5.0)
    (2, 2, 1, 1)
    >>> auto_num_threads(8, 3.2), auto_num_threads(8, 3.8)
    (5, 4)
    """
    cores = cores or usable_cores()
    if others_busy is None:
        try:
            others_busy = max(0.0, os.getloadavg()[0] - 1.0)
        except OSError:  # pragma: no cover
            others_busy = 0.0
    return max(1, min(cores, cores - int(others_busy + 1.0 - YIELD_AT)))


def describe_policy() -> str:
    """One line on how :func:`auto_num_threads` decides in this process, for logs and `memr1 doctor`."""
    if user_set_threads():
        return "OMP_NUM_THREADS / MKL_NUM_THREADS set by the user"
    return f"every usable core, one fewer per core busy elsewhere (from {YIELD_AT} of a core; measured)"


class CpuLoadMeter:
    """CPU time used by OTHER processes (this one's own time subtracted) since the last reading, in
    cores, from /proc/stat (steal time counts: it is the hypervisor running someone else)."""

    def __init__(self) -> None:
        self._last = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        # user nice system idle iowait irq softirq steal ...
        busy = sum(fields[:3]) + sum(fields[5:8])
        t = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), t.user + t.system, time.monotonic()

    def others_busy(self, min_interval: float = 0.5) -> float | None:
        """Cores busy elsewhere since the last reading (None if under ``min_interval`` s ago)."""
        now = self._sample()
        if now is None or self._last is None:
            return None
        d_wall = now[2] - self._last[2]
        if d_wall < min_interval:
            return None
        others = (now[0] - self._last[0]) - (now[1] - self._last[1])
        self._last = now
        return max(0.0, others / d_wall)


def user_set_threads() -> bool:
    return bool(os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"))


def configure_threads(num_threads: int | None = None, others_busy: float | None = None) -> int:
    """Set torch's thread count: ``num_threads`` if given; else nothing when the user set
    OMP_NUM_THREADS / MKL_NUM_THREADS (torch follows them); else :func:`auto_num_threads`."""
    import torch

    if num_threads is None:
        if user_set_threads():
            return torch.get_num_threads()
        num_threads = auto_num_threads(None, others_busy)
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
        log.info("torch threads: %d (%s)", num_threads, describe_policy())
    return num_threads


def worker_threads() -> int:
    """torch threads in verl's Ray worker processes: ``$MEMR1_CPU_THREADS``, else every usable core
    (Ray starts actors with ``OMP_NUM_THREADS=1``; their environment sets the passive wait policy)."""
    try:
        n = int(os.environ.get(WORKER_THREADS_ENV, "0"))
    except ValueError:
        n = 0
    return n if n > 0 else usable_cores()


def worker_env(threads: int | None = None) -> dict[str, str]:
    """The thread settings of a verl worker process, as environment variables (Ray passes them to
    every process it starts): ``threads`` (default :func:`worker_threads`) for torch and OpenMP, and
    idle OpenMP threads that sleep instead of spinning (on a busy machine, more runnable threads than
    cores, spinning made 2-thread matmuls 2-4x slower than 1 thread; passive keeps 2 threads >= 1).

    >>> worker_env(3) == {"MEMR1_CPU_THREADS": "3", "OMP_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE"}
    True
    """
    n = str(threads or worker_threads())
    return {WORKER_THREADS_ENV: n, "OMP_NUM_THREADS": n, "OMP_WAIT_POLICY": "PASSIVE"}
