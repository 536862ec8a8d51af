"""The function verl loads (compute_score): dispatch on data_source through the stage registry, the
stage's reward names, the per-call log, the manager stage's answerer; verl's own loader finds it by its
pkg:// path."""

from __future__ import annotations

import asyncio
import json

import pytest

from memory_r1.train.stages import manager as manager_stage
from memory_r1.train.verl.reward import compute_score


def score(*args, **kw):
    return asyncio.run(compute_score(*args, **kw))


def test_answer_rewards_by_name(tmp_path):
    log = tmp_path / "rewards.jsonl"
    info = {"qid": "conv-26/q1", "split": "train"}
    assert score("memr1/answer", "Relevant:\n- x\nAnswer: 7 May 2023", "7 May 2023", info,
                 reward="answer_em", log_path=str(log)) == {"score": 1.0, "parsed": 1.0}
    f1 = score("memr1/answer", "Answer: on 7 May 2023", "7 May 2023", info, reward="answer_f1", log_path=str(log))
    assert 0.0 < f1["score"] < 1.0
    assert score("memr1/answer", "7 May 2023", "7 May 2023", info, log_path=str(log)) == {"score": 0.0, "parsed": 0.0}
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["parsed"] for x in lines] == [True, True, False]
    assert lines[0] == {"data_source": "memr1/answer", "split": "train", "id": "conv-26/q1", "reward": "answer_em",
                        "score": 1.0, "parsed": True}


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="unknown data_source"):
        score("gsm8k", "x", "y")
    with pytest.raises(ValueError, match="unknown answer reward"):
        score("memr1/answer", "Answer: x", "x", reward="answer_bleu")


def test_manager_dispatch_uses_the_spec_and_metric(monkeypatch, tmp_path):
    seen = {}

    class Fixed:
        def answer(self, question, a, b, *, speakers):
            return "Rex"

    def fake_get_answerer(spec):
        seen["spec"] = spec
        return Fixed()

    async def fake_reward(completion, extra_info, answerer, *, metric):
        from memory_r1.rewards.manager import ManagerRewardResult

        seen["metric"] = metric
        ans = answerer.answer("q", [], [], speakers=("A", "B"))
        return ManagerRewardResult(score=1.0 if ans == "Rex" else 0.0, parsed=True, ops={"added": 1})

    monkeypatch.setattr(manager_stage, "get_answerer", fake_get_answerer)
    monkeypatch.setattr("memory_r1.rewards.manager.manager_reward", fake_reward)
    monkeypatch.delenv("MEMR1_ANSWERER", raising=False)
    out = score("memr1/manager", "ADD: x", '["Rex"]', {"dia_id": "D1:3", "split": "train"},
                reward="manager_f1", answerer={"backend": "hf", "model": "smollm2-135m"},
                log_path=str(tmp_path / "r.jsonl"))
    assert out == {"score": 1.0, "parsed": 1.0}
    assert seen == {"spec": {"backend": "hf", "model": "smollm2-135m"}, "metric": "f1"}
    monkeypatch.setenv("MEMR1_ANSWERER", "openai:m@http://h:1/v1")  # the env var wins
    score("memr1/manager", "ADD: x", "[]", {}, answerer="hf:other")
    assert seen["spec"] == {"backend": "openai", "model": "m", "base_url": "http://h:1/v1"}  # parsed once


def test_verl_loads_it_by_pkg_path():
    pytest.importorskip("verl")
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn

    from memory_r1.train.verl.overrides import REWARD_FN_NAME, REWARD_FN_PATH

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": REWARD_FN_PATH, "name": REWARD_FN_NAME, "reward_kwargs": {"reward": "answer_f1"}}}})
    fn = get_custom_reward_fn(cfg)
    out = asyncio.run(fn(data_source="memr1/answer", solution_str="Answer: Rex the dog", ground_truth="Rex",
                         extra_info={}))
    assert out["parsed"] == 1.0 and 0.0 < out["score"] < 1.0  # F1 from reward_kwargs, not EM


@pytest.mark.slow
def test_manager_reward_with_the_frozen_smollm2_answerer(locomo_path, monkeypatch):
    """The CPU recipes' manager reward for real: rows of conv-26, the untrained SmolLM2 as the frozen
    Answer Agent (loaded once for the process, concurrent questions batched), MiniLM retrieval."""
    from memory_r1.data import load_split
    from memory_r1.train.stages.manager import manager_rows

    monkeypatch.delenv("MEMR1_ANSWERER", raising=False)
    monkeypatch.setattr(manager_stage, "_answerers", {})  # other tests in this process load their own answerers
    rows = manager_rows(load_split("train", locomo_path), answer_top_k=5, data=locomo_path, max_turns=3)
    info = rows[2]["extra_info"]
    fact = info["facts"][0]
    completions = [f"ADD: {fact}", "NONE", "UPDATE 99: nothing", "I cannot decide."]

    async def all_of_them():
        return await asyncio.gather(*[
            compute_score("memr1/manager", c, rows[2]["reward_model"]["ground_truth"], dict(info),
                          reward="manager_f1", answerer="hf:smollm2-135m")
            for c in completions
        ])

    out = asyncio.run(all_of_them())
    assert [o["parsed"] for o in out] == [1.0, 1.0, 1.0, 0.0]
    assert all(0.0 <= o["score"] <= 1.0 for o in out) and out[3]["score"] == 0.0
    answerer = manager_stage.get_answerer("hf:smollm2-135m")
    assert len(manager_stage._answerers) == 1  # loaded once
    n_q = len(info["questions"])
    assert answerer.calls == 3 * n_q and answerer.batches < answerer.calls  # concurrent questions batched
