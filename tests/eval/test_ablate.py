"""`memr1 ablate`: every plan in recipes/ composes against the recipes (and verl's schema), rows and
slices filter, and a plan runs its commands in order, resumes, and ends with the compare table
(the child `memr1` processes replaced by a scripted runner that writes the folders)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from memory_r1.data import load_split
from memory_r1.eval import ablate
from memory_r1.eval.ablate import build_steps, check_plan, run_plan
from memory_r1.eval.plan import PlanError, load_plan, plan_paths

PLANS = plan_paths()


def test_every_backbone_has_a_plan():
    assert {p.parent.name for p in PLANS} == {"smollm2-135m", "qwen2.5-7b", "llama3.1-8b"}


@pytest.mark.parametrize("path", PLANS, ids=lambda p: p.parent.name)
def test_plan_composes(path: Path):
    """Each row's eval overrides are keys of the eval recipe, each train row's recipe passes its
    schema check and composes with verl's config (a verl key it does not have fails)."""
    pytest.importorskip("verl")
    plan = load_plan(path)
    assert plan.backbone == path.parent.name
    steps = build_steps(plan)
    lines = check_plan(plan, steps, compose_verl=True)
    assert len(lines) == len(steps)
    evals = {(s.row, s.slice) for s in steps if s.kind == "eval"}
    assert {(r.name, s) for r in plan.rows for s in r.slices} == evals  # every row on each of its slices
    trained = [s.row for s in steps if s.kind == "train"]
    assert len(trained) == len(set(trained)) == sum(r.train is not None for r in plan.rows)


def test_cpu_plan_rows():
    plan = load_plan(plan_paths()[[p.parent.name for p in PLANS].index("smollm2-135m")])
    rows = {r.name: r for r in plan.rows}
    assert plan.base == "memr1-untrained" and rows["memr1-untrained"].method == "memory-r1"
    assert rows["rag-turns"].method == "rag-turns" and rows["full-context"].method == "full-context"
    assert rows["distill"].overrides == ("answer_agent.distill=true",)  # the CPU base answers without it
    assert {rows[n].overrides for n in ("top-k-10", "top-k-30")} == {("answer_agent.top_k=5",), ("answer_agent.top_k=15",)}
    assert (rows["answer-grpo"].train.stage, rows["answer-grpo"].train.algo, rows["answer-grpo"].answer) == ("answer", "grpo", "train")
    assert (rows["answer-ppo"].train.algo, rows["answer-ppo"].manager) == ("ppo", None)
    assert rows["manager-grpo"].train.stage == "manager" and rows["manager-grpo"].answer is None  # untrained answerer
    assert (rows["both-grpo"].manager, rows["both-grpo"].answer) == ("row:manager-grpo", "row:answer-grpo")
    test = plan.slices["test-conv41-42"]
    assert (test.split, test.conversations) == ("test", ("conv-41", "conv-42"))
    headline = {r.name for r in plan.rows if "test-conv41-42" in r.slices}
    assert headline == {"memr1-untrained", "memr1-untrained-rerun", "rag-turns", "full-context", "answer-grpo", "answer-grpo-40min",
                        "answer-grpo-40min-seed1", "answer-grpo-40min-short", "answer-grpo-40min-clean-golds",
                        "answer-ppo-40min", "manager-grpo-40min", "manager-ppo-40min", "both-grpo", "both-40min"}
    # both 40-minute agents together, against the answerer alone: what the trained manager adds
    both = rows["both-40min"]
    assert (both.manager, both.answer, both.against) == (
        "row:manager-ppo-40min", "row:answer-grpo-40min-clean-golds", "answer-grpo-40min-clean-golds")
    # the >= 40-minute runs: 28 answer steps (two seeds: the seed reaches verl's data order and sampling)
    long, seed1 = rows["answer-grpo-40min"].train, rows["answer-grpo-40min-seed1"].train
    assert "verl.trainer.total_training_steps=28" in long.overrides and "seed=1" not in long.overrides
    assert set(seed1.overrides) == set(long.overrides) | {"seed=1", "verl.data.seed=1", "verl.actor_rollout_ref.rollout.seed=1"}
    assert set(rows["answer-grpo-seed1"].train.overrides) == {"seed=1", "verl.data.seed=1", "verl.actor_rollout_ref.rollout.seed=1"}
    assert rows["manager-grpo-40min"].train.stage == "manager" and rows["manager-grpo-40min"].answer is None
    # the levers: each names answer-grpo-40min and changes one thing of its training (same 28 steps)
    levers = {n: r for n, r in rows.items() if r.against and r.train}
    assert set(levers) == {"answer-grpo-40min-seed1", "answer-grpo-40min-short", "answer-grpo-40min-em",
                           "answer-grpo-40min-pipeline", "answer-grpo-40min-clean-golds", "answer-grpo-40min-group8",
                           "answer-grpo-40min-temp07", "answer-grpo-40min-nokl", "answer-grpo-40min-lr1e-5",
                           "answer-grpo-40min-fp32"}
    micro = {o for o in levers["answer-grpo-40min-fp32"].train.overrides if "micro_batch_size_per_gpu" in o}
    assert len(micro) == 3 and "dtype=float32" in levers["answer-grpo-40min-fp32"].train.overrides
    from memory_r1.config import load_recipe, recipe_path
    from memory_r1.train.runner import apply_train_overrides

    grpo = load_recipe(recipe_path("smollm2-135m", "answer", "grpo"))
    for name in ("em", "pipeline", "group8", "temp07", "nokl", "lr1e-5"):  # levers first run after the fp32 reference fit in fp32 too
        verl = apply_train_overrides(grpo, list(levers[f"answer-grpo-40min-{name}"].train.overrides))["verl"]
        assert {f"verl.{k}={v}" for k, v in verl.items() if k.endswith("micro_batch_size_per_gpu")} == micro, name
    for r in levers.values():
        assert r.against == "answer-grpo-40min" and r.answer == "train"
        assert (r.train.stage, r.train.algo) == ("answer", "grpo") and set(long.overrides) < set(r.train.overrides)
    assert "episodes.drop_wrong_golds=true" in levers["answer-grpo-40min-clean-golds"].train.overrides


