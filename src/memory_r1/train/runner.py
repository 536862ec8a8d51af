"""`memr1 train <stage>` (one command per registered stage: answer, manager): episodes -> parquet ->
verl's trainer -> an HF checkpoint (``memr1 train loop``: :mod:`memory_r1.train.loop`).

Output folder (default ``runs/train/{backbone}-{stage}-{algo}``)::

    recipe.yaml          the resolved recipe (after key=value overrides)
    manifest.json        request, seed, versions, data sha256, git commit, episode statistics
    overrides.txt        the Hydra overrides handed to verl (one per line)
    episodes/train.parquet, episodes/val.parquet   rows in verl's RL dataset schema
    banks/               banks built by the Memory Manager (episodes.source=pipeline)
    metrics.jsonl        verl's file logger: one JSON line per step (of the last run; a resumed
                         run's earlier records are kept as metrics.1.jsonl, ...)
    rewards.jsonl        one JSON line per scored completion (score, parsed, ops); same rotation
    checkpoints/global_step_N/actor/huggingface   the trained policy in HF format
    result.json          steps, s/step, peak memory, reward statistics, the HF checkpoint path

``memr1 eval --answer <hf checkpoint>`` (or ``--manager``) loads the checkpoint.

Resume (``--resume``): the folder's episodes are reused (the resolved recipe must be the one
stored) and verl continues from its latest checkpoint (``trainer.resume_mode=auto``). Without it, a
folder that already holds a run is refused.

Overrides: ``key=value`` sets our recipe keys (``episodes.top_k=3``); ``verl.<verl key>=value``
sets a verl key (``verl.trainer.total_training_steps=3``).
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from memory_r1.runs import atomic_write, new_manifest, seed_everything, write_manifest
from memory_r1.train.verl.launch import MICRO_BATCH_KEYS

log = logging.getLogger(__name__)


class TrainError(RuntimeError):
    """A training request that cannot run as asked (the message is one line)."""


@dataclass
class TrainRequest:
    stage: str  # a registered stage (memory_r1.train.stages.STAGES): answer | manager
    backbone: str = "smollm2-135m"
    algo: str = "grpo"
    recipe: Path | None = None
    manager: str | None = None  # Memory Manager checkpoint that builds the banks (pipeline source)
    banks: Path | None = None  # pre-built banks (answer stage), e.g. <eval out>/banks
    init: str | None = None  # policy weights to start from (default: the backbone)
    out: Path | None = None
    resume: bool = False
    ray_address: str | None = None
    overrides: list[str] = field(default_factory=list)
    data: Path | None = None
    dry_run: bool = False  # build episodes, compose and check verl's config, do not train


@dataclass
class TrainResult:
    out: Path
    hf_checkpoint: Path | None
    steps: int = 0
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    peak_memory_gb: float | None = None
    rewards: dict = field(default_factory=dict)
    dry_run: bool = False
    #: where it trained: device, training precision, and on CPU the kind (:func:`training_environment`)
    environment: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["out"] = str(self.out)
        d["hf_checkpoint"] = str(self.hf_checkpoint) if self.hf_checkpoint else None
        return d


# ------------------------------------------------------------------------------ recipe


def apply_train_overrides(recipe: dict, overrides: list[str]) -> dict:
    """``verl.<key>=v`` sets a verl key (kept dotted); anything else is a dotted recipe override.

    >>> r = apply_train_overrides({"verl": {"trainer.save_freq": 10}, "episodes": {"top_k": 5}},
    ...                           ["verl.trainer.save_freq=2", "episodes.top_k=3"])
    >>> r["verl"], r["episodes"]
    ({'trainer.save_freq': 2}, {'top_k': 3})
    """
    from memory_r1.config import RecipeError, apply_overrides

    out = copy.deepcopy(recipe)
    rest = []
    for item in overrides:
        if "=" not in item:
            raise RecipeError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if key.startswith("verl.") or key.startswith("+verl."):
            plus = "+" if key.startswith("+") else ""
            vkey = plus + key.split("verl.", 1)[1]
            try:
                value = yaml.safe_load(raw) if raw != "" else ""
            except yaml.YAMLError as exc:
                raise RecipeError(f"override {item!r}: {exc}") from None
            verl = out.setdefault("verl", {})
            # a nested mapping in the recipe is replaced by the dotted key
            verl.pop(vkey.lstrip("+"), None)
            verl[vkey] = value
        else:
            rest.append(item)
    return apply_overrides(out, rest)


def resolve_recipe(req: TrainRequest) -> tuple[dict, Path]:
    """The recipe with the request's overrides, validated against its stage's model
    (:func:`memory_r1.train.stages.train_recipe`: every key of ours has its value; the ``verl:``
    keys are verl's to check when composed), and its path."""
    from memory_r1.config import load_recipe, recipe_path
    from memory_r1.train.stages import STAGES, train_recipe
    from memory_r1.train.verl.overrides import ALGOS, check_recipe

    if req.stage not in STAGES:
        raise TrainError(f"unknown stage {req.stage!r}; choose {' or '.join(STAGES)}")
    if req.algo not in ALGOS:
        raise TrainError(f"unknown algo {req.algo!r}; choose from {', '.join(ALGOS)}")
    path = Path(req.recipe) if req.recipe else recipe_path(req.backbone, req.stage, req.algo)
    if not path.is_file():
        raise TrainError(f"no recipe {path} (pass --recipe PATH)")
    recipe = train_recipe(load_recipe(path), path, req.overrides, apply=apply_train_overrides).model_dump()
    check_recipe(recipe)
    if recipe["stage"] != req.stage or recipe["algo"] != req.algo:
        raise TrainError(f"{path} is a {recipe['stage']}/{recipe['algo']} recipe, not {req.stage}/{req.algo}")
    return recipe, path


def default_out_dir(req: TrainRequest) -> Path:
    return Path("runs") / "train" / f"{Path(req.backbone).name}-{req.stage}-{req.algo}"


def hf_model_dir(name_or_path: str) -> Path:
    """An HF-format directory for a backbone alias or a checkpoint path (GGUF de-quantised once)."""
    from memory_r1.backbones import resolve_backbone
    from memory_r1.llm.hf import ensure_hf_checkpoint

    return Path(ensure_hf_checkpoint(resolve_backbone(name_or_path)))


# ------------------------------------------------------------------------------ folder


def _has_run(out: Path) -> bool:
    ck = out / "checkpoints"
    return (out / "metrics.jsonl").exists() or (ck.is_dir() and any(ck.glob("global_step_*")))


def latest_hf_checkpoint(out: Path) -> Path | None:
    """``checkpoints/global_step_N/actor/huggingface`` of the latest step verl recorded."""
    ck = out / "checkpoints"
    marker = ck / "latest_checkpointed_iteration.txt"
    steps = []
    if marker.exists():
        try:
            steps = [int(marker.read_text().strip())]
        except ValueError:
            steps = []
    if not steps:
        steps = sorted((int(p.name.split("_")[-1]) for p in ck.glob("global_step_*") if p.name.split("_")[-1].isdigit()),
                       reverse=True)
    for s in steps:
        hf = ck / f"global_step_{s}" / "actor" / "huggingface"
        if (hf / "config.json").exists():
            return hf
    return None


def ensure_tokenizer(hf_dir: Path, model_dir: Path) -> None:
    """Make the HF checkpoint loadable on its own: copy the tokenizer of the starting model when
    verl did not write one."""
    if any((hf_dir / n).exists() for n in ("tokenizer.json", "tokenizer_config.json")):
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True).save_pretrained(str(hf_dir))
    log.info("copied the tokenizer of %s into %s", model_dir, hf_dir)


