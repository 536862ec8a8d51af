"""Answer Agent rows on the real train conversation (conv-26): observation banks and banks built by a
(scripted) Memory Manager; the stage's reward names and scoring."""

from __future__ import annotations

import asyncio

import pytest

from memory_r1.train.stages import EpisodeError, get_stage
from memory_r1.train.stages.answer import DATA_SOURCE, answer_rows, score
from memory_r1.train.stages.banks import check_banks, pipeline_banks


def test_answer_rows(answer_episodes, train):
    rows, sizes = answer_episodes
    assert len(rows) == 152 == len(train.questions())
    assert sizes == {"conv-26/Caroline": 102, "conv-26/Melanie": 82}
    for r in rows:
        assert r["data_source"] == DATA_SOURCE and r["reward_model"]["style"] == "rule"
        assert len(r["extra_info"]["memory_ids"]) == 10  # 5 + 5 per question
        assert r["reward_model"]["ground_truth"] == r["extra_info"]["answer"]
    r = rows[0]
    assert r["extra_info"]["speakers"] == ["Caroline", "Melanie"] and r["extra_info"]["source"] == "observations"
    user = r["prompt"][-1]["content"]
    assert user.startswith("Memories for Caroline:") and user.endswith(f"Question: {r['extra_info']['question']}")
    assert user.count("\n- ") == 10 - 1 + 1  # ten memory lines (the first follows the header line)


def test_answer_rows_from_pipeline_banks(train, embedder, scripted_llm):
    from memory_r1.config import load_recipe, recipe_path
    from memory_r1.memory import BankFactory

    ingest = {**load_recipe(recipe_path("smollm2-135m", "eval"))["ingest"], "max_sessions": 1}
    with BankFactory.open(path=":memory:", embedder=embedder) as factory:
        with pytest.raises(EpisodeError, match="lack"):
            check_banks(train.conversations, factory)
        stats = pipeline_banks(train.conversations, factory, scripted_llm, ingest)
        sizes = check_banks(train.conversations, factory)
        rows = answer_rows(train, factory, top_k=30, source="pipeline")
    assert stats["turns"] == len(train.conversations[0].sessions[0].turns)
    assert sum(sizes.values()) == stats["ops"]["added"] > 0
    assert len(rows) == 152 and rows[0]["extra_info"]["source"] == "pipeline"
    assert max(len(r["extra_info"]["memory_ids"]) for r in rows) == sum(sizes.values())  # fewer than 30 each


def test_the_stage_names_its_rewards_and_scores_them():
    stage = get_stage("answer")
    assert stage.rewards == ("answer_em", "answer_f1") and stage.data_source == DATA_SOURCE
    em = asyncio.run(score("Relevant:\n- x\nAnswer: 7 May 2023", "7 May 2023", {"qid": "q1"}, reward="answer_em"))
    assert (em.score, em.parsed, em.id) == (1.0, True, "q1")
    f1 = asyncio.run(score("Answer: on 7 May 2023", "7 May 2023", {}, reward="answer_f1"))
    assert 0.0 < f1.score < 1.0
    none = asyncio.run(score("7 May 2023", "7 May 2023", {}, reward="answer_f1"))
    assert (none.score, none.parsed) == (0.0, False)
