"""A third agent is one module: a toy stage defined here (its own recipe model, row builder and scorer)
and put into the registry gets its recipe schema, its episodes and its `memr1 train toy` command from
the registry alone; the answer and manager commands keep their options and help lines."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any, Literal

import pytest
import typer
import yaml
from typer.testing import CliRunner

from memory_r1 import cli
from memory_r1.cli import app
from memory_r1.config import RecipeError
from memory_r1.recipes import Episodes, PosInt, Section, TrainRecipe
from memory_r1.train import stages
from memory_r1.train.stages import EpisodeRequest, Scored, Stage

runner = CliRunner()

SHARED_OPTIONS = ["--backbone", "--algo", "--recipe", "--manager", "--init", "--out", "--resume", "--ray-address",
                  "--data", "--dry-run"]
TOY_HELP = "Train the toy Echo Agent with RL (verl): one row per question, reward for echoing it."


# ------------------------------------------------------------------------------ the toy stage


class ToyEpisodes(Episodes):
    source: Literal["observations"] = "observations"
    words: PosInt = 4  # the first N words of each question make a row


class ToyReward(Section):
    name: str


class ToyRecipe(TrainRecipe):
    stage: Literal["toy"] = "toy"
    episodes: ToyEpisodes = ToyEpisodes()
    reward: ToyReward


def toy_build(req: EpisodeRequest) -> tuple[list[dict], list[dict]]:
    from memory_r1.train.verl.rows import make_row

    def rows(split, cap=None):
        out = []
        for q in list(split.questions())[:cap]:
            words = " ".join(q.question.split()[: req.episodes["words"]])
            out.append(make_row("memr1/toy", [{"role": "user", "content": f"Echo: {words}"}], "echo", words,
                                {"index": len(out), "qid": q.qid}))
        return out

    return rows(req.train_split), rows(req.val_split, req.max_val) if req.val_split else []


async def toy_score(solution_str: str, ground_truth: Any, extra_info: Mapping, *, reward: str, **_: Any) -> Scored:
    return Scored(float(solution_str.strip() == ground_truth), True, extra_info.get("qid"))


TOY = Stage(name="toy", data_source="memr1/toy", description=TOY_HELP, rewards=("toy_echo",), eval_flag="--toy",
            recipe=ToyRecipe, build=toy_build, score=toy_score, sources=("observations",))


@pytest.fixture
def toy(monkeypatch):
    """The toy stage in the registry (as a module ``train/stages/toy.py`` holding ``STAGE = TOY`` would be)."""
    monkeypatch.setitem(stages.STAGES, "toy", TOY)
    return TOY


def _toy_recipe(**episodes) -> dict:
    return {"stage": "toy", "algo": "grpo", "device": "cpu", "reward": {"name": "toy_echo"},
            "episodes": episodes, "verl": {"algorithm": {"adv_estimator": "grpo"}}}


# ------------------------------------------------------------------------------ (a) the recipe


def test_the_toy_recipe_validates_through_the_registry(toy):
    from memory_r1.train.verl.overrides import check_recipe

    r = stages.train_recipe(_toy_recipe(words=2), "toy.yaml")
    assert isinstance(r, ToyRecipe) and r.episodes.words == 2 and r.episodes.train_split == "train"
    assert stages.recipe_models()["toy"] is ToyRecipe
    assert stages.recipe_models()["answer"].__name__ == "AnswerRecipe"
    assert check_recipe(_toy_recipe())["reward"]["name"] == "toy_echo"  # the stage's reward names
    assert toy.episodes_config({}) == {"train_split": "train", "val_split": "val", "max_val_rows": None,
                                       "drop_wrong_golds": False, "eval_recipe": None,
                                       "source": "observations", "words": 4}


def test_an_unknown_toy_key_is_refused_with_its_dotted_path(toy):
    with pytest.raises(RecipeError, match=r"^toy\.yaml: unknown key episodes\.wordz \(episodes has: .*words"):
        stages.train_recipe(_toy_recipe(wordz=2), "toy.yaml")
    with pytest.raises(RecipeError, match=r"^toy\.yaml, override episodes\.top_k=3: unknown key episodes\.top_k "):
        stages.train_recipe(_toy_recipe(), "toy.yaml", ["episodes.top_k=3"])  # an answer key is not the toy's
    with pytest.raises(RecipeError, match=r"episodes\.words: input should be greater than or equal to 1, got 0"):
        stages.train_recipe(_toy_recipe(words=0), "toy.yaml")
    from memory_r1.train.verl.overrides import RecipeSchemaError, check_recipe

    with pytest.raises(RecipeSchemaError, match=r"reward\.name for the toy stage must be one of toy_echo"):
        check_recipe({**_toy_recipe(), "reward": {"name": "answer_f1"}})


def test_an_unknown_stage_names_the_registered_ones(toy):
    with pytest.raises(RecipeError, match=r"stage must be one of answer, manager, toy, got 'critic'"):
        stages.train_recipe({**_toy_recipe(), "stage": "critic"}, "r.yaml")
    with pytest.raises(ValueError, match=r"unknown stage 'critic'; choose from answer, manager, toy"):
        stages.get_stage("critic")


def test_the_toy_episodes_come_from_its_builder(toy, locomo_path, tmp_path):
    eps = stages.build_episodes("toy", {"words": 3, "max_val_rows": 5}, backbone="smollm2-135m",
                                out_dir=tmp_path, data=locomo_path)
    assert len(eps.train) == 152 and len(eps.val) == 5 and eps.info["stage"] == "toy"
    row = eps.train[0]
    assert row["data_source"] == "memr1/toy" and len(row["reward_model"]["ground_truth"].split()) <= 3
    assert asyncio.run(toy.score(row["reward_model"]["ground_truth"], row["reward_model"]["ground_truth"],
                                 row["extra_info"], reward="toy_echo")).score == 1.0
    with pytest.raises(stages.EpisodeError, match=r"toy stage builds rows from observations, not 'banks'"):
        stages.build_episodes("toy", {}, backbone="smollm2-135m", out_dir=tmp_path, banks=tmp_path, data=locomo_path)


def test_a_stage_whose_recipe_is_not_its_own_is_refused():
    fields = {k: getattr(TOY, k) for k in ("data_source", "description", "rewards", "eval_flag", "build", "score")}
    with pytest.raises(TypeError, match=r"ToyRecipe needs stage: Literal\['echo'\] = 'echo'"):
        Stage(name="echo", recipe=ToyRecipe, **fields)
    with pytest.raises(TypeError, match=r"recipe must be a TrainRecipe subclass"):
        Stage(name="toy", recipe=ToyEpisodes, **fields)

    class NoSource(TrainRecipe):
        stage: Literal["toy"] = "toy"
        episodes: Episodes = Episodes()
        reward: ToyReward

    with pytest.raises(TypeError, match=r"NoSource\.episodes has no source"):
        Stage(name="toy", recipe=NoSource, **fields)


# ------------------------------------------------------------------------------ (b) the command


def _train_command(name: str):
    """The click command `memr1 train <name>` as the app builds it."""
    group = typer.main.get_command(app)
    with group.make_context("memr1", [], resilient_parsing=True) as ctx:
        train = group.get_command(ctx, "train")
        with train.make_context("train", [], parent=ctx, resilient_parsing=True) as tctx:
            return train.list_commands(tctx), train.get_command(tctx, name)


def _options(cmd) -> list[str]:
    return [opt for p in cmd.params if p.param_type_name == "option" for opt in p.opts if opt != "--help"]


def test_the_toy_stage_gets_a_train_command(toy):
    names, cmd = _train_command("toy")
    assert names == ["answer", "manager", "toy", "loop"]
    assert _options(cmd) == SHARED_OPTIONS  # no --banks: the toy stage does not build from banks
    assert [p.name for p in cmd.params if p.param_type_name == "argument"] == ["overrides"]
    res = runner.invoke(app, ["train", "toy", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert TOY_HELP in res.stdout and all(opt in res.stdout for opt in SHARED_OPTIONS)
    assert "--banks" not in res.stdout
    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and re.search(rf"toy +{re.escape(TOY_HELP)}", res.stdout), res.stdout


def test_the_toy_command_runs_the_toy_stage(toy, tmp_path):
    res = runner.invoke(app, ["train", "toy", "--algo", "dpo"])
    assert res.exit_code == 2 and "unknown algo 'dpo'" in res.stderr
    res = runner.invoke(app, ["train", "toy", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "toy/grpo.yaml (pass --recipe PATH)" in res.stderr  # recipes/<backbone>/toy/
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump(_toy_recipe()))
    res = runner.invoke(app, ["train", "toy", "--recipe", str(recipe), "--out", str(tmp_path / "o"), "episodes.wordz=2"])
    assert res.exit_code == 2 and "override episodes.wordz=2: unknown key episodes.wordz" in res.stderr


def test_a_stage_that_builds_from_banks_gets_banks(toy):
    banked = Stage(**{**{k: getattr(TOY, k) for k in TOY.__dataclass_fields__}, "sources": ("observations", "banks")})
    cmds = cli.stage_commands({"toy": banked})
    assert list(cmds) == ["toy"] and _options(cmds["toy"]) == SHARED_OPTIONS[:4] + ["--banks"] + SHARED_OPTIONS[4:]
    assert cmds["toy"].help == TOY_HELP


# ------------------------------------------------------------------------------ (c) answer and manager as before


@pytest.mark.parametrize(("name", "options", "help_line"), [
    ("answer", SHARED_OPTIONS[:4] + ["--banks"] + SHARED_OPTIONS[4:],
     "Train the Answer Agent with RL (verl): episodes from the train split, held-out val, HF checkpoint."),
    ("manager", SHARED_OPTIONS,
     "Train the Memory Manager with RL (verl): one episode per evidence turn, frozen Answer Agent reward."),
])
def test_answer_and_manager_keep_their_options(name, options, help_line):
    names, cmd = _train_command(name)
    assert names == ["answer", "manager", "loop"]
    assert _options(cmd) == options and cmd.help == help_line
    assert [p.name for p in cmd.params if p.param_type_name == "argument"] == ["overrides"]
    defaults = {p.name: p.default for p in cmd.params}
    assert defaults["backbone"] == "smollm2-135m" and defaults["algo"] == "grpo" and defaults["dry_run"] is False
    res = runner.invoke(app, ["train", name, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and help_line in res.stdout


def test_the_stages_are_not_imported_by_the_top_level_help():
    import subprocess
    import sys

    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from typer.testing import CliRunner; from memory_r1.cli import app; "
         "assert CliRunner().invoke(app, ['--help']).exit_code == 0; print('memory_r1.train.stages' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "False"
