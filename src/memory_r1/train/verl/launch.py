"""Launch verl's own PPO/GRPO trainer (``verl.trainer.main_ppo``'s ``run_ppo``) from Python.

:func:`launch` trains a :class:`~memory_r1.train.verl.config.VerlJob` (a config composed and
validated once by :func:`~memory_r1.train.verl.config.build_job`): what ``main_ppo.main`` does
after its checks (device auto-set, ``run_ppo`` with the V1 task runner), by default on CPU
(:mod:`memory_r1.train.verl.cpu`), and it always shuts down the Ray cluster it started.
:func:`run_verl` is both in one call::

    from memory_r1.train.verl.launch import run_verl
    run = run_verl([
        "algorithm.adv_estimator=grpo",
        "data.train_files=/tmp/train.parquet", "data.val_files=/tmp/train.parquet",
        "actor_rollout_ref.model.path=/path/to/hf_model", ...
    ], metrics_path="/tmp/run/metrics.jsonl")
    run.metrics[-1]["timing_s/step"]

Metrics: verl's ``file`` logger writes one JSON line per step (``{"step": n, "data": {...}}``) to
``$VERL_FILE_LOGGER_PATH``; ``metrics_path`` sets it and adds ``file`` to ``trainer.logger``, and
:class:`VerlRun` carries the parsed records.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from memory_r1.train.verl.config import VerlJob, build_job

log = logging.getLogger(__name__)


@dataclass
class VerlRun:
    """Outcome of :func:`launch`."""

    seconds: float
    metrics_path: Optional[Path]
    metrics: list[dict[str, Any]] = field(default_factory=list)  # one dict per logged step (+ "step")
    peak_memory_gb: Optional[float] = None  # max over time of this process tree's memory (sum of PSS)
    config: Any = None

    def step_seconds(self) -> list[float]:
        return [m["timing_s/step"] for m in self.metrics if "timing_s/step" in m]


class _TreeMemory:
    """Samples the memory of this process and all its descendants (Ray's GCS, raylet and workers are
    children of the driver that called ``ray.init``): the sum of PSS (shared pages split between the
    processes sharing them, so the sum is what the tree really occupies) where Linux reports it,
    else RSS."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-rss", daemon=True)

    def _sample(self) -> int:
        import psutil

        me = psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._sample())
            except Exception:  # never let monitoring break a run
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> _TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of verl's ``file`` logger: ``[{"step": n, **metrics}, ...]``."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            out.append({"step": rec.get("step"), **rec.get("data", {})})
    return out


#: verl keys that split a step's batch into smaller forward / backward passes: lower them when a run
#: runs out of memory. They change how much is held at once, not what a step trains on (gradients
#: accumulate over the micro-batches), so a stopped run may resume with other values.
MICRO_BATCH_KEYS = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu",
    "critic.ppo_micro_batch_size_per_gpu",
    "critic.forward_micro_batch_size_per_gpu",
)


class VerlOutOfMemory(RuntimeError):
    """verl's run stopped because memory ran out (Ray's memory monitor killed a worker, or an
    allocation failed); the message is one line saying what to lower."""


