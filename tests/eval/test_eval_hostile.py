"""Ids from data never put a run's files outside its folder: `memr1 eval` end to end (a scripted LLM,
the real embedder and bank) on conversations whose ids would escape, overflow a file name or hold a
NUL (the loader refuses such ids; here they are handed to the runner directly, the way a future
loader bug would), plus the one path function over arbitrary strings."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memory_r1.data.splits import Split
from memory_r1.eval import folder, runner
from memory_r1.eval.folder import read_predictions
from memory_r1.eval.runner import EvalRequest, run_eval
from memory_r1.llm.base import Generation
from memory_r1.runs import atomic_write, data_path
from memory_r1.types import QA, Conversation, Session, Turn

HOSTILE_IDS = ["x/../../../escaped", "/tmp/abs", "..", "a" * 5000, "nul\x00id", "new\nline", "", "  "]


class AnswerLLM:
    name, context_window = "scripted", 8192

    def generate(self, conversations, params):
        return [Generation("Answer: Oslo", 10, 2, "stop") for _ in conversations]

    def count_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def close(self):
        pass


def _conv(cid: str) -> Conversation:
    turns = [Turn(dia_id="D1:1", speaker="Ann", text="I moved to Oslo.", session=1, session_date="1 May, 2023"),
             Turn(dia_id="D1:2", speaker="Bo", text="Nice!", session=1, session_date="1 May, 2023")]
    qa = [QA(conversation_id=cid, index=0, question="Where did Ann move?", answer="Oslo", category=1,
             evidence=["D1:1"])]
    return Conversation(conversation_id=cid, speaker_a="Ann", speaker_b="Bo",
                        sessions=[Session(index=1, date_time="1 May, 2023", turns=turns)], qa=qa)


def _files(root: Path) -> set[Path]:
    return {Path(d) / f for d, _, fs in os.walk(root) for f in fs}


def test_eval_writes_nothing_outside_its_folder_whatever_the_ids(tmp_path, monkeypatch):
    split = Split("val", tuple(_conv(cid) for cid in HOSTILE_IDS))
    monkeypatch.setattr("memory_r1.data.load_split", lambda *a, **k: split)
    monkeypatch.setattr(runner, "_load_llms", lambda cfg: (AnswerLLM(),) * 3)
    work = tmp_path / "deep" / "er"
    out = work / "run"
    before = _files(tmp_path)
    req = EvalRequest(split="val", method="rag-turns", judge="none", out=out, show_progress=False)
    run_eval(req)
    written = _files(tmp_path) - before
    assert written and all(out in p.parents for p in written), sorted(map(str, written - _files(out)))
    markers = sorted((out / "state").iterdir())
    assert len(markers) == len(HOSTILE_IDS)  # one per conversation, none shared
    assert {json.loads(m.read_text())["conversation"] for m in markers} == set(HOSTILE_IDS)
    assert all(len(m.name) < 80 for m in markers)
    assert len(read_predictions(out / "predictions.jsonl")) == len(HOSTILE_IDS)
    # resumed: every conversation is found ingested (nothing cleared or rebuilt)
    monkeypatch.setattr("memory_r1.agents.pipeline.Pipeline.ingest", lambda *a, **k: pytest.fail("re-ingested"))
    run_eval(req)


def test_legacy_plain_marker_is_still_read(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "ingested-conv-26.json").write_text(json.dumps({"conversation": "conv-26", "batch_stats": {}}))
    assert folder.ingest_marker(state, "conv-26") == state / "ingested-conv-26.json"
    # a plain marker that names another conversation (e.g. a case-insensitive file system) is not taken
    (state / "ingested-Conv-1.json").write_text(json.dumps({"conversation": "conv-1", "batch_stats": {}}))
    assert folder.ingest_marker(state, "Conv-1") == data_path(state, "ingested", "Conv-1")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_data_path_is_a_direct_child_for_any_string(tmp_path_factory, data_id):
    folder = tmp_path_factory.getbasetemp() / "paths"
    p = data_path(folder, "ingested", data_id)
    assert p.parent == folder and len(p.name) <= 80
    assert p.name not in (".", "..") and set(p.name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.")


def test_data_paths_of_distinct_ids_differ():
    ids = ["a/b", "a_b", "A_b", "a b", "a\x00b", "a" * 500, "a" * 501]
    assert len({data_path(Path("s"), "k", i) for i in ids}) == len(ids)


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "manifest.json", "{}")
        runner.atomic_write(tmp_path / "summary.md", "x")
        (tmp_path / "plain").write_text("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE((tmp_path / "plain").stat().st_mode)
    assert want == 0o666 & ~umask
    for name in ("manifest.json", "summary.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "plain", "summary.md"]  # no temp left
