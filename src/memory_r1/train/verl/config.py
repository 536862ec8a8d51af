"""verl's ``ppo_trainer`` config, composed with Hydra and validated by verl, once per run.

:func:`compose_config` composes verl's installed ``ppo_trainer`` config (the one ``python -m
verl.trainer.main_ppo`` uses) with a list of overrides; :func:`validate` runs verl's own checks
(``validate_config``, as ``main_ppo`` does). :func:`build_job` does both for a run, with what the run
adds (the CPU overrides and the environment of every Ray process, verl's ``file`` logger): the
:class:`VerlJob` it returns is what :func:`memory_r1.train.verl.launch.launch` trains, and what
``memr1 train --dry-run`` writes, so a run composes and validates its config exactly once.
:func:`compose_recipe` is the same for a recipe without a run (tests, ``memr1 ablate --dry-run``).

>>> cfg = compose_config(["trainer.total_training_steps=2"], cpu=False)
>>> cfg.trainer.total_training_steps
2
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CONFIG_NAME = "ppo_trainer"
FILE_LOGGER_ENV = "VERL_FILE_LOGGER_PATH"


def verl_config_dir() -> Path:
    """verl's installed Hydra config directory (``verl/trainer/config``)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("verl is not installed (pip install -e '.[train]')")
    return Path(spec.origin).parent / "trainer" / "config"


def override_key(override: str) -> str:
    """The dotted key of a Hydra override (without ``+``, ``++`` or ``~``).

    >>> override_key("+ray_kwargs.ray_init.num_gpus=1")
    'ray_kwargs.ray_init.num_gpus'
    """
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(base: list[str], extra: list[str]) -> list[str]:
    """``base`` then ``extra``; a key set in both is kept from ``extra`` only (Hydra refuses ``+key``
    twice), and keeps the ``+`` of the base entry (a key the base adds is not in verl's config).

    >>> merge_overrides(["a=1", "+b.c=2", "d=3"], ["b.c=5", "a=4"])
    ['d=3', '+b.c=5', 'a=4']
    """
    added = {override_key(o) for o in base if o.startswith("+") and not o.startswith("++")}
    keys = {override_key(o) for o in extra}
    merged = [o for o in base if override_key(o) not in keys]
    for o in extra:
        if override_key(o) in added and not o.startswith(("+", "~")):
            o = "+" + o
        merged.append(o)
    return merged


def compose_config(overrides: list[str], *, cpu: bool = True, config_name: str = CONFIG_NAME) -> Any:
    """verl's ``ppo_trainer`` config with ``overrides`` applied (after the CPU overrides of
    :func:`memory_r1.train.verl.cpu.cpu_overrides` when ``cpu``; later overrides win). Returns an
    OmegaConf ``DictConfig``; Hydra refuses a key verl's config does not have."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if cpu:
        from memory_r1.train.verl.cpu import cpu_overrides

        overrides = merge_overrides(cpu_overrides(), overrides)
    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def validate(config: Any) -> None:
    """verl's own config checks (``verl.utils.config.validate_config``), as ``main_ppo`` runs them,
    and the one trainer :func:`~memory_r1.train.verl.launch.launch` drives (V1)."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if not config.trainer.use_v1:
        raise ValueError("memr1 drives verl's V1 trainer (trainer.use_v1=True)")


@dataclass
class VerlJob:
    """A run's composed and validated verl config, with the environment its processes need."""

    config: Any  # OmegaConf DictConfig
    env: dict[str, str] = field(default_factory=dict)  # for the driver and (through the config) every Ray process
    cpu: bool = True
    metrics_path: Optional[Path] = None  # verl's ``file`` logger writes here


def _env_override(env: Mapping[str, str]) -> str:
    return ",".join(f"{k}:'{v}'" for k, v in env.items())


def build_job(overrides: list[str], *, cpu: bool = True, metrics_path: str | Path | None = None) -> VerlJob:
    """Compose verl's config for a run and validate it (once).

    ``cpu``: this machine's CPU (:mod:`memory_r1.train.verl.cpu` platform, engines, ``hf`` rollout,
    its overrides first and its environment for every process). ``metrics_path``: JSONL file for
    verl's ``file`` logger (``$VERL_FILE_LOGGER_PATH`` in every process). Unless ``overrides`` set
    ``trainer.logger``, it is ``[console,file]`` (with ``metrics_path``) or ``[console]`` (verl's
    default also wants wandb)."""
    extra_env: dict[str, str] = {}
    overrides = list(overrides)
    if metrics_path is not None:
        metrics_path = Path(metrics_path).resolve()
        extra_env[FILE_LOGGER_ENV] = str(metrics_path)
    if not any(override_key(o) == "trainer.logger" for o in overrides):  # verl's default includes wandb
        overrides.append("trainer.logger=[console,file]" if metrics_path is not None else "trainer.logger=[console]")
    if cpu:
        from memory_r1.train.verl.cpu import cpu_overrides, env_for_workers

        env = {**env_for_workers(), **extra_env}
        overrides = merge_overrides(cpu_overrides(extra_env=extra_env), overrides)
    else:
        env = extra_env
        if extra_env:
            overrides.insert(0, "+ray_kwargs.ray_init.runtime_env.env_vars={" + _env_override(extra_env) + "}")
    config = compose_config(overrides, cpu=False)
    validate(config)
    return VerlJob(config=config, env=env, cpu=cpu, metrics_path=metrics_path)


def compose_recipe(recipe: Mapping, *, check: bool = True, **run: Any) -> Any:
    """verl's config for a training recipe, without a run: the recipe's overrides
    (:func:`~memory_r1.train.verl.overrides.recipe_to_overrides`, ``run`` gives its run-specific
    keys) composed, and with ``check`` validated by verl. Raises on a key verl does not have or a
    setting verl's own checks refuse."""
    from memory_r1.train.verl.overrides import recipe_to_overrides

    config = compose_config(recipe_to_overrides(recipe, **run), cpu=recipe["device"] == "cpu")
    if check:
        validate(config)
    return config
