"""Rows that change only the Answer Agent or the judge start from the base row's finished banks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory_r1.eval.folder import INGEST_KEYS, EvalFolderError, reuse_banks

CFG = {"backbone": "smollm2-135m", "split": "val", "method": "memory-r1", "conversations": None,
       "manager": None, "ingest": {"max_sessions": None}, "llm": {"dtype": "auto"}, "store": {"backend": "qdrant", "url": None},
       "data_sha256": "abc", "answer_agent": {"top_k": 30}, "judge": {"prompt": "mem0"}}


def _finished(folder: Path, cfg: dict = CFG) -> Path:
    (folder / "banks" / "collection" / "c1").mkdir(parents=True)
    (folder / "banks" / "collection" / "c1" / "storage.sqlite").write_bytes(b"points")
    (folder / "banks" / ".lock").write_text("held")
    (folder / "state").mkdir()
    (folder / "state" / "ingested-conv-30_0123.json").write_text(json.dumps({"turns": 369}))
    (folder / "manifest.json").write_text(json.dumps({"config": cfg}))
    return folder


def test_banks_and_markers_are_copied_for_the_same_ingestion(tmp_path):
    src = _finished(tmp_path / "base")
    out = tmp_path / "row"
    out.mkdir()
    # another Answer Agent and judge; a null (off) setting added since compares as absent
    other_answer = {**CFG, "answer_agent": {"top_k": 5}, "judge": {"prompt": "strict"},
                    "llm": {"dtype": "auto", "quantize": None}}
    assert reuse_banks(src, out, other_answer) == 1
    assert (out / "banks" / "collection" / "c1" / "storage.sqlite").read_bytes() == b"points"
    assert not (out / "banks" / ".lock").exists()  # the source's lock is not carried over
    # the copied marker names where the banks were built (that folder spent the ingestion time)
    assert json.loads((out / "state" / "ingested-conv-30_0123.json").read_text()) == {"turns": 369,
                                                                                      "reused_from": str(src)}
    assert not (out / ".banks-copy").exists()
    # a second call (a resumed row) leaves the row's own banks alone
    (out / "banks" / "collection" / "c1" / "storage.sqlite").write_bytes(b"mine")
    assert reuse_banks(src, out, other_answer) == 0
    assert (out / "banks" / "collection" / "c1" / "storage.sqlite").read_bytes() == b"mine"


@pytest.mark.parametrize("key", INGEST_KEYS)
def test_banks_built_another_way_are_refused(tmp_path, key):
    src = _finished(tmp_path / "base")
    out = tmp_path / "row"
    out.mkdir()
    other = {"backend": "edge", "url": None} if key == "store" else {"another": "setting"}  # a resolved store has a url
    changed = {**CFG, key: other}
    with pytest.raises(EvalFolderError, match=key):
        reuse_banks(src, out, changed)
    assert not (out / "banks").exists()


def test_an_unfinished_or_missing_source_builds_the_banks_here(tmp_path):
    src = tmp_path / "base"
    src.mkdir()
    (src / "manifest.json").write_text(json.dumps({"config": CFG}))
    out = tmp_path / "row"
    out.mkdir()
    assert reuse_banks(src, out, CFG) == 0 and not (out / "banks").exists()
    with pytest.raises(EvalFolderError, match="not an eval folder"):
        reuse_banks(tmp_path / "nowhere", out, CFG)
    with pytest.raises(EvalFolderError, match="Qdrant server"):
        reuse_banks(src, out, {**CFG, "store": {"url": "http://localhost:6333"}})


def test_the_cpu_plan_reuses_the_base_banks_only_where_ingestion_is_the_same():
    from memory_r1.eval.ablate import build_steps
    from memory_r1.eval.plan import load_plan
    from memory_r1.paths import repo_root

    plan = load_plan(repo_root() / "recipes" / "smollm2-135m" / "ablations.yaml")
    steps = {(s.row, s.slice): s for s in build_steps(plan) if s.kind == "eval"}
    reusing = {key for key, s in steps.items() if "--reuse-banks" in s.args}
    base_val = str(plan.out / plan.base / "val")
    donors = {key: Path(steps[key].args[steps[key].args.index("--reuse-banks") + 1]) for key in reusing}
    for key, donor in donors.items():
        assert donor.name == key[1]  # the same slice
        assert donor.parent == plan.out / (plan.base if "--manager" not in steps[key].checkpoints
                                           else steps[key].checkpoints["--manager"].parent.name)
    assert ("distill", "val") in reusing and ("top-k-10", "val") in reusing and ("judge-strict", "val") in reusing
    assert ("answer-grpo", "val") in reusing  # a trained Answer Agent over the untrained manager's banks
    # the rerun of the base row builds its own banks (reuse_banks: false): what rebuilding alone moves
    for row in ("memr1-untrained", "memr1-untrained-rerun", "rag-turns", "full-context", "fp32", "fp32-rerun", "int8",
                "manager-grpo", "manager-ppo-40min"):
        assert not any(key[0] == row for key in reusing), row
    # both RL agents answer from the banks the trained manager's own row built, on every slice that row has
    assert donors[("both-40min", "val")] == plan.out / "manager-ppo-40min" / "val"
    assert donors[("both-40min", "test-conv41-42")] == plan.out / "manager-ppo-40min" / "test-conv41-42"
    assert ("both-grpo", "val") in reusing and ("both-grpo", "test-conv41-42") not in reusing  # manager-grpo: val only
    assert base_val


def test_reused_banks_add_no_ingestion_time_and_a_broken_marker_is_built_here(tmp_path):
    from memory_r1.eval.runner import read_ingest_marker, run_timings

    src = _finished(tmp_path / "base")
    batch = {"turns": 369, "seconds": 900.0}
    (src / "state" / "ingested-conv-30_0123.json").write_text(json.dumps({"conversation": "conv-30", "batch_stats": batch}))
    (src / "state" / "ingested-conv-41_0123.json").write_text("{broken")
    out = tmp_path / "row"
    out.mkdir()
    assert reuse_banks(src, out, CFG) == 1  # conv-41's unreadable marker is not copied: built here
    assert sorted(p.name for p in (out / "state").iterdir()) == ["ingested-conv-30_0123.json"]
    stats = {"conv-30": batch}
    # the copied marker names the folder that spent the ingestion time: none of it counts here
    assert read_ingest_marker(out / "state" / "ingested-conv-30_0123.json") == (batch, str(src))
    assert run_timings([], stats, {}, reused={"conv-30"})["ingest_s"] == 0.0
    # built in this folder: its time counts
    assert read_ingest_marker(src / "state" / "ingested-conv-30_0123.json") == (batch, None)
    assert run_timings([], stats, {}, reused=set())["ingest_s"] == 900.0
