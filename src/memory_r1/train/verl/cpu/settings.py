"""What every process of a CPU run needs: the environment Ray hands to each process and the Hydra
overrides that put verl's trainer on the CPU. Names shared by the modules of this package.

Config (:func:`cpu_overrides`, Hydra overrides for verl's ``ppo_trainer``): ``trainer.device=cpu``;
one logical GPU per training rank (``trainer.n_gpus_per_node=1`` + ``ray_init.num_gpus=1``); 16
logical CPUs for Ray (with 2 the TransferQueue storage actors are never scheduled and the run waits
forever, silently); one TransferQueue storage unit; ``fsdp2``; no remove-padding (flash-attn varlen
kernels); no ``torch.compile``; SDPA attention; one agent-loop and one reward worker (not eight); no
Ray dashboard; the environment of :func:`env_for_workers` for every Ray process.

>>> "trainer.device=cpu" in cpu_overrides()
True
>>> env_for_workers()["VERL_PLATFORM"], env_for_workers()["VERL_USE_EXTERNAL_MODULES"]
('cpu', 'memory_r1.train.verl.cpu')
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any, Optional

from memory_r1.threads import worker_env

PLATFORM_NAME = "cpu"
ROLLOUT_NAME = "hf"
#: what ``VERL_USE_EXTERNAL_MODULES`` names: the package, whose import registers everything
MODULE_NAME = __name__.rpartition(".")[0]


def get_logger(name: str) -> logging.Logger:
    """A module's logger, at ``$VERL_LOGGING_LEVEL`` when set (verl's convention for its own loggers,
    also in Ray workers)."""
    log = logging.getLogger(name)
    if os.environ.get("VERL_LOGGING_LEVEL"):
        log.setLevel(os.environ["VERL_LOGGING_LEVEL"].upper())
    return log


def env_for_workers(threads: Optional[int] = None) -> dict[str, str]:
    """Environment every verl process needs (set it before ``ray.init`` and/or pass it as
    ``ray_kwargs.ray_init.runtime_env.env_vars``): this plug-in and platform, the thread settings
    of :func:`memory_r1.threads.worker_env`, and nothing fetched from a hub."""
    return {
        "VERL_PLATFORM": PLATFORM_NAME,
        "VERL_USE_EXTERNAL_MODULES": MODULE_NAME,
        **worker_env(threads),
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def cpu_overrides(
    *, critic: bool = True, num_cpus: int = 16, extra_env: Optional[dict[str, str]] = None,
    dtype: str = "auto",
) -> list[str]:
    """Hydra overrides (for verl's ``ppo_trainer`` config) that make the trainer run on CPU.

    ``critic``: also set the critic's engine options (harmless when no critic is used).
    ``extra_env``: more environment variables for every Ray process (``runtime_env.env_vars``).
    ``dtype``: rollout dtype and training precision
    (:func:`~memory_r1.train.verl.overrides.precision_overrides`; ``auto``: measured on this CPU)."""
    from memory_r1.train.verl.overrides import precision_overrides

    env = ",".join(f"{k}:'{v}'" for k, v in {**env_for_workers(), **(extra_env or {})}.items())
    out = [
        "trainer.device=cpu",
        "trainer.nnodes=1",
        "trainer.n_gpus_per_node=1",
        "+ray_kwargs.ray_init.num_gpus=1",
        f"ray_kwargs.ray_init.num_cpus={num_cpus}",
        "+ray_kwargs.ray_init.include_dashboard=False",
        f"+ray_kwargs.ray_init.runtime_env.env_vars={{{env}}}",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        "data.dataloader_num_workers=0",
    ]
    out += precision_overrides(dtype, critic=critic)
    if critic:
        out += [
            "critic.strategy=fsdp2",
            "critic.model.use_remove_padding=False",
            "critic.fsdp.use_torch_compile=False",
            "+critic.model.override_config.attn_implementation=sdpa",
        ]
    return out




def peak_rss_bytes() -> int:
    """This process's peak resident memory."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


_libc_trim = None


def release_free_memory() -> int:
    """Give the pages glibc's allocator holds free back to the system (``malloc_trim(0)``); returns
    the bytes of RSS released (0 where the C library has no ``malloc_trim``).

    What ``empty_cache()`` means on the CPU device. Measured on the answer GRPO recipe (AMX Xeon,
    2 cores): without it verl's actor worker grew from ~11 to ~14 GB RSS over 23 steps, and one
    ``malloc_trim(0)`` took it to 6.5 GB: the rest was freed memory the allocator kept (each step's
    vocabulary-sized logits and their gradients are freed and allocated again in other sizes)."""
    global _libc_trim
    if _libc_trim is None:
        import ctypes
        import ctypes.util

        try:
            _libc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            _libc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # musl, macOS: no malloc_trim
            _libc_trim = False
    if not _libc_trim:
        return 0
    before = rss_bytes()
    _libc_trim(0)
    return max(0, before - rss_bytes())


def rss_bytes() -> int:
    """This process's resident memory now."""
    import psutil

    return psutil.Process().memory_info().rss


def cfg_get(cfg: Any, key: str, default: Any = None) -> Any:
    """``cfg[key]`` of a verl config, an OmegaConf mapping or a dataclass, else ``default``."""
    if cfg is None:
        return default
    if hasattr(cfg, "get"):
        try:
            return cfg.get(key, default)
        except Exception:  # dataclass configs with a get() of another signature
            pass
    return getattr(cfg, key, default)
