"""Run verl's own PPO/GRPO trainer (``verl.trainer.main_ppo``) from Python with Hydra overrides.

:func:`compose_config` composes verl's installed ``ppo_trainer`` config (the one ``python -m
verl.trainer.main_ppo`` uses) with a list of overrides; :func:`run_verl` does what ``main_ppo.main``
does (device auto-set, config validation, ``run_ppo`` with the V1 task runner), by default on CPU
(:mod:`memory_r1.train.verl.cpu`), and always shuts down the Ray cluster it started.

    from memory_r1.train.backends.verl_runner import run_verl
    run = run_verl([
        "algorithm.adv_estimator=grpo",
        "data.train_files=/tmp/train.parquet", "data.val_files=/tmp/train.parquet",
        "actor_rollout_ref.model.path=/path/to/hf_model", ...
    ], metrics_path="/tmp/run/metrics.jsonl")
    run.metrics[-1]["timing_s/step"]

Metrics: verl's ``file`` logger writes one JSON line per step (``{"step": n, "data": {...}}``) to
``$VERL_FILE_LOGGER_PATH``; ``run_verl(metrics_path=...)`` sets it and adds ``file`` to
``trainer.logger``, and :class:`VerlRun` carries the parsed records.

>>> cfg = compose_config(["trainer.total_training_steps=2"], cpu=False)
>>> cfg.trainer.total_training_steps
2
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

log = logging.getLogger(__name__)

CONFIG_NAME = "ppo_trainer"


def verl_config_dir() -> Path:
    """verl's installed Hydra config directory (``verl/trainer/config``)."""
    import importlib.util

    spec = importlib.util.find_spec("verl")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("verl is not installed (pip install -e '.[train]')")
    return Path(spec.origin).parent / "trainer" / "config"


def compose_config(overrides: list[str], *, cpu: bool = True, config_name: str = CONFIG_NAME) -> Any:
    """verl's ``ppo_trainer`` config with ``overrides`` applied (after :func:`cpu_overrides` when
    ``cpu``; later overrides win). Returns an OmegaConf ``DictConfig``."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if cpu:
        from memory_r1.train.verl.cpu import cpu_overrides

        overrides = _merge_overrides(cpu_overrides(), overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` then ``extra``; a key set in both is kept from ``extra`` only (Hydra refuses ``+key``
    twice), and keeps the ``+`` of the base entry (a key the base adds is not in verl's config).

    >>> _merge_overrides(["a=1", "+b.c=2", "d=3"], ["b.c=5", "a=4"])
    ['d=3', '+b.c=5', 'a=4']
    """
    added = {_key(o) for o in base if o.startswith("+") and not o.startswith("++")}
    keys = {_key(o) for o in extra}
    merged = [o for o in base if _key(o) not in keys]
    for o in extra:
        if _key(o) in added and not o.startswith(("+", "~")):
            o = "+" + o
        merged.append(o)
    return merged


@dataclass
class VerlRun:
    """Outcome of :func:`run_verl`."""

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


def run_verl(
    overrides: list[str],
    *,
    cpu: bool = True,
    metrics_path: str | os.PathLike | None = None,
    monitor_memory: bool = True,
    shutdown_ray: bool = True,
) -> VerlRun:
    """Compose verl's ``ppo_trainer`` config with ``overrides`` and train (``run_ppo``).

    ``cpu``: run on this machine's CPU (:mod:`memory_r1.train.verl.cpu` platform, engines, ``hf`` rollout
    and :func:`~memory_r1.train.verl.cpu.settings.cpu_overrides` first). ``metrics_path``: JSONL file for
    verl's ``file`` logger. Unless ``overrides`` set ``trainer.logger``, it is ``[console,file]``
    (with ``metrics_path``) or ``[console]`` (verl's default also wants wandb). Ray is started by
    verl with the config's ``ray_kwargs``; if this call started it, it is shut down at the end, also
    on errors. ``monitor_memory``: sample this process tree's memory (``VerlRun.peak_memory_gb``)."""
    import ray

    extra_env: dict[str, str] = {}
    overrides = list(overrides)
    if metrics_path is not None:
        metrics_path = Path(metrics_path).resolve()
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        extra_env["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    if not any(_key(o) == "trainer.logger" for o in overrides):  # verl's default includes wandb
        overrides.append("trainer.logger=[console,file]" if metrics_path is not None else "trainer.logger=[console]")
    if cpu:
        from memory_r1.train.verl import cpu as verl_cpu

        verl_cpu.use_cpu_platform()
        env = {**verl_cpu.env_for_workers(), **extra_env}
        overrides = _merge_overrides(verl_cpu.cpu_overrides(extra_env=extra_env), overrides)
    else:
        env = extra_env
        if extra_env:
            overrides.insert(0, "+ray_kwargs.ray_init.runtime_env.env_vars={" + _env_override(extra_env) + "}")
    os.environ.update(env)  # the driver's own verl imports and a local Ray cluster inherit it

    config = compose_config(overrides, cpu=False)

    from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config
    from verl.utils.device import auto_set_device

    auto_set_device(config)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if not config.trainer.use_v1:
        raise ValueError("run_verl drives verl's V1 trainer (trainer.use_v1=True)")

    started_ray = not ray.is_initialized()
    t0 = time.perf_counter()
    monitor = _TreeMemory() if monitor_memory else None
    try:
        if monitor is not None:
            monitor.__enter__()
        run_ppo(config, task_runner_class=TaskRunnerV1)
    finally:
        if monitor is not None:
            monitor.__exit__(None, None, None)
        if shutdown_ray and started_ray and ray.is_initialized():
            ray.shutdown()
    seconds = time.perf_counter() - t0
    run = VerlRun(
        seconds=seconds,
        metrics_path=metrics_path,
        metrics=read_metrics(metrics_path) if metrics_path else [],
        peak_memory_gb=(monitor.peak / 2**30) if monitor is not None else None,
        config=config,
    )
    log.info("verl run finished in %.1f s (%d steps logged)", seconds, len(run.metrics))
    return run


def _env_override(env: dict[str, str]) -> str:
    return ",".join(f"{k}:'{v}'" for k, v in env.items())


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m memory_r1.train.backends.verl_runner [--metrics F] [--accelerator] key=value ...``"""
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
