"""The one thread policy: how many torch threads CPU work uses, and how idle OpenMP threads wait.

Measured (``benchmarks/threads.py``; SmolLM2-135M generation, 2 cores; the tables are in
``benchmarks/README.md`` and ``benchmarks/results/threads-*.json``): with OpenMP's default wait
policy (idle threads spin before they sleep) two threads were 7-20x SLOWER than one as soon as any
other process was runnable (every small op of a decode step waits at a barrier for a descheduled
thread), so the old rule dropped to one thread under load, and halved throughput when the load was
only half a core. With ``OMP_WAIT_POLICY=PASSIVE`` two threads were never slower than one: 1.3-1.4x
faster at no load and under half a core of load, 1.0-1.3x with a full core busy elsewhere. Hence:

* ``import memory_r1`` sets ``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy (it must be in
  the environment before torch's OpenMP starts: importing torch first leaves the spin default);
* with the passive policy every usable core is used (:func:`auto_num_threads`);
* with a spinning policy (the user's choice, or torch imported before ``memory_r1``) the rule is
  every core less those other processes keep busy, re-checked before each batch;
* OMP_NUM_THREADS / MKL_NUM_THREADS, or an explicit ``num_threads``, always win.

verl's worker processes get the same from :func:`worker_threads` (``$MEMR1_CPU_THREADS``, default
all cores) and ``OMP_WAIT_POLICY=PASSIVE`` in their environment.
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"
WORKER_THREADS_ENV = "MEMR1_CPU_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (affinity-aware, unlike ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def passive_wait() -> bool:
    """Whether idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) in this process's torch."""
    return os.environ.get(WAIT_POLICY_ENV, "").strip().upper() == "PASSIVE" and _set_before_torch()


def _set_before_torch() -> bool:
    from memory_r1 import _WAIT_POLICY_BEFORE_TORCH

    return _WAIT_POLICY_BEFORE_TORCH


def auto_num_threads(cores: int | None = None, others_busy: float | None = None,
                     passive: bool | None = None) -> int:
    """Threads for torch's intra-op pool. Idle threads sleeping (``passive``, the default once
    ``memory_r1`` is imported first): every usable core. Spinning: every usable core less those other
    processes keep busy (``others_busy``; default the 1-minute load average less this process).

    >>> auto_num_threads(2, 0.7, passive=True), auto_num_threads(2, 5.0, passive=True)
    (2, 2)
    >>> auto_num_threads(2, 0.3, passive=False), auto_num_threads(2, 0.7, passive=False), auto_num_threads(8, 3.2, passive=False)
    (2, 1, 5)
    """
    cores = cores or usable_cores()
    if passive_wait() if passive is None else passive:
        return cores
    if others_busy is None:
        try:
            others_busy = max(0.0, os.getloadavg()[0] - 1.0)
        except OSError:  # pragma: no cover
            others_busy = 0.0
    return max(1, min(cores, cores - int(others_busy + 0.5)))


def describe_policy() -> str:
    """One line on how :func:`auto_num_threads` decides on this process, for logs and `memr1 doctor`."""
    if user_set_threads():
        return "OMP_NUM_THREADS / MKL_NUM_THREADS set by the user"
    if passive_wait():
        return "OMP_WAIT_POLICY=PASSIVE: every usable core (2 threads never slower than 1, measured)"
    return (f"{WAIT_POLICY_ENV}={os.environ.get(WAIT_POLICY_ENV) or 'unset (spin)'}"
            + ("" if _set_before_torch() else ", torch imported before memory_r1")
            + ": every core less those busy elsewhere")


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
