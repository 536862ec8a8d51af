"""`memr1 train` through typer's test runner: argument errors are one line with exit 2; a dry run
builds the episodes, writes the folder and checks verl's composed config without training."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from memory_r1.cli import app

runner = CliRunner()


def _one_error_line(res) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("stage", ["answer", "manager"])
def test_unknown_algo_is_one_line_exit_2(stage):
    res = runner.invoke(app, ["train", stage, "--algo", "dpo"])
    assert res.exit_code == 2
    assert "unknown algo 'dpo'" in _one_error_line(res) and "grpo, ppo" in res.stderr


def test_missing_recipe_is_one_line_exit_2(tmp_path):
    res = runner.invoke(app, ["train", "answer", "--recipe", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "nope.yaml" in _one_error_line(res)


def test_recipe_of_another_stage_is_refused(tmp_path):
    from memory_r1.config import recipe_path

    res = runner.invoke(app, ["train", "answer", "--recipe", str(recipe_path("smollm2-135m", "manager", "grpo")),
                              "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "manager/grpo recipe, not answer/grpo" in _one_error_line(res)


def test_bad_override_and_manager_without_pipeline_are_one_line(tmp_path):
    res = runner.invoke(app, ["train", "answer", "--out", str(tmp_path / "o"), "reward.name=answer_bleu"])
    assert res.exit_code == 2 and "reward.name" in _one_error_line(res)
    res = runner.invoke(app, ["train", "answer", "--out", str(tmp_path / "o"), "--manager", "/ckpt", "--dry-run"])
    assert res.exit_code == 2 and "episodes.source=pipeline" in _one_error_line(res)


def test_existing_run_needs_resume(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "global_step_2").mkdir(parents=True)
    res = runner.invoke(app, ["train", "answer", "--out", str(out)])
    assert res.exit_code == 2 and "--resume" in _one_error_line(res)


def test_dry_run_writes_the_folder_and_checks_verls_config(tmp_path):
    pytest.importorskip("verl")
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "answer", "--backbone", "smollm2-135m", "--algo", "grpo", "--out", str(out),
                              "--dry-run", "episodes.top_k=3", "episodes.max_val_rows=7",
                              "verl.trainer.total_training_steps=2"])
    assert res.exit_code == 0, res.output
    assert (out / "episodes" / "train.parquet").exists() and (out / "episodes" / "val.parquet").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    ep = manifest["episodes"]
    assert ep["train"]["rows"] == 152 and ep["val"]["rows"] == 7  # override caps conv-30's 81
    assert ep["train"]["memories_per_row"]["max"] == 6  # 3 + 3 (override)
    assert ep["prompt_tokens"]["over_limit"] == 0
    assert manifest["data_sha256"].startswith("79fa87e9")
    overrides = (out / "overrides.txt").read_text().splitlines()
    assert "trainer.total_training_steps=2" in overrides and "trainer.resume_mode=disable" in overrides
    assert f"trainer.default_local_dir={out.resolve() / 'checkpoints'}" in overrides
    assert "total_training_steps: 2" in (out / "verl_config.yaml").read_text()
    # a verl key that does not exist: one line, exit 2
    res = runner.invoke(app, ["train", "answer", "--out", str(tmp_path / "bad"), "--dry-run",
                              "verl.trainer.total_training_stepz=2"])
    assert res.exit_code == 2 and "total_training_stepz" in _one_error_line(res)


def test_loop_arguments_are_checked():
    res = runner.invoke(app, ["train", "loop", "--algo", "dpo"])
    assert res.exit_code == 2 and "unknown algo" in _one_error_line(res)
    res = runner.invoke(app, ["train", "loop", "--rounds", "0"])
    assert res.exit_code == 2 and "--rounds" in _one_error_line(res)


def test_manager_dry_run(tmp_path):
    pytest.importorskip("verl")
    out = tmp_path / "mgr"
    res = runner.invoke(app, ["train", "manager", "--algo", "ppo", "--out", str(out), "--dry-run"])
    assert res.exit_code == 0, res.output
    ep = json.loads((out / "manifest.json").read_text())["episodes"]
    from memory_r1.config import load_recipe, recipe_path
    cap = load_recipe(recipe_path("smollm2-135m", "manager", "ppo"))["episodes"]["max_val_rows"]
    assert ep["train"]["rows"] == 133 and ep["train"]["linked_questions"] == 203 and ep["val"]["rows"] == cap
    overrides = (out / "overrides.txt").read_text()
    assert "algorithm.adv_estimator=gae" in overrides and "critic.model.path=" in overrides
    assert "reward:manager_f1" in overrides and "answerer:'hf:smollm2-135m'" in overrides