def _is_out_of_memory(exc: BaseException) -> bool:
    """Is ``exc`` (or what it wraps: Ray task errors carry ``cause``) an out-of-memory error?

    >>> _is_out_of_memory(MemoryError()), _is_out_of_memory(ValueError("out of memory?"))
    (True, False)
    >>> class OutOfMemoryError(Exception): ...
    >>> wrapped = RuntimeError("task failed"); wrapped.cause = OutOfMemoryError("killed")
    >>> _is_out_of_memory(wrapped)
    True
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, MemoryError) or any(t.__name__ == "OutOfMemoryError" for t in type(e).__mro__):
            return True
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return False


def out_of_memory_message(steps_logged: int, peak_gb: float | None) -> str:
    """What to do when a run ran out of memory.

    >>> print(out_of_memory_message(4, 21.3))  # doctest: +ELLIPSIS
    verl ran out of memory after 4 logged step(s) (this process tree's peak: 21.3 GB of ... GB): lower the micro-batches (actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu, ...), or data.max_prompt_length / data.max_response_length, or the batch; micro-batch sizes may change when the run is resumed (--resume)
    """
    from memory_r1.hardware import memory_gib

    total = memory_gib()["total_gib"]
    peak = f"{peak_gb:.1f} GB" if peak_gb is not None else "not measured"
    of = f" of {total:.1f} GB" if total is not None else ""
    return (f"verl ran out of memory after {steps_logged} logged step(s) (this process tree's peak: {peak}{of}"
            f"): lower the micro-batches ({', '.join(MICRO_BATCH_KEYS[:3])}, ...), or "
            "data.max_prompt_length / data.max_response_length, or the batch; micro-batch sizes may change when "
            "the run is resumed (--resume)")


def launch(job: VerlJob, *, monitor_memory: bool = True, shutdown_ray: bool = True) -> VerlRun:
    """Train ``job`` with verl's ``run_ppo``. On CPU this process uses the CPU platform first; the
    job's environment goes to this process (its own verl imports and a local Ray cluster inherit
    it). Ray is started by verl with the config's ``ray_kwargs``; if this call started it, it is shut
    down at the end, also on errors. ``monitor_memory``: sample this process tree's memory
    (``VerlRun.peak_memory_gb``)."""
    import ray
    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.utils.device import auto_set_device

    if job.metrics_path is not None:
        job.metrics_path.parent.mkdir(parents=True, exist_ok=True)
    if job.cpu:
        from memory_r1.train.verl.cpu import use_cpu_platform

        use_cpu_platform()
    os.environ.update(job.env)
    auto_set_device(job.config)

    started_ray = not ray.is_initialized()
    t0 = time.perf_counter()
    monitor = _TreeMemory() if monitor_memory else None
    try:
        if monitor is not None:
            monitor.__enter__()
        run_ppo(job.config, task_runner_class=TaskRunnerV1)
    except Exception as exc:
        if not _is_out_of_memory(exc):
            raise
        steps = len(read_metrics(job.metrics_path)) if job.metrics_path else 0
        peak = monitor.peak / 2**30 if monitor is not None and monitor.peak else None
        raise VerlOutOfMemory(out_of_memory_message(steps, peak)) from exc
    finally:
        if monitor is not None:
            monitor.__exit__(None, None, None)
        if shutdown_ray and started_ray and ray.is_initialized():
            ray.shutdown()
    seconds = time.perf_counter() - t0
    run = VerlRun(
        seconds=seconds,
        metrics_path=job.metrics_path,
        metrics=read_metrics(job.metrics_path) if job.metrics_path else [],
        peak_memory_gb=(monitor.peak / 2**30) if monitor is not None else None,
        config=job.config,
    )
    log.info("verl run finished in %.1f s (%d steps logged)", seconds, len(run.metrics))
    return run


def run_verl(
    overrides: list[str],
    *,
    cpu: bool = True,
    metrics_path: str | os.PathLike | None = None,
    monitor_memory: bool = True,
    shutdown_ray: bool = True,
) -> VerlRun:
    """Compose and validate verl's ``ppo_trainer`` config with ``overrides``
    (:func:`~memory_r1.train.verl.config.build_job`: ``cpu``, ``metrics_path``) and train it
    (:func:`launch`)."""
    job = build_job(overrides, cpu=cpu, metrics_path=metrics_path)
    return launch(job, monitor_memory=monitor_memory, shutdown_ray=shutdown_ray)


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m memory_r1.train.verl.launch [--metrics F] [--accelerator] key=value ...``"""
    import argparse

    ap = argparse.ArgumentParser(description="verl's PPO/GRPO trainer (main_ppo) with Hydra overrides, on CPU")
    ap.add_argument("--metrics", help="JSONL metrics file (verl's file logger)")
    ap.add_argument("--accelerator", action="store_true", help="verl's own device handling instead of the CPU stack")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides for verl's ppo_trainer config")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run = run_verl(args.overrides, cpu=not args.accelerator, metrics_path=args.metrics)
    steps = run.step_seconds()
    log.info(
        "%d steps, %.1f s total, s/step %s, peak memory %.1f GB",
        len(run.metrics),
        run.seconds,
        [round(x, 1) for x in steps],
        run.peak_memory_gb or float("nan"),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
