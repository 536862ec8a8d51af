"""verl 0.9.1's own PPO/GRPO trainer on CPU, through verl's extension points (no verl file is edited).

Stock ``verl.trainer.main_ppo`` stops on a machine without accelerators ("Total available GPUs 0 is
less than total desired GPUs 1"). This package supplies what is missing through the registries and
hooks verl offers for out-of-tree hardware and inference engines, one concern a module, like a vLLM
platform plug-in:

=======================  ==========================================================================
module                   what it adds to verl
=======================  ==========================================================================
:mod:`.platform`         the ``cpu`` platform (``verl.plugin.platform.PlatformRegistry``): device
                         ``cpu``, gloo collectives, RSS as device memory, logical Ray ``GPU`` slots
:mod:`.engines`          verl's FSDP engines registered for device ``cpu``
                         (``verl.workers.engine.EngineRegistry``) with two CPU overrides
:mod:`.rollout_server`   the ``hf`` rollout server: transformers generation as a Ray actor
:mod:`.rollout_adapter`  its replica (starts the server) and the server adapter in the training
                         worker (weight sync), in verl's rollout registries
:mod:`.settings`         the environment of every Ray process and the Hydra overrides of a CPU run
=======================  ==========================================================================

The package is imported in *every* verl process (driver, TaskRunner, training workers, agent-loop
and reward workers) by verl itself: ``import verl`` imports the modules named in
``VERL_USE_EXTERNAL_MODULES`` (this package), and :func:`register` runs at import.
:func:`~.settings.env_for_workers` gives that variable and ``VERL_PLATFORM=cpu``.

Precision follows the CPU (:func:`~memory_r1.train.verl.overrides.precision_overrides`, the recipe's
``dtype: auto``): where bf16 is native (AMX, AVX512-BF16) verl's defaults (FSDP mixed precision,
fp32 master weights with bf16 compute; ``rollout.dtype=bfloat16``), ~1.6x faster per step than
fp32 there; where bf16 is emulated (~10x slower than fp32) fp32 throughout
(``+...fsdp_config.mixed_precision={param_dtype:fp32,...}``, ``rollout.dtype=float32``).

Run it with :func:`memory_r1.train.verl.launch.run_verl`, or by hand::

    os.environ.update(env_for_workers())            # before ray.init / importing verl's trainer
    overrides = cpu_overrides() + ["algorithm.adv_estimator=grpo", ...]
"""

from __future__ import annotations

import os

from memory_r1.train.verl.cpu.engines import register_engines
from memory_r1.train.verl.cpu.platform import PlatformCPU
from memory_r1.train.verl.cpu.rollout_adapter import HFReplica, HFServerAdapter
from memory_r1.train.verl.cpu.settings import PLATFORM_NAME, ROLLOUT_NAME, cpu_overrides, env_for_workers

__all__ = ["cpu_overrides", "env_for_workers", "register", "use_cpu_platform"]


def register_platform() -> None:
    """Register :class:`~.platform.PlatformCPU` as ``cpu`` in verl's platform registry (idempotent)."""
    from verl.plugin.platform import PlatformRegistry

    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        PlatformRegistry.register(platform=PLATFORM_NAME)(PlatformCPU)


def register_rollout() -> None:
    """Register the ``hf`` rollout: replica class and server-adapter class (idempotent)."""
    from verl.workers.rollout import base as rollout_base
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, lambda: HFReplica)
    # verl has no public register() for the worker-side class; this dict is what get_rollout_class reads
    rollout_base._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = f"{HFServerAdapter.__module__}.HFServerAdapter"


def use_cpu_platform() -> None:
    """Make this process use the CPU platform now (env + verl's platform singleton) and register
    everything. For the driver process; Ray processes get it from :func:`~.settings.env_for_workers`."""
    from verl.plugin.platform import get_platform, set_platform

    for key, value in env_for_workers().items():
        if key.startswith("VERL_"):
            os.environ[key] = value
        else:
            os.environ.setdefault(key, value)
    register_platform()
    register_rollout()
    if not isinstance(get_platform(), PlatformCPU):
        set_platform(PlatformCPU())
    register_engines()


def register() -> None:
    """Everything this package adds to verl. Engines only when the CPU platform is selected
    (``VERL_PLATFORM=cpu``): importing the engines fixes verl's platform for the process."""
    register_platform()
    register_rollout()
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME:
        register_engines()


register()
