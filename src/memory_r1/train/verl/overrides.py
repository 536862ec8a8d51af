"""Training recipes -> Hydra overrides for verl's ``ppo_trainer`` config.

A training recipe (``recipes/{backbone}/{answer,manager}/{grpo,ppo}.yaml``) holds our own keys and a
``verl:`` mapping of verl config keys (dotted, or nested mappings) to values::

    stage: answer                 # answer | manager
    algo: grpo                    # grpo | ppo (must agree with verl's algorithm.adv_estimator)
    device: cpu                   # cpu: our CPU stack (memory_r1.train.verl.cpu); gpu: verl's own
    dtype: auto                   # CPU only: bf16 where this CPU runs it natively, else fp32 (measured)
    episodes: {source: observations, top_k: 5, distill: false, ...}
    reward: {name: answer_f1}     # answer_em | answer_f1 | manager_em | manager_f1 (+ answerer for the manager)
    verl:
      algorithm.adv_estimator: grpo
      actor_rollout_ref.actor.optim.lr: 2.0e-5
      ...

A key that verl's config does not have fails when the overrides are composed (Hydra's struct
mode), unless it is written with Hydra's ``+`` (add) prefix on purpose. The run-specific keys
(model path, data files, checkpoint folder, reward function and its kwargs, resume mode, Ray
address) are added by :func:`recipe_to_overrides`, not written in recipes.

>>> hydra_value([1e-06, True, None, "a b", {"k": "v"}])
"[1e-06,true,null,'a b',{k:v}]"
>>> flatten_verl({"trainer": {"nnodes": 1}, "+ray_kwargs.ray_init.x": {"y": 2}})
{'trainer.nnodes': 1, '+ray_kwargs.ray_init.x.y': 2}
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ALGOS = ("grpo", "ppo")
ADV_ESTIMATOR = {"grpo": "grpo", "ppo": "gae"}
REWARD_FN_PATH = "pkg://memory_r1.train.verl.reward"
REWARD_FN_NAME = "compute_score"
#: verl keys that set the precision of a CPU run (:func:`precision_overrides`)
PRECISION_KEYS = (
    "actor_rollout_ref.rollout.dtype",
    "actor_rollout_ref.actor.fsdp_config.mixed_precision",
    "actor_rollout_ref.ref.fsdp_config.mixed_precision",
    "critic.fsdp.mixed_precision",
)

_BARE = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./\-]*$")
_KEYWORDS = {"true", "false", "null", "none", "nan", "inf", "yes", "no", "on", "off"}


class RecipeSchemaError(ValueError):
    """A training recipe with a missing or wrong key of our own (verl's keys are checked by verl)."""


def hydra_value(value: Any) -> str:
    """A Python value in Hydra's override grammar (strings quoted unless plainly safe)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot pass {value!r} to Hydra")
        return repr(value)
    if isinstance(value, str):
        if _BARE.match(value) and value.lower() not in _KEYWORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, Path):
        return hydra_value(str(value))
    raise TypeError(f"cannot pass a {type(value).__name__} to Hydra: {value!r}")


def flatten_verl(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested and dotted keys -> one level of dotted keys (a ``+`` stays on the first part)."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_verl(value, full))
        else:
            out[full] = value
    return out


def check_recipe(recipe: Mapping) -> dict:
    """Our own keys against the recipe model of the recipe's stage (:func:`memory_r1.train.stages.train_recipe`:
    known, typed, the stage's episode source), then what the schema leaves to verl's wing: the algo's
    advantage estimator and the stage's reward names. Returns the validated recipe (every key of ours
    with its value). Raises :class:`memory_r1.config.RecipeError` / RecipeSchemaError."""
    from memory_r1.train.stages import get_stage, train_recipe

    r = train_recipe(dict(recipe), "recipe")
    adv = flatten_verl(r.verl).get("algorithm.adv_estimator")
    if adv != ADV_ESTIMATOR[r.algo]:
        raise RecipeSchemaError(f"algo {r.algo} needs verl algorithm.adv_estimator={ADV_ESTIMATOR[r.algo]}, got {adv!r}")
    allowed = get_stage(r.stage).rewards
    if r.reward.name not in allowed:
        raise RecipeSchemaError(f"reward.name for the {r.stage} stage must be one of {', '.join(allowed)}, "
                                f"got {r.reward.name!r}")
    return r.model_dump()


def precision_overrides(dtype: str = "auto", critic: bool = True) -> list[str]:
    """verl overrides for the precision of a CPU run: ``dtype`` (``auto``: what this CPU runs fastest,
    :func:`memory_r1.hardware.resolve_cpu_dtype`) for the rollout, and for training either verl's
    default mixed precision (bf16 compute over fp32 master weights) or fp32 throughout (no autocast).

    >>> precision_overrides("bf16")
    ['actor_rollout_ref.rollout.dtype=bfloat16']
    >>> precision_overrides("fp32", critic=False)[1]
    '+actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}'
    """
    from memory_r1.hardware import resolve_cpu_dtype

    name = resolve_cpu_dtype(dtype)[0]
    out = [f"{PRECISION_KEYS[0]}={name}"]
    if name == "float32":
        fp32 = "{param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}"
        out += [f"+{k}={fp32}" for k in PRECISION_KEYS[1:3 + int(critic)]]
    return out


def reward_kwargs(recipe: Mapping, log_path: str | Path | None = None) -> dict:
    """The kwargs verl passes to :func:`memory_r1.train.verl.reward.compute_score` (``recipe``
    validated by :func:`check_recipe`): the reward's name, what the recipe's stage adds from its
    ``reward`` section (the manager's frozen ``answerer``), and the per-call log."""
    from memory_r1.train.stages import get_stage

    reward = recipe["reward"]
    kw: dict[str, Any] = {"reward": reward["name"], **get_stage(recipe["stage"]).reward_kwargs(reward)}
    if log_path is not None:
        kw["log_path"] = str(log_path)
    return kw


#: verl keys that take the recipe's top-level ``seed`` unless its ``verl:`` section sets them
SEED_KEYS = ("data.seed", "actor_rollout_ref.rollout.seed")


def seeded_verl(recipe: Mapping) -> dict:
    """The recipe's ``verl:`` keys (flat) with the top-level ``seed`` in :data:`SEED_KEYS` (the data
    order and the rollout's sampling) where the section does not set them, so ``seed=1`` alone
    re-runs a recipe with another seed.

    >>> seeded_verl({"seed": 3, "verl": {"data.seed": 7}})
    {'data.seed': 7, 'actor_rollout_ref.rollout.seed': 3}
    """
    given = flatten_verl(recipe.get("verl") or {})
    seed = recipe.get("seed")
    if seed is not None:
        for key in SEED_KEYS:
            if key not in given and "+" + key not in given:
                given[key] = seed
    return given


def recipe_to_overrides(
    recipe: Mapping,
    *,
    model_path: str | Path | None = None,
    train_files: str | Path | None = None,
    val_files: str | Path | None = None,
    out_dir: str | Path | None = None,
    experiment_name: str | None = None,
    resume: bool | None = None,
    ray_address: str | None = None,
    reward_log: str | Path | None = None,
) -> list[str]:
    """Hydra overrides for verl's ``ppo_trainer``: the recipe's ``verl:`` keys, then the reward
    function (ours, with the recipe's reward kwargs), then the run-specific keys that are given.

    ``out_dir``: checkpoints in ``out_dir/checkpoints`` (verl's ``trainer.default_local_dir``), the
    rollouts and validation generations in ``out_dir/generations/{rollout,val}/<step>.jsonl``;
    ``resume``: ``trainer.resume_mode`` auto (continue from the latest checkpoint there) or disable;
    ``ray_address``: join an existing Ray cluster instead of starting one."""
    recipe = check_recipe(recipe)
    given = seeded_verl(recipe)
    out = [f"{k}={hydra_value(v)}" for k, v in given.items()]
    if recipe["device"] == "cpu":  # the recipe's dtype (auto: measured); verl keys the recipe sets win
        set_by_recipe = {k.lstrip("+") for k in given}
        out += [o for o in precision_overrides(recipe["dtype"], critic=recipe["algo"] == "ppo")
                if o.split("=", 1)[0].lstrip("+") not in set_by_recipe]
    out += [
        f"reward.custom_reward_function.path={REWARD_FN_PATH}",
        f"reward.custom_reward_function.name={REWARD_FN_NAME}",
        f"+reward.custom_reward_function.reward_kwargs={hydra_value(reward_kwargs(recipe, reward_log))}",
    ]
    if model_path is not None:
        out.append(f"actor_rollout_ref.model.path={hydra_value(str(model_path))}")
        if recipe["algo"] == "ppo":
            out.append(f"critic.model.path={hydra_value(str(model_path))}")
    if train_files is not None:
        out.append(f"data.train_files={hydra_value(str(train_files))}")
    if val_files is not None:
        out.append(f"data.val_files={hydra_value(str(val_files))}")
    if out_dir is not None:
        out.append(f"trainer.default_local_dir={hydra_value(str(Path(out_dir) / 'checkpoints'))}")
        # verl dumps each step's rollouts and each validation's generations (input, output, score)
        # as JSONL: every trained-on and held-out completion stays readable after the run
        for key, sub in (("trainer.rollout_data_dir", "rollout"), ("trainer.validation_data_dir", "val")):
            if given.get(key) is None:
                out.append(f"{key}={hydra_value(str(Path(out_dir) / 'generations' / sub))}")
    if experiment_name is not None:
        out.append(f"trainer.experiment_name={hydra_value(experiment_name)}")
    if resume is not None:
        out.append(f"trainer.resume_mode={'auto' if resume else 'disable'}")
    if ray_address:
        # joining a cluster: ray.init takes no resource counts
        out += [
            f"+ray_kwargs.ray_init.address={hydra_value(ray_address)}",
            "ray_kwargs.ray_init.num_cpus=null",
        ]
        if recipe["device"] == "cpu":
            out.append("ray_kwargs.ray_init.num_gpus=null")
    return out
