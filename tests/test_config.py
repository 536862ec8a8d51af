"""Typed recipes: every shipped recipe validates and resolves to what it says, an unknown key or a
wrong type is refused with its dotted path (in a file or through an override), the llm section is
checked per backend, and the one Answer Agent knob has one name in train and eval recipes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memory_r1.config import (
    RecipeError,
    load_eval_recipe,
    load_recipe,
    recipe_path,
    recipes_dir,
    validate_recipe,
)
from memory_r1.recipes import (
    LLM_OPTIONS,
    EvalRecipe,
    HFOptions,
    ManagerRecipe,
    OpenAIOptions,
    pipeline_config,
)
from memory_r1.train.stages import train_recipe

EVAL_RECIPES = sorted(recipes_dir().glob("*/eval*.yaml"))
TRAIN_RECIPES = sorted(recipes_dir().glob("*/*/*.yaml"))
CPU_EVAL = recipe_path("smollm2-135m", "eval")


def _ids(p: Path) -> str:
    return str(p.relative_to(recipes_dir()))


def _no_nulls(value):
    if isinstance(value, dict):
        return {k: _no_nulls(v) for k, v in value.items() if v is not None}
    return value


def _write(tmp_path: Path, data: dict, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------- shipped recipes


def test_the_recipes_are_found():
    assert {_ids(p) for p in EVAL_RECIPES} >= {"smollm2-135m/eval.yaml", "smollm2-135m/eval-openai.yaml",
                                               "qwen2.5-7b/eval.yaml", "llama3.1-8b/eval.yaml"}
    assert len(TRAIN_RECIPES) >= 12


@pytest.mark.parametrize("path", EVAL_RECIPES, ids=_ids)
def test_every_eval_recipe_resolves_to_what_it_says(path: Path):
    """Validation changes no value a recipe sets and adds only unset (null) keys: a run folder
    written before recipes were typed has the same resume fingerprint."""
    raw = load_recipe(path)
    resolved = load_eval_recipe(path).model_dump()
    assert _no_nulls(resolved) == _no_nulls(raw)


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=_ids)
def test_every_train_recipe_resolves_to_what_it_says(path: Path):
    raw = load_recipe(path)
    recipe = train_recipe(raw, path)
    assert recipe.stage == path.parent.name and recipe.algo == path.stem
    resolved = _no_nulls(recipe.model_dump())
    # what the file sets is kept as written; what it leaves out is the model's default
    for key, value in _no_nulls(raw).items():
        assert resolved[key] == value, key
    added = {k: v for k, v in resolved.items() if k not in raw}
    assert added in ({}, {"dtype": "auto"}), added  # the GPU recipes leave the CPU-only dtype out


def test_the_plans_and_the_compare_recipe_load_and_their_overrides_validate():
    """The other recipes under recipes/: every ablation plan's eval overrides pass its backbone's eval
    recipe schema, its train overrides the training recipe schema, and compare.yaml's bootstrap
    settings load (the plans themselves are checked step by step in tests/eval/test_ablate.py)."""
    from memory_r1.eval.compare import bootstrap_settings
    from memory_r1.eval.plan import load_plan, plan_paths
    from memory_r1.train.runner import apply_train_overrides

    assert bootstrap_settings().resamples >= 2000
    plans = plan_paths()
    assert {p.parent.name for p in plans} >= {"smollm2-135m", "qwen2.5-7b", "llama3.1-8b"}
    for path in plans:
        plan = load_plan(path)
        for row in plan.rows:
            load_eval_recipe(recipe_path(plan.backbone, "eval"), row.overrides)
            if row.train is not None:
                p = recipe_path(plan.backbone, row.train.stage, row.train.algo)
                train_recipe(load_recipe(p), p, row.train.overrides, apply=apply_train_overrides)


def test_the_cpu_recipes_set_every_key_the_code_reads():
    """The CPU eval recipe is the main job: every key the pipeline reads is written in it, so a
    default in the model never decides the result of `make run` unseen."""
    raw = load_recipe(CPU_EVAL)
    for section in ("ingest", "answer_agent", "judge"):
        model = EvalRecipe.model_fields[section].annotation
        unset = {k for k in model.model_fields if k not in raw[section]} - {"top_p", "seed", "stop", "cache"}
        for sub in ("extract", "manager"):
            unset.discard(sub)
            if section == "ingest":
                sub_model = model.model_fields[sub].annotation
                assert not {k for k in sub_model.model_fields if k not in raw[section][sub]} - {
                    "top_p", "seed", "stop"}, sub
        assert not unset, (section, unset)


def test_the_defaults_are_the_papers_settings():
    r = EvalRecipe()
    assert (r.answer_agent.top_k, r.answer_agent.distill) == (30, True)
    assert r.llm == HFOptions() and r.llm.dtype == "auto" and r.judge.prompt == "mem0"
    assert pipeline_config({})["answer"] == r.answer_agent.model_dump()
    assert pipeline_config({})["ingest"] == r.ingest.model_dump()


# ---------------------------------------------------------------------------------- refusals


def test_an_unknown_eval_key_is_refused_with_its_path(tmp_path):
    raw = load_recipe(CPU_EVAL)
    raw["answer_agent"]["topk"] = 5
    path = _write(tmp_path, raw)
    with pytest.raises(RecipeError, match=r"recipe\.yaml: unknown key answer_agent\.topk \(answer_agent has: top_k"):
        load_eval_recipe(path)
    raw = load_recipe(CPU_EVAL)
    raw["ingest"]["manager"]["related"] = 5
    with pytest.raises(RecipeError, match=r"unknown key ingest\.manager\.related \(ingest\.manager has: "):
        load_eval_recipe(_write(tmp_path, raw))
    with pytest.raises(RecipeError, match=r"unknown key answerer \(the recipe has: seed, llm, "):
        load_eval_recipe(_write(tmp_path, {**load_recipe(CPU_EVAL), "answerer": {}}))


def test_an_unknown_key_in_an_override_is_refused_naming_the_override():
    with pytest.raises(RecipeError) as err:
        load_eval_recipe(CPU_EVAL, ["judge.backend=none", "answer_agent.topk=5"])
    assert str(err.value).startswith(f"{CPU_EVAL}, override answer_agent.topk=5: unknown key answer_agent.topk")
    with pytest.raises(RecipeError, match="override ingest.extract.ahead=3: unknown key ingest.extract.ahead"):
        load_eval_recipe(CPU_EVAL, ["ingest.extract.ahead=3"])


def test_a_wrong_type_is_refused_with_its_path(tmp_path):
    with pytest.raises(RecipeError, match=r"answer_agent\.top_k: input should be a valid integer, got 'ten'"):
        load_eval_recipe(CPU_EVAL, ["answer_agent.top_k=ten"])
    with pytest.raises(RecipeError, match=r"ingest\.manager\.related_k: input should be a valid integer, got 1\.5"):
        load_eval_recipe(CPU_EVAL, ["ingest.manager.related_k=1.5"])
    with pytest.raises(RecipeError, match=r"answer_agent\.distill: input should be a valid boolean, got 'sometimes'"):
        load_eval_recipe(CPU_EVAL, ["answer_agent.distill=sometimes"])
    with pytest.raises(RecipeError, match=r"override judge=3: judge is a section"):
        load_eval_recipe(CPU_EVAL, ["judge=3"])
    with pytest.raises(RecipeError, match=r"store\.backend: input should be 'qdrant' or 'edge'"):
        load_eval_recipe(CPU_EVAL, ["store.backend=sqlite"])
    with pytest.raises(RecipeError, match=r"answer_agent\.top_k: input should be greater than or equal to 0"):
        load_eval_recipe(CPU_EVAL, ["answer_agent.top_k=-1"])
    with pytest.raises(RecipeError, match=r"llm\.dtype: unknown dtype 'fp8'"):
        load_eval_recipe(CPU_EVAL, ["llm.dtype=fp8"])
    with pytest.raises(RecipeError, match=r"ingest\.extract\.stop\[0\]: input should be a valid string"):
        load_eval_recipe(CPU_EVAL, ["ingest.extract.stop=[1]"])
    raw = load_recipe(CPU_EVAL)
    raw["seed"] = "0"
    with pytest.raises(RecipeError, match=r"recipe\.yaml: seed: input should be a valid integer, got '0'"):
        load_eval_recipe(_write(tmp_path, raw))


def test_every_error_is_reported_on_one_line():
    with pytest.raises(RecipeError) as err:
        load_eval_recipe(CPU_EVAL, ["answer_agent.top_k=ten", "judge.cach=x"])
    msg = str(err.value)
    assert "\n" not in msg and "answer_agent.top_k" in msg and "unknown key judge.cach" in msg
    assert "overrides answer_agent.top_k=ten judge.cach=x:" in msg


def test_overrides_that_pass_are_typed():
    r = load_eval_recipe(CPU_EVAL, ["answer_agent.top_k=10", "answer_agent.distill=true", "judge.backend=none",
                                    "ingest.max_sessions=1"])
    assert (r.answer_agent.top_k, r.answer_agent.distill, r.judge.backend, r.ingest.max_sessions) == (10, True, "none", 1)


# ---------------------------------------------------------------------------------- llm per backend


def test_llm_keys_of_another_backend_are_refused_in_one_line():
    with pytest.raises(RecipeError) as err:
        load_eval_recipe(CPU_EVAL, ["llm.backend=openai", "llm.base_url=http://127.0.0.1:9/v1"])
    msg = str(err.value)
    assert "overrides llm.backend=openai llm.base_url=http://127.0.0.1:9/v1: " in msg
    assert ("llm.dtype (hf/vllm), llm.quantize (hf), llm.batch_size (hf), llm.num_threads (hf) do not apply to "
            "llm.backend=openai") in msg
    assert "which takes: base_url, model, api_key_env" in msg and "\n" not in msg
    with pytest.raises(RecipeError, match=r"llm\.backend must be one of hf, vllm, openai, got 'tgi'"):
        load_eval_recipe(CPU_EVAL, ["llm.backend=tgi"])
    with pytest.raises(RecipeError, match=r"llm\.gpu_memory_utilization \(vllm\) do not apply to llm\.backend=hf"):
        load_eval_recipe(CPU_EVAL, ["llm.gpu_memory_utilization=0.5"])
    with pytest.raises(RecipeError, match=r"llm\.dtyp \(no backend\) do not apply"):
        load_eval_recipe(CPU_EVAL, ["llm.dtyp=auto"])


def test_replacing_the_llm_section_switches_backend():
    r = load_eval_recipe(CPU_EVAL, ["llm={backend: openai, base_url: 'http://127.0.0.1:8000/v1', model: m}"])
    assert isinstance(r.llm, OpenAIOptions)
    assert r.llm.backend_kwargs() == {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}
    assert load_eval_recipe(CPU_EVAL, ["llm={dtype: float32}"]).llm == HFOptions(dtype="float32")  # hf by default


def test_each_backend_has_its_own_options():
    assert set(LLM_OPTIONS) == {"hf", "vllm", "openai"}
    for name, model in LLM_OPTIONS.items():
        assert model().backend == name
    assert "dtype" not in OpenAIOptions.model_fields and "base_url" not in HFOptions.model_fields
    # unset options are not passed: the backend's own defaults apply
    assert HFOptions().backend_kwargs() == {"dtype": "auto"}
    assert HFOptions(batch_size=4, quantize="int8", dtype="float32").backend_kwargs() == {
        "dtype": "float32", "quantize": "int8", "batch_size": 4}


# ---------------------------------------------------------------------------------- train recipes


def _train_raw(stage: str = "answer", algo: str = "grpo") -> tuple[dict, Path]:
    path = recipe_path("smollm2-135m", stage, algo)
    return load_recipe(path), path


def test_an_unknown_train_key_is_refused_with_its_path(tmp_path):
    raw, _ = _train_raw()
    raw["episodes"]["topk"] = 3
    with pytest.raises(RecipeError, match=r"recipe\.yaml: unknown key episodes\.topk \(episodes has: "):
        train_recipe(raw, tmp_path / "recipe.yaml")
    raw, path = _train_raw()
    with pytest.raises(RecipeError, match=r"unknown key episode \(the recipe has: "):
        train_recipe({**raw, "episode": {}}, path)
    with pytest.raises(RecipeError, match=rf"{path}, override episodes\.top=3: unknown key episodes\.top "):
        train_recipe(raw, path, ["episodes.top=3"])
    with pytest.raises(RecipeError, match=r"episodes\.related_k \(episodes has: "):
        train_recipe(raw, path, ["episodes.related_k=3"])  # a manager key in an answer recipe


def test_train_wrong_types_and_values_are_refused():
    raw, path = _train_raw("manager", "ppo")
    with pytest.raises(RecipeError, match=r"episodes\.top_k: input should be a valid integer, got 'five'"):
        train_recipe(raw, path, ["episodes.top_k=five"])
    with pytest.raises(RecipeError, match=r"episodes\.source: input should be 'observations' or 'pipeline', got 'banks'"):
        train_recipe(raw, path, ["episodes.source=banks"])  # manager rows need a bank state per turn
    with pytest.raises(RecipeError, match=r"algo: input should be 'grpo' or 'ppo', got 'dpo'"):
        train_recipe(raw, path, ["algo=dpo"])
    with pytest.raises(RecipeError, match=r"stage must be one of answer, manager, got 'critic'"):
        train_recipe(raw, path, ["stage=critic"])
    with pytest.raises(RecipeError, match=r"missing key reward\.name"):
        train_recipe({**raw, "reward": {}}, path)
    with pytest.raises(RecipeError, match=r"a training recipe needs verl keys"):
        train_recipe({**raw, "verl": {}}, path)
    with pytest.raises(RecipeError, match=r"missing key verl"):
        train_recipe({k: v for k, v in raw.items() if k != "verl"}, path)


def test_the_frozen_answerer_mapping_is_checked_per_backend():
    raw, path = _train_raw("manager", "grpo")
    ok = {**raw, "reward": {"name": "manager_f1", "answerer": {"backend": "hf", "model": "smollm2-135m", "dtype": "fp32"}}}
    assert train_recipe(ok, path).reward.answerer == ok["reward"]["answerer"]  # kept as written
    bad = {**raw, "reward": {"name": "manager_f1", "answerer": {"backend": "openai", "model": "m", "dtype": "auto"}}}
    with pytest.raises(RecipeError, match=r"reward\.answerer: llm\.dtype \(hf/vllm\) do not apply to llm\.backend=openai"):
        train_recipe(bad, path)
    bad = {**raw, "reward": {"name": "manager_f1", "answerer": {"backend": "hf", "model": "m", "max_new_tokens": "48"}}}
    with pytest.raises(RecipeError, match=r"reward\.answerer: max_new_tokens: Input should be a valid integer"):
        train_recipe(bad, path)


def test_the_verl_section_stays_free():
    raw, path = _train_raw()
    r = train_recipe(raw, path, ["verl.trainer.any_key_verl_checks=1"],
                     apply=lambda cfg, ov: {**cfg, "verl": {**cfg["verl"], "trainer.any_key_verl_checks": 1}})
    assert r.verl["trainer.any_key_verl_checks"] == 1


def test_answer_top_k_has_one_name():
    """Memories per speaker the Answer Agent reads: answer_agent.top_k in eval recipes, episodes.top_k
    in both training stages (the manager stage's frozen answerer); the old manager name is refused."""
    raw, path = _train_raw("manager", "grpo")
    assert train_recipe(raw, path).episodes.top_k == raw["episodes"]["top_k"] == 5
    old = {**raw, "episodes": {**{k: v for k, v in raw["episodes"].items() if k != "top_k"}, "answer_top_k": 5}}
    with pytest.raises(RecipeError, match=r"episodes\.answer_top_k is now episodes\.top_k"):
        train_recipe(old, path)
    for p in TRAIN_RECIPES:
        assert "answer_top_k" not in p.read_text(), p
    assert {"top_k", "related_k", "max_related"} <= set(ManagerRecipe.model_fields["episodes"].annotation.model_fields)


def test_validate_recipe_without_overrides_names_the_file():
    with pytest.raises(RecipeError, match=r"^x\.yaml: unknown key nope"):
        validate_recipe(EvalRecipe, {"nope": 1}, "x.yaml")
