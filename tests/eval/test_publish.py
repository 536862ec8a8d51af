"""Publishing a plan's finished rows (memory_r1.eval.publish): the small files, the compare table,
secrets taken out of manifests."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from memory_r1.data import load_split
from memory_r1.eval import ablate, publish
from memory_r1.eval.ablate import build_steps, run_plan


def test_publish_copies_the_small_files_of_finished_rows(tmp_path, locomo_path, make_plan, scripted_memr1):
    from memory_r1.cli import app

    rows = [{"name": "base"}, {"name": "rag", "method": "rag-turns"},
            {"name": "top", "overrides": ["answer_agent.top_k=5"]}, {"name": "unrun", "method": "full-context"}]
    plan = make_plan(rows)
    qs = load_split("val", locomo_path).questions()
    fake = scripted_memr1(qs, {"base": 3, "rag": 2, "top": 1})
    opts = ablate.Options(judge="none", overrides=["ingest.max_sessions=1"])
    run_plan(plan, build_steps(plan, rows=["base", "rag"], opts=opts), runner=fake)
    # "top" finished as a smoke run (another --limit-questions): not what the plan's command asks for
    run_plan(plan, build_steps(plan, rows=["top"], opts=ablate.Options(judge="none", limit_questions=3,
                                                                       overrides=["ingest.max_sessions=1"])),
             runner=fake)
    for row in ("base", "rag"):
        (tmp_path / "ab" / row / "val" / "summary.md").write_text(f"# {row}\n")
    src = tmp_path / "ab" / "base" / "val"
    (src / "banks" / "collection").mkdir(parents=True)
    (src / "state").mkdir()
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["config"]["store"] = {"backend": "qdrant", "url": "https://me:hunter2@qdrant.example:6333",
                                   "api_key": "hunter2"}
    (src / "manifest.json").write_text(json.dumps(manifest))

    dest = tmp_path / "docs" / "ablations"
    record = publish.publish(plan, dest, opts=opts)
    assert record["rows"]["base"]["val"]["published"] == ["summary.json", "summary.md", "manifest.json",
                                                          "predictions.jsonl"]
    assert record["rows"]["unrun"]["val"] == "not run"
    assert record["rows"]["top"]["val"].startswith("left out: ") and "another configuration" in record["rows"]["top"]["val"]
    assert record["compare"]["val"] == "compare-val"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "base/val/manifest.json", "base/val/predictions.jsonl", "base/val/summary.json", "base/val/summary.md",
        "compare-val/compare.json", "compare-val/compare.md", "compare-val/compare.png", "published.json",
        "rag/val/manifest.json", "rag/val/predictions.jsonl", "rag/val/summary.json", "rag/val/summary.md"]
    assert (dest / "base" / "val" / "predictions.jsonl").read_bytes() == (src / "predictions.jsonl").read_bytes()
    text = (dest / "base" / "val" / "manifest.json").read_text()
    assert "hunter2" not in text and json.loads(text)["config"]["store"]["url"] == "https://qdrant.example:6333"
    cmp = json.loads((dest / "compare-val" / "compare.json").read_text())
    assert cmp["base"] == "base" and cmp["runs"] == ["rag"]
    assert json.loads((dest / "published.json").read_text()) == record

    # predictions over the size limit are left out (and removed from an earlier publication); the
    # compare still comes from the run folders
    record = publish.publish(plan, dest, opts=opts, max_predictions_bytes=10)
    assert "predictions.jsonl" not in record["rows"]["rag"]["val"]["published"]
    assert record["rows"]["rag"]["val"]["predictions_bytes"] > 10
    assert not (dest / "rag" / "val" / "predictions.jsonl").exists() and record["compare"]["val"] == "compare-val"

    # without the base row there is no compare, and the stale one goes

    shutil.rmtree(src)
    record = publish.publish(plan, dest, opts=opts)
    assert record["compare"]["val"] == "no published base (base) folder on val"
    assert not (dest / "compare-val").exists()

    # the command line: the same, with the options the rows ran with
    dest2 = tmp_path / "pub2"
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan.path), "--publish", str(dest2), "--judge", "none",
                                 "ingest.max_sessions=1"])
    assert r.exit_code == 0, r.output
    assert "rag on val: summary.json, summary.md, manifest.json, predictions.jsonl" in r.output
    assert "unrun on val: not run" in r.output and f"published into {dest2}" in r.output
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan.path), "--publish", str(dest2), "--rows", "rag"])
    assert r.exit_code == 2 and "drop --rows" in r.output


def test_scrub_secrets_keeps_the_rest():
    m = {"config": {"judge": {"backend": "openai:m@http://127.0.0.1:8000/v1", "prompt": "mem0"},
                    "llm": {"hf_token": "x", "max_new_tokens": 3, "dtype": "auto"}}, "data_path": "/x/locomo10.json"}
    out = publish.scrub_secrets(m)
    assert out["config"]["judge"] == m["config"]["judge"] and out["data_path"] == m["data_path"]
    assert out["config"]["llm"] == {"hf_token": "<removed>", "max_new_tokens": 3, "dtype": "auto"}


def test_publish_copies_a_finished_trainings_curves_not_its_checkpoints(tmp_path, make_plan):
    plan = make_plan([{"name": "base"}, {"name": "rl", "train": {"stage": "answer", "algo": "grpo"}, "answer": "train"},
                      {"name": "stopped", "train": {"stage": "answer", "algo": "ppo"}, "answer": "train"},
                      {"name": "fresh", "train": {"stage": "manager", "algo": "grpo"}, "manager": "train"}])
    src = tmp_path / "ab" / "rl" / "train"
    for name in ("result.json", "recipe.yaml", "overrides.txt", "reward_curve.json", "reward_curve.png",
                 "checkpoints/global_step_2/actor/model.pt", "episodes/train.parquet", "metrics.jsonl"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    (tmp_path / "ab" / "stopped" / "train" / "checkpoints").mkdir(parents=True)  # no result.json: unfinished
    dest = tmp_path / "pub"
    record = publish.publish(plan, dest)
    assert record["train"]["rl"] == list(publish.PUBLISHED_TRAIN_FILES)
    assert record["train"]["stopped"].startswith("left out: ") and record["train"]["fresh"] == "not run"
    assert sorted(p.relative_to(dest / "rl").as_posix() for p in (dest / "rl").rglob("*") if p.is_file()) == sorted(
        f"train/{n}" for n in publish.PUBLISHED_TRAIN_FILES)
    assert (dest / "rl" / "train" / "result.json").read_text() == "result.json"
    assert not (dest / "stopped").exists()


def test_restore_brings_published_rows_back_into_a_fresh_clone(tmp_path, base_rag_ans):
    """Published rows restored into another folder (a fresh clone elsewhere, no checkpoints): the plan
    skips their evals and trainings, compares against them, and publishes them again."""
    from memory_r1.cli import app
    from memory_r1.eval.plan import load_plan

    plan, fake, opts = base_rag_ans
    run_plan(plan, build_steps(plan, rows=["base", "ans"], opts=opts), runner=fake)
    (tmp_path / "ab" / "ans" / "train" / "reward_curve.json").write_text("[]")
    dest = tmp_path / "docs"
    publish.publish(plan, dest, opts=opts)
    shutil.rmtree(tmp_path / "ab")  # the machine that ran them is gone, with its checkpoints

    clone = load_plan(plan.path)
    clone.out = tmp_path / "clone" / "ab"
    record = publish.restore(clone, dest)
    assert record["rows"]["base"]["val"] == ["summary.json", "manifest.json", "predictions.jsonl"]
    assert record["rows"]["rag"]["val"] == "not published"
    assert record["train"]["ans"] == ["result.json", "reward_curve.json"]
    assert json.loads((clone.out / "ans" / "val" / "restored.json").read_text())["from"] == str(dest / "ans" / "val")
    # the trained row is finished without its checkpoint: nothing trains or evaluates again
    fake.calls.clear()
    steps = build_steps(clone, opts=opts)
    results = run_plan(clone, steps, runner=fake)
    assert [(r.step.row, r.step.kind, r.status) for r in results] == [
        ("base", "eval", "skipped"), ("rag", "eval", "ran"), ("ans", "train", "skipped"), ("ans", "eval", "skipped")]
    assert [c[0] for c in fake.calls] == ["eval"]
    cmp = ablate.compare_slices(clone, ["val"])
    assert json.loads((cmp["val"] / "compare.json").read_text())["runs"] == ["rag", "ans"]
    again = publish.publish(clone, tmp_path / "docs2", opts=opts)
    assert isinstance(again["rows"]["ans"]["val"], dict) and again["train"]["ans"] == ["result.json", "reward_curve.json"]
    assert again["compare"]["val"] == "compare-val"
    # restoring again keeps what is there
    assert publish.restore(clone, dest)["rows"]["base"]["val"].startswith("kept: ")
    # a new slice of a restored trained row needs the checkpoint: then it trains
    clone2 = load_plan(plan.path)
    clone2.out = tmp_path / "clone2" / "ab"
    publish.restore(clone2, dest)
    shutil.rmtree(clone2.out / "ans" / "val")
    fake.calls.clear()
    statuses = [r.status for r in run_plan(clone2, build_steps(clone2, rows=["ans"], opts=opts), runner=fake)]
    assert statuses == ["ran", "ran"] and [c[0] for c in fake.calls] == ["train", "eval"]

    # the command line
    clone3 = tmp_path / "clone3"
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan.path), "--restore", str(dest), "--out", str(clone3)])
    assert r.exit_code == 0, r.output
    assert "base on val: summary.json, manifest.json, predictions.jsonl" in r.output and "rag on val: not published" in r.output
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan.path), "--restore", str(tmp_path / "nowhere")])
    assert r.exit_code == 1 and "no such folder" in r.output
    r = CliRunner().invoke(app, ["ablate", "--plan", str(plan.path), "--restore", str(dest), "--publish", str(dest)])
    assert r.exit_code == 2 and "give one" in r.output


def test_restore_refuses_what_is_not_a_published_row(tmp_path, make_plan):
    """Incomplete, symlinked or broken published folders are not restored (each says why); nothing
    is written outside the plan's folders."""
    plan = make_plan([{"name": "base"}, {"name": "a"}, {"name": "b"}, {"name": "c"}])
    src = tmp_path / "pub"
    secret = tmp_path / "secret.txt"
    secret.write_text("do not copy")
    for row in ("base", "a", "b", "c"):
        (src / row / "val").mkdir(parents=True)
        for name in ("summary.json", "predictions.jsonl"):
            (src / row / "val" / name).write_text("{}")
        (src / row / "val" / "manifest.json").write_text(json.dumps({"config": {}}))
    (src / "a" / "val" / "predictions.jsonl").unlink()
    (src / "b" / "val" / "manifest.json").write_text("[1, 2")
    (src / "c" / "val" / "summary.json").unlink()
    (src / "c" / "val" / "summary.json").symlink_to(secret)
    record = publish.restore(plan, src)["rows"]
    assert record["base"]["val"] == ["summary.json", "manifest.json", "predictions.jsonl"]
    assert record["a"]["val"].endswith("lacks predictions.jsonl")
    assert "is not a manifest" in record["b"]["val"]
    assert record["c"]["val"].endswith("lacks summary.json")
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == ["base"]