def reward_stats(path: Path) -> dict:
    """Per data source and split: completions scored, unparseable ones, mean score."""
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = f"{r.get('data_source')}/{r.get('split')}"
        s = out.setdefault(key, {"reward": r.get("reward"), "scored": 0, "unparsed": 0, "score_sum": 0.0})
        s["scored"] += 1
        s["unparsed"] += 0 if r.get("parsed") else 1
        s["score_sum"] += float(r.get("score", 0.0))
    for s in out.values():
        s["mean_score"] = round(s.pop("score_sum") / max(s["scored"], 1), 4)
    return out


def _manifest(req: TrainRequest, recipe: dict, recipe_file: Path, model_dir: Path, info: dict) -> dict:
    from memory_r1.paths import resolve_locomo_path

    req_d = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()}
    fields = {"request": req_d, "recipe_path": str(recipe_file), "recipe": recipe, "model_path": str(model_dir),
              "episodes": info}
    return new_manifest(fields, seed=recipe["seed"], data_path=resolve_locomo_path(req.data),
                        dtype=recipe["dtype"], measure_host=recipe["device"] == "cpu")


# ------------------------------------------------------------------------------ run


@dataclass
class Prepared:
    """A run folder ready to train: the resolved recipe, the Hydra overrides (``overrides.txt``), and
    verl's config composed and validated once (:class:`~memory_r1.train.verl.config.VerlJob`)."""

    recipe: dict
    overrides: list[str]
    out: Path
    model_dir: Path
    job: object  # VerlJob


