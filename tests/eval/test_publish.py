"""Publishing a plan's finished rows (memory_r1.eval.publish): the small files, the compare table,
secrets taken out of manifests."""

from __future__ import annotations

import json

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
    import shutil

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
