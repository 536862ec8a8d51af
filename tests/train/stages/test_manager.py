"""Memory Manager rows on the real train conversation (conv-26): one per evidence turn, the bank state
from the preceding turns only (observations, or a scripted Memory Manager's pipeline); the stage's
reward names and the frozen Answer Agent's spec."""

from __future__ import annotations

import json

import pytest

from memory_r1.train.stages import EpisodeError, get_stage, row_stats
from memory_r1.train.stages.manager import (
    DATA_SOURCE,
    evidence_turns,
    manager_rows,
    parse_answerer_spec,
    window_conversation,
)


def test_evidence_turns_of_conv26(train):
    conv = train.conversations[0]
    ets = evidence_turns(conv, train.questions())
    assert len(ets) == 133  # distinct turns cited by the 152 train questions
    assert sum(len(e.questions) for e in ets) == 203  # (turn, question) links
    assert len({q.qid for e in ets for q in e.questions}) == 150  # 2 questions cite no turn
    assert [e.position for e in ets] == sorted(e.position for e in ets)
    first = ets[0]
    assert all(first.turn.dia_id in q.evidence for q in first.questions)


def test_manager_rows(manager_episodes):
    rows = manager_episodes
    assert len(rows) == 133
    stats = row_stats(rows)
    assert stats["linked_questions"] == 203
    assert stats["facts_sources"] == {"observation": 92, "turn": 41}
    for r in rows:
        info = r["extra_info"]
        assert r["data_source"] == DATA_SOURCE
        assert json.loads(r["reward_model"]["ground_truth"]) == [q["answer"] for q in info["questions"]]
        assert info["owner"] in info["speakers"] and info["facts"]
        banks = json.loads(info["banks"])
        assert set(banks) == set(info["speakers"])
        # the prompt's ids map to memories of the owner's bank state
        owner_ids = {m["id"] for m in banks[info["owner"]]["memories"]}
        assert set(json.loads(info["id_map"]).values()) <= owner_ids
    # states grow along the dialogue: the first evidence turn has the fewest preceding facts
    sizes = [sum(r["extra_info"]["bank_sizes"]) for r in rows]
    assert sizes[0] == min(sizes) and sizes[-1] == max(sizes) <= 184


def test_manager_state_is_the_preceding_turns_only(manager_episodes, train):
    conv = train.conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in manager_episodes[::10]:
        info = r["extra_info"]
        here = positions[info["dia_id"]]
        for snap in json.loads(info["banks"]).values():
            for m in snap["memories"]:
                assert max(positions[d] for d in m["metadata"]["dia_ids"]) < here


def test_snapshot_round_trip(manager_episodes, embedder):
    from memory_r1.memory import BankFactory

    info = manager_episodes[40]["extra_info"]
    snaps = json.loads(info["banks"])
    with BankFactory.open(path=":memory:", embedder=embedder) as f:
        for speaker, snap in snaps.items():
            bank = f.bank(f"rt/{speaker}")
            bank.restore(snap)
            again = bank.snapshot()
            assert [(m["id"], m["text"], m["timestamp"]) for m in again["memories"]] == [
                (m["id"], m["text"], m["timestamp"]) for m in snap["memories"]
            ]


def test_history_window(train, embedder, locomo_path):
    rows = manager_rows(train, history_turns=20, embedder=embedder, data=locomo_path, max_turns=30)
    conv = train.conversations[0]
    positions = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in rows:
        here = positions[r["extra_info"]["dia_id"]]
        assert r["extra_info"]["history_turns"] == 20
        for snap in json.loads(r["extra_info"]["banks"]).values():
            for m in snap["memories"]:
                assert here - 20 <= max(positions[d] for d in m["metadata"]["dia_ids"]) < here


def test_manager_rows_need_a_state_source(train):
    with pytest.raises(EpisodeError, match="observations or pipeline"):
        manager_rows(train, source="banks")
    with pytest.raises(EpisodeError, match="needs an LLM"):
        manager_rows(train, source="pipeline")


def test_window_conversation(train):
    conv = train.conversations[0]
    w = window_conversation(conv, 10, 25, "D2:1")
    assert w.conversation_id == "conv-26@D2:1" and [t.dia_id for t in w.turns] == [t.dia_id for t in conv.turns[10:25]]
    assert all(s.date_time for s in w.sessions) and w.qa == []


def test_pipeline_source_builds_states_with_the_manager(train, embedder, scripted_llm):
    from memory_r1.config import load_recipe, recipe_path

    ingest = load_recipe(recipe_path("smollm2-135m", "eval"))["ingest"]
    rows = manager_rows(train, source="pipeline", history_turns=6, llm=scripted_llm, ingest=ingest,
                        embedder=embedder, max_turns=3)
    assert len(rows) == 3 and scripted_llm.prompts > 0
    conv = train.conversations[0]
    turns = {t.dia_id: i for i, t in enumerate(conv.turns)}
    for r in rows:
        info = r["extra_info"]
        assert info["source"] == "pipeline" and info["facts_source"] == "extractor"
        assert info["facts"][0].startswith(f"{info['owner']} said:")
        here = turns[info["dia_id"]]
        window = conv.turns[max(0, here - 6):here]
        snaps = json.loads(info["banks"])
        for speaker in info["speakers"]:  # one ADD per preceding turn of that speaker in the window
            assert len(snaps[speaker]["memories"]) == sum(1 for t in window if t.speaker == speaker)


def test_the_stage_names_its_rewards_and_its_answerer(monkeypatch):
    stage = get_stage("manager")
    assert stage.rewards == ("manager_em", "manager_f1") and stage.data_source == DATA_SOURCE
    assert stage.reward_kwargs({"name": "manager_f1", "answerer": "hf:x"}) == {"answerer": "hf:x"}
    assert stage.reward_kwargs({"name": "manager_f1"}) == {}
    assert parse_answerer_spec(None) == {"backend": "hf", "model": "smollm2-135m"}
    assert parse_answerer_spec("hf:/ckpt/huggingface") == {"backend": "hf", "model": "/ckpt/huggingface"}
    monkeypatch.setenv("MEMR1_ANSWERER_BASE_URL", "http://gpu:8000/v1")
    spec = parse_answerer_spec({"backend": "openai", "model": "Qwen/Qwen2.5-7B-Instruct", "base_url": None})
    assert spec["base_url"] == "http://gpu:8000/v1"
    with pytest.raises(ValueError):
        parse_answerer_spec("llamacpp:x")
