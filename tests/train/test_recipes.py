"""Every training recipe against verl's own config schema: composed with Hydra (a key verl does not
have fails) and checked by verl's validate_config, with no run. Plus the paper's settings in the GPU
recipes and the CPU sizes in the SmolLM2 ones."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("verl")

from memory_r1.config import RecipeError, load_recipe, recipes_dir  # noqa: E402
from memory_r1.train.stages import manager as manager_stage  # noqa: E402
from memory_r1.train.verl.config import compose_config, compose_recipe  # noqa: E402
from memory_r1.train.verl.overrides import (  # noqa: E402
    RecipeSchemaError,
    check_recipe,
    flatten_verl,
    hydra_value,
    recipe_to_overrides,
)

RECIPES = sorted(recipes_dir().glob("*/*/*.yaml"))
EXPECTED = {f"{b}/{s}/{a}.yaml" for b in ("qwen2.5-7b", "llama3.1-8b", "smollm2-135m")
            for s in ("answer", "manager") for a in ("grpo", "ppo")}


def _tiny_model_dir(path: Path) -> Path:
    """A tiny Llama config + word-level tokenizer: what verl's model config reads (no weights)."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    words = ["[UNK]", "[PAD]", "<eos>", "<|user|>", "<|system|>", "<|assistant|>"]
    tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="<eos>")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} <eos> {% endfor %}"
    fast.save_pretrained(str(path))
    LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=2, pad_token_id=1, eos_token_id=2,
                architectures=["LlamaForCausalLM"]).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return _tiny_model_dir(tmp_path_factory.mktemp("tiny-model"))


def _compose(recipe: dict, model_dir: Path, tmp: Path):
    return compose_recipe(recipe, model_path=model_dir, train_files=tmp / "train.parquet",
                          val_files=tmp / "val.parquet", out_dir=tmp / "run", resume=False,
                          reward_log=tmp / "rewards.jsonl")


def test_every_expected_recipe_exists():
    found = {str(p.relative_to(recipes_dir())) for p in RECIPES}
    assert EXPECTED <= found, sorted(EXPECTED - found)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: str(p.relative_to(recipes_dir())))
def test_recipe_composes_against_verls_schema(path: Path, model_dir: Path, tmp_path: Path):
    backbone, stage, algo = path.relative_to(recipes_dir()).with_suffix("").parts
    recipe = load_recipe(path)
    check_recipe(recipe)
    assert (recipe["stage"], recipe["algo"]) == (stage, algo)
    cfg = _compose(recipe, model_dir, tmp_path)
    # every key of the recipe reached verl's config with the recipe's value
    from omegaconf import OmegaConf

    for key, value in flatten_verl(recipe["verl"]).items():
        got = OmegaConf.select(cfg, key.lstrip("+"))
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert got == value, f"{key}: recipe {value!r}, verl config {got!r}"
    assert cfg.reward.custom_reward_function.path == "pkg://memory_r1.train.verl.reward"
    assert "hf_model" in cfg.actor_rollout_ref.actor.checkpoint.save_contents
    assert cfg.actor_rollout_ref.rollout.val_kwargs.do_sample is False  # greedy validation
    assert cfg.actor_rollout_ref.rollout.temperature == 1.0
    if algo == "grpo":
        assert cfg.algorithm.adv_estimator == "grpo" and cfg.actor_rollout_ref.actor.use_kl_loss
    else:
        assert cfg.algorithm.adv_estimator == "gae" and cfg.critic.model.path == str(model_dir)
    kwargs = cfg.reward.custom_reward_function.reward_kwargs
    assert kwargs.reward == recipe["reward"]["name"]
    if stage == "manager":
        assert set(kwargs) <= {"reward", "answerer", "log_path", *manager_stage.SERVER_KEYS}
        assert kwargs.answerer_server == recipe["reward"].get("answerer_server", "ray")
    if backbone == "smollm2-135m":  # sized for this CPU
        assert recipe["device"] == "cpu" and cfg.actor_rollout_ref.rollout.name == "hf"
        assert cfg.data.train_batch_size <= 8 and cfg.data.max_prompt_length <= 1024
        assert 32 <= cfg.data.max_response_length <= 48
        assert 1e-5 <= cfg.actor_rollout_ref.actor.optim.lr <= 5e-5
        assert cfg.trainer.device == "cpu"
        # micro-batches that fit 24 GB in fp32 too (8 ran out of memory there at step 1)
        assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu <= 2
        assert cfg.actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu <= 2
        # a reward other than the paper's is named so
        assert recipe["reward"]["name"].endswith("_f1")
    else:  # the paper's settings
        assert recipe["device"] == "gpu" and cfg.actor_rollout_ref.rollout.name == "vllm"
        assert cfg.data.train_batch_size == 128
        assert cfg.data.max_prompt_length == 4096 and cfg.data.max_response_length == 2048
        assert cfg.actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu == 2
        assert cfg.actor_rollout_ref.actor.optim.lr == 1e-6
        assert cfg.trainer.n_gpus_per_node == 4
        assert recipe["reward"]["name"].endswith("_em")
        if algo == "ppo":
            assert cfg.critic.optim.lr == 1e-5 and cfg.critic.ppo_micro_batch_size_per_gpu == 2
        if stage == "answer":
            assert recipe["episodes"]["top_k"] == 30