@pytest.mark.parametrize("backbone", ["qwen2.5-7b", "llama3.1-8b"])
def test_gpu_plans_mirror_table_1(backbone):
    plan = load_plan(next(p for p in PLANS if p.parent.name == backbone))
    rows = {r.name: r for r in plan.rows}
    for algo in ("ppo", "grpo"):
        full = rows[f"memory-r1-{algo}"]
        assert full.train.stage == "answer" and full.train.algo == algo and full.answer == "train"
        assert full.manager == full.train.manager == f"row:manager-{algo}"  # answerer trained on its banks
        assert rows[f"manager-{algo}"].manager == "train" and rows[f"answer-{algo}"].answer == "train"
    assert {"rag-turns", "full-context", "no-distill"} <= set(rows) and plan.slices["test"].conversations is None


def test_bad_keys_are_refused(make_plan):
    plan = make_plan([{"name": "base"}, {"name": "typo", "overrides": ["answer_agent.topk=5"]}])
    with pytest.raises(PlanError, match=r"row 'typo': .*eval\.yaml, override answer_agent\.topk=5: unknown key answer_agent\.topk \(answer_agent has: top_k"):
        check_plan(plan, compose_verl=False)
    plan = make_plan([{"name": "base"}, {"name": "t", "train": {"stage": "answer", "algo": "grpo",
                                                                        "overrides": ["episodes.topk=3"]}}])
    with pytest.raises(PlanError, match=r"row 't': train answer/grpo: .*, override episodes.topk=3: unknown key episodes.topk"):
        check_plan(plan, compose_verl=False)
    plan = make_plan([{"name": "base", "method": "graph-rag"}])
    with pytest.raises(PlanError, match="method 'graph-rag'"):
        check_plan(plan, compose_verl=False)
    plan = make_plan([{"name": "base", "slices": ["t"]}], slices={"t": {"split": "test", "conversations": ["conv-30"]}})
    with pytest.raises(PlanError, match="conv-30"):
        check_plan(plan, compose_verl=False)
    plan = make_plan([{"name": "base", "overrides": ["judge.prompt=lenient"]}])
    with pytest.raises(PlanError, match="unknown judge.prompt"):
        check_plan(plan, compose_verl=False)
    with pytest.raises(PlanError, match="no answer training step"):
        build_steps(make_plan([{"name": "base", "answer": "row:base"}]))
    with pytest.raises(PlanError, match="unknown keys"):
        make_plan([{"name": "base", "top_k": 10}])
    with pytest.raises(PlanError, match="folder name"):
        make_plan([{"name": "base"}, {"name": "a/b"}])
    for bad in ("..", "../x", "/tmp/x", ".hidden"):
        with pytest.raises(PlanError, match="a slice name is a folder name"):
            make_plan([{"name": "base", "slices": [bad]}], slices={bad: {"split": "val"}})
    with pytest.raises(PlanError, match="row 'base': no slice 'test' \\(slices: val\\)"):
        make_plan([{"name": "base", "slices": ["test"]}])
    with pytest.raises(PlanError, match="row 'a' reuse_banks: true or false, not 'no'"):
        make_plan([{"name": "base"}, {"name": "a", "reuse_banks": "no"}])
    with pytest.raises(PlanError, match="row 'a': against 'nope' is not another row"):
        make_plan([{"name": "base"}, {"name": "a", "against": "nope"}])
    with pytest.raises(PlanError, match="row 'a': against 'a' is not another row"):
        make_plan([{"name": "base"}, {"name": "a", "against": "a"}])