def prepare(req: TrainRequest) -> Prepared:
    """Resolve the recipe, check the folder, compose and validate verl's config (before any episode
    is built: a key verl does not have fails here), build (or reuse) the episodes and write
    everything but the training outputs."""
    from memory_r1.train.stages import build_episodes, row_stats
    from memory_r1.train.verl.config import build_job
    from memory_r1.train.verl.overrides import flatten_verl, recipe_to_overrides
    from memory_r1.train.verl.rows import read_rows, write_rows

    recipe, recipe_file = resolve_recipe(req)
    out = Path(req.out or default_out_dir(req)).resolve()
    stored = out / "recipe.yaml"
    if _has_run(out) and not req.resume:
        raise TrainError(f"{out} already holds a run; pass --resume to continue it or use another --out")
    if req.resume and stored.exists():
        from memory_r1.train.stages import train_recipe

        # the stored recipe validated too: keys added to the schema since take their defaults
        old = train_recipe(yaml.safe_load(stored.read_text()), stored).model_dump()
        if _resume_key(json.loads(json.dumps(old))) != _resume_key(json.loads(json.dumps(recipe))):
            raise TrainError(f"{out} was trained with another recipe (see {stored}); use another --out")
    model_dir = hf_model_dir(req.init or req.backbone)
    train_file, val_file = out / "episodes" / "train.parquet", out / "episodes" / "val.parquet"
    overrides = recipe_to_overrides(
        recipe,
        model_path=model_dir,
        train_files=train_file,
        val_files=val_file,
        out_dir=out,
        experiment_name=out.name,
        resume=req.resume,
        ray_address=req.ray_address,
        reward_log=out / "rewards.jsonl",
    )
    job = build_job(overrides, cpu=recipe["device"] == "cpu", metrics_path=out / "metrics.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    seed = recipe["seed"]
    seed_everything(seed)
    if req.resume and train_file.exists():
        old_manifest = out / "manifest.json"
        info = json.loads(old_manifest.read_text()).get("episodes", {}) if old_manifest.exists() else {}
        info.update(reused=True, train=row_stats(read_rows(train_file)),
                    val=row_stats(read_rows(val_file)) if val_file.exists() else {})
        log.info("resuming: reusing the episodes in %s", train_file.parent)
    else:
        eps = build_episodes(req.stage, recipe["episodes"], backbone=req.backbone, out_dir=out,
                             manager=req.manager, banks=req.banks, data=req.data)
        write_rows(eps.train, train_file)
        if eps.val:
            write_rows(eps.val, val_file)
        info = {**eps.info, "train": row_stats(eps.train), "val": row_stats(eps.val)}
    if not val_file.exists():  # verl always wants validation files
        shutil.copyfile(train_file, val_file)
    max_prompt = flatten_verl(recipe["verl"]).get("data.max_prompt_length")
    info["prompt_tokens"] = _prompt_token_stats(model_dir, train_file, max_prompt)
    if info["prompt_tokens"].get("over_limit"):
        log.warning("%d of %d training prompts are longer than data.max_prompt_length=%s (verl drops them)",
                    info["prompt_tokens"]["over_limit"], info["prompt_tokens"]["rows"], max_prompt)
    atomic_write(stored, yaml.safe_dump(json.loads(json.dumps(recipe)), sort_keys=False))
    atomic_write(out / "overrides.txt", "\n".join(overrides) + "\n")
    write_manifest(out, _manifest(req, recipe, recipe_file, model_dir, info), resumed=req.resume)
    return Prepared(recipe, overrides, out, model_dir, job)


#: verl keys a resumed run may change (train for longer, save or validate at other steps, split its
#: batches into smaller micro-batches after running out of memory)
RESUMABLE_KEYS = ("trainer.total_training_steps", "trainer.total_epochs", "trainer.save_freq", "trainer.test_freq",
                  *MICRO_BATCH_KEYS)


def _resume_key(recipe: dict) -> dict:
    """What must not change when a run is resumed: the recipe, with the verl keys it reaches (seeds
    included, whether written in ``verl:`` or taken from ``seed``) but not :data:`RESUMABLE_KEYS`."""
    from memory_r1.train.verl.overrides import seeded_verl

    out = {k: v for k, v in recipe.items() if k != "verl"}
    out["verl"] = {k: v for k, v in seeded_verl(recipe).items() if k not in RESUMABLE_KEYS}
    return out


def _prompt_token_stats(model_dir: Path, train_file: Path, limit: int | None = None) -> dict:
    """Chat-templated prompt lengths of the training rows under the policy's tokenizer."""
    from transformers import AutoTokenizer

    from memory_r1.train.verl.rows import read_rows

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    lens = []
    for r in read_rows(train_file):
        ids = tok.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        lens.append(len(ids))
    if not lens:
        return {}
    lens.sort()
    out = {"min": lens[0], "median": lens[len(lens) // 2], "max": lens[-1], "rows": len(lens)}
    if limit:
        out["over_limit"] = sum(1 for n in lens if n > int(limit))
    return out


def _set_aside(path: Path) -> None:
    """``metrics.jsonl`` -> ``metrics.1.jsonl`` (the next free number), if it exists."""
    if not path.exists():
        return
    n = 1
    while path.with_name(f"{path.stem}.{n}{path.suffix}").exists():
        n += 1
    path.rename(path.with_name(f"{path.stem}.{n}{path.suffix}"))


def run_training(req: TrainRequest) -> TrainResult:
    """Prepare the folder and train with verl (see the module docstring). With ``dry_run`` the
    composed verl config is checked and written (``verl_config.yaml``) instead of training."""
    prep = prepare(req)
    recipe, out, model_dir = prep.recipe, prep.out, prep.model_dir
    if req.dry_run:
        from omegaconf import OmegaConf

        atomic_write(out / "verl_config.yaml", OmegaConf.to_yaml(prep.job.config))
        result = TrainResult(out=out, hf_checkpoint=None, dry_run=True)
        atomic_write(out / "result.json", json.dumps(result.as_dict(), indent=2))
        return result

    from memory_r1.train.verl.launch import launch

    log.info("training %s/%s of %s in %s", req.stage, req.algo, req.backbone, out)
    for name in ("metrics.jsonl", "rewards.jsonl"):  # a resumed run keeps the earlier runs' records
        _set_aside(out / name)
    run = launch(prep.job)
    from memory_r1.train.curves import write_curves

    write_curves(out, f"{req.backbone} {req.stage} {req.algo}", recipe["reward"]["name"])
    hf = latest_hf_checkpoint(out)
    if hf is not None:
        ensure_tokenizer(hf, model_dir)
    else:
        log.warning("no HF checkpoint under %s (is hf_model in save_contents and save_freq > 0?)", out / "checkpoints")
    result = TrainResult(
        out=out,
        hf_checkpoint=hf,
        steps=len(run.metrics),
        seconds=round(run.seconds, 2),
        step_seconds=[round(s, 2) for s in run.step_seconds()],
        peak_memory_gb=round(run.peak_memory_gb, 2) if run.peak_memory_gb is not None else None,
        rewards=reward_stats(out / "rewards.jsonl"),
        environment=training_environment(recipe),
    )
    atomic_write(out / "result.json", json.dumps(result.as_dict(), indent=2))
    return result


def training_environment(recipe: dict) -> dict:
    """The device a run trains on and its training precision; on CPU also the CPU kind (the same
    recipe trains in bf16 mixed precision on one kind, fp32 on another: ``dtype: auto``).

    >>> training_environment({"device": "cuda", "dtype": "auto"})
    {'device': 'cuda', 'dtype': 'auto'}
    """
    if recipe.get("device") != "cpu":
        return {"device": recipe.get("device"), "dtype": recipe.get("dtype")}
    from memory_r1.hardware import kind_record, resolve_cpu_dtype

    dtype, reason = resolve_cpu_dtype(recipe.get("dtype", "auto"))
    return {"device": "cpu", "dtype": dtype, "dtype_reason": reason, "cpu": kind_record()}


def _trained(folder: Path) -> Path | None:
    """The HF checkpoint of a finished training folder (result.json of a real run) when it is on
    disk, else None (a dry run; a folder restored from published results, or whose checkpoints were
    deleted; an unreadable result.json, logged)."""
    res = folder / "result.json"
    if not res.exists():
        return None
    try:
        r = json.loads(res.read_text())
        ck = Path(r["hf_checkpoint"]) if not r.get("dry_run") and r.get("hf_checkpoint") else None
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        log.warning("%s: unreadable (%s): treated as no finished training", res, type(exc).__name__)
        return None
    return ck if ck is not None and ck.is_dir() else None