def test_a_key_verl_does_not_have_fails(model_dir, tmp_path):
    recipe = load_recipe(recipes_dir() / "smollm2-135m" / "answer" / "grpo.yaml")
    recipe["verl"]["actor_rollout_ref.actor.optim.learning_rate"] = 1e-5
    with pytest.raises(Exception, match="learning_rate"):
        _compose(recipe, model_dir, tmp_path)


def test_a_setting_verl_refuses_fails(model_dir, tmp_path):
    recipe = load_recipe(recipes_dir() / "qwen2.5-7b" / "answer" / "grpo.yaml")
    recipe["verl"]["data.train_batch_size"] = 30  # fewer prompts than one PPO mini-batch
    with pytest.raises(ValueError, match="ppo_mini_batch_size"):
        _compose(recipe, model_dir, tmp_path)


def test_our_keys_are_checked():
    recipe = load_recipe(recipes_dir() / "smollm2-135m" / "answer" / "grpo.yaml")
    with pytest.raises(RecipeSchemaError, match="adv_estimator"):
        check_recipe({**recipe, "algo": "ppo"})
    with pytest.raises(RecipeSchemaError, match="reward.name"):
        check_recipe({**recipe, "reward": {"name": "manager_em"}})
    with pytest.raises(RecipeError, match=r"unknown key episode \(the recipe has: "):
        check_recipe({**recipe, "episode": {}})
    with pytest.raises(RecipeError, match=r"device: input should be 'cpu' or 'gpu'"):
        check_recipe({**recipe, "device": "tpu"})


def test_run_specific_overrides():
    recipe = load_recipe(recipes_dir() / "smollm2-135m" / "manager" / "ppo.yaml")
    ov = recipe_to_overrides(recipe, model_path="/m", out_dir="/runs/x", resume=True, ray_address="10.0.0.1:6379",
                             reward_log="/runs/x/rewards.jsonl")
    assert "actor_rollout_ref.model.path=/m" in ov and "critic.model.path=/m" in ov
    assert "trainer.default_local_dir=/runs/x/checkpoints" in ov and "trainer.resume_mode=auto" in ov
    assert "trainer.rollout_data_dir=/runs/x/generations/rollout" in ov
    assert "trainer.validation_data_dir=/runs/x/generations/val" in ov
    assert "+ray_kwargs.ray_init.address='10.0.0.1:6379'" in ov
    kw = next(o for o in ov if o.startswith("+reward.custom_reward_function.reward_kwargs="))
    assert "reward:manager_f1" in kw and "answerer:'hf:smollm2-135m'" in kw and "log_path:/runs/x/rewards.jsonl" in kw


def test_hydra_values_round_trip():
    cfg = compose_config([f"trainer.project_name={hydra_value('a b:c')}", f"trainer.logger={hydra_value(['console'])}",
                          f"trainer.experiment_name={hydra_value('true')}"], cpu=False)
    assert cfg.trainer.project_name == "a b:c" and list(cfg.trainer.logger) == ["console"]
    assert cfg.trainer.experiment_name == "true"


def test_the_recipe_seed_reaches_verl_data_order_and_sampling(model_dir, tmp_path):
    from memory_r1.config import apply_overrides
    from memory_r1.train.runner import _resume_key

    recipe = load_recipe(recipes_dir() / "smollm2-135m" / "answer" / "grpo.yaml")
    cfg = compose_recipe(recipe, model_path=model_dir, out_dir=tmp_path)
    assert (cfg.data.seed, cfg.actor_rollout_ref.rollout.seed) == (recipe["seed"], recipe["seed"])
    other = apply_overrides(recipe, ["seed=1"])
    cfg1 = compose_recipe(other, model_path=model_dir, out_dir=tmp_path)
    assert (cfg1.data.seed, cfg1.actor_rollout_ref.rollout.seed) == (1, 1)
    pinned = apply_overrides(recipe, ["seed=1", "verl.data.seed=5"])  # a verl key the recipe writes wins
    assert compose_recipe(pinned, model_path=model_dir, out_dir=tmp_path).data.seed == 5
    # a run folder from before (data.seed written in verl:, the same seed) resumes; another seed does not
    old = {**recipe, "verl": {**recipe["verl"], "data.seed": recipe["seed"]}}
    assert _resume_key(old) == _resume_key(recipe) != _resume_key(other)