def test_a_verl_key_verl_does_not_have_is_refused(make_plan):
    pytest.importorskip("verl")
    plan = make_plan([{"name": "base"}, {"name": "t", "train": {
        "stage": "answer", "algo": "grpo", "overrides": ["verl.actor_rollout_ref.actor.optim.learning_rate=1e-5"]}}])
    with pytest.raises(PlanError, match="verl refuses"):
        check_plan(plan, compose_verl=True)


def test_rows_filter_pulls_in_the_trainings_a_row_needs():
    plan = load_plan(next(p for p in PLANS if p.parent.name == "smollm2-135m"))
    steps = build_steps(plan, rows=["both-grpo"], slices=["val"])
    assert [(s.kind, s.row, s.slice) for s in steps] == [
        ("train", "manager-grpo", None), ("train", "answer-grpo", None), ("eval", "both-grpo", "val")]
    ev = steps[-1]
    assert ev.checkpoints == {"--manager": plan.out / "manager-grpo" / "train",
                              "--answer": plan.out / "answer-grpo" / "train"}
    assert build_steps(plan, rows=["rag-turns"], slices=["test-conv41-42"])[0].command()[:8] == [
        "eval", "--backbone", "smollm2-135m", "--split", "test", "--method", "rag-turns", "--out"]
    with pytest.raises(PlanError, match="no row 'nope'"):
        build_steps(plan, rows=["nope"])
    with pytest.raises(PlanError, match="no slice 'test'"):
        build_steps(plan, slices=["test"])
    # a named row not planned on the asked slice is refused, not run as nothing
    with pytest.raises(PlanError, match="row distill is not planned on test-conv41-42"):
        build_steps(plan, rows=["distill", "rag-turns"], slices=["test-conv41-42"])


def test_run_resume_and_compare(tmp_path, base_rag_ans):
    plan, fake, opts = base_rag_ans
    steps = build_steps(plan, opts=opts)
    results = run_plan(plan, steps, runner=fake)
    assert [r.status for r in results] == ["ran"] * 4
    assert [c[0] for c in fake.calls] == ["eval", "eval", "train", "eval"]
    hf = tmp_path / "ab" / "ans" / "train" / "checkpoints" / "global_step_2" / "actor" / "huggingface"
    last = fake.calls[-1]
    assert last[last.index("--answer") + 1] == str(hf.resolve())  # the trained checkpoint, found after training
    assert "--judge" in last and last[-1] == "ingest.max_sessions=1"
    cmp = ablate.compare_slices(plan, ["val"])
    res = json.loads((cmp["val"] / "compare.json").read_text())
    assert res["base"] == "base" and res["runs"] == ["rag", "ans"]
    ans = next(g for g in res["views"]["standard"]["groups"] if g["label"] == "Overall")["runs"]["ans"]
    assert ans["em"] == 100.0 and ans["diff"]["em"]["lo"] > 0  # right on every question
    # again: nothing runs (finished eval folders with the same configuration, a trained checkpoint)
    fake.calls.clear()
    assert [r.status for r in run_plan(plan, steps, runner=fake)] == ["skipped", "skipped", "reused", "skipped"]
    assert fake.calls == []
    # another configuration of the same row is not skipped (the eval itself would refuse the folder)
    other = build_steps(plan, rows=["rag"], opts=ablate.Options(judge="none", limit_questions=3))
    assert ablate.eval_finished(other[0], other[0].command(), None) is False


def test_a_stopped_training_resumes_and_a_failure_stops(tmp_path, locomo_path, make_plan, scripted_memr1):
    plan = make_plan([{"name": "base"},
                            {"name": "ans", "train": {"stage": "answer", "algo": "ppo"}, "answer": "train"}])
    (tmp_path / "ab" / "ans" / "train").mkdir(parents=True)
    (tmp_path / "ab" / "ans" / "train" / "metrics.jsonl").write_text("{}\n")  # a run that stopped
    qs = load_split("val", locomo_path).questions()[:5]
    fake = scripted_memr1(qs, {"base": 1, "ans": 1}, fail_on="ans/val")
    with pytest.raises(PlanError, match="row 'ans', eval on val\\) failed with exit code 3"):
        run_plan(plan, build_steps(plan), runner=fake)
    assert fake.calls[1][:3] == ["train", "answer", "--resume"]


def test_cli_dry_run_and_errors(tmp_path):
    from memory_r1.cli import app

    plan = next(p for p in PLANS if p.parent.name == "smollm2-135m")
    out = tmp_path / "ab"
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan), "--dry-run", "--rows", "memr1-untrained,top-k-10",
                                 "--slices", "val", "--limit-questions", "6", "--judge", "none", "--out", str(out),
                                 "ingest.max_sessions=1"])
    assert r.exit_code == 0, r.output
    assert "dry run: 2 steps checked, nothing run" in r.output
    assert (f"memr1 eval --backbone smollm2-135m --split val --method memory-r1 --out "
            f"{out}/top-k-10/val --limit-questions 6 --judge none --reuse-banks {out}/memr1-untrained/val "
            "answer_agent.top_k=5 "
            "ingest.max_sessions=1") in r.output
    assert "top_k=5 distill=False max_sessions=1 judge=none" in r.output
    assert not out.exists()  # a dry run writes nothing
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan), "--dry-run", "--rows", "nope"])
    assert r.exit_code == 2 and "no row 'nope'" in r.output
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan), "--dry-run", "answer_agent.topk=3"])
    assert r.exit_code == 2 and "unknown key answer_agent.topk" in r.output


def test_a_training_folder_without_its_checkpoint_is_not_trained(tmp_path):
    """result.json naming a checkpoint that is not on disk (restored, deleted) or unreadable: no checkpoint."""
    folder = tmp_path / "ans" / "train"
    folder.mkdir(parents=True)
    hf = folder / "checkpoints" / "global_step_2" / "actor" / "huggingface"
    (folder / "result.json").write_text(json.dumps({"dry_run": False, "hf_checkpoint": str(hf)}))
    assert ablate._trained_checkpoint(folder) is None
    hf.mkdir(parents=True)
    assert ablate._trained_checkpoint(folder) == hf
    (folder / "result.json").write_text('{"hf_checkpoint": ')
    assert ablate._trained_checkpoint(folder) is None
    (folder / "result.json").write_text('["a list"]')
    assert ablate._trained_checkpoint(folder) is None


def test_the_data_file_is_hashed_once_a_run_and_a_changed_file_is_seen(tmp_path, base_rag_ans, locomo_path,
                                                                         monkeypatch):
    import memory_r1.paths as paths

    plan, fake, opts = base_rag_ans
    steps = build_steps(plan, opts=opts)
    run_plan(plan, steps, runner=fake)
    hashed, real = [], paths.sha256_file
    monkeypatch.setattr(paths, "sha256_file", lambda p: hashed.append(p) or real(p))
    ablate._data_sha256.cache_clear()
    assert [r.status for r in run_plan(plan, steps, runner=fake)] == ["skipped", "skipped", "reused", "skipped"]
    assert hashed == [locomo_path.resolve()]  # four eval configurations asked for, some twice: one hash
    # the same path with other bytes is hashed again (the cache is keyed on size and mtime too)
    copy = tmp_path / "locomo.json"
    copy.write_bytes(locomo_path.read_bytes())
    args = steps[0].command()
    first = ablate._eval_config(args, copy)["data_sha256"]
    copy.write_bytes(locomo_path.read_bytes() + b"\n")
    assert ablate._eval_config(args, copy)["data_sha256"] not in (first, None)
    assert first == real(locomo_path)
