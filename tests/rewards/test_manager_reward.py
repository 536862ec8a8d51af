"""The Memory Manager reward on hand-made completions, with a scripted frozen Answer Agent and a
small deterministic embedder (no model): ops are applied to a copy of the row's snapshot, ids come
from the row's id_map, an invented id is rejected, an unparseable completion scores 0.0."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

import numpy as np
import pytest

from memory_r1.memory import BankFactory
from memory_r1.rewards.manager import (
    UNPARSED_SCORE,
    LLMAnswerer,
    decode_id_map,
    manager_reward,
    score_answers,
)


class WordHashEmbedder:
    """Bag of words hashed into 64 dims, L2-normalised: similar texts are near, no model needed."""

    name = "test-word-hash"
    dim = 64

    def embed(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % self.dim] += 1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else np.eye(self.dim, dtype=np.float32)[0]
        return out


class KeywordAnswerer:
    """A question about a dog is answered "Rex" when some retrieved memory names Rex, one about
    where someone lives "Paris" when one names Paris, else "unknown"; records what it saw. ``asynchronous``: return a coroutine, as a served model would."""

    def __init__(self, asynchronous: bool = False):
        self.asynchronous = asynchronous
        self.seen: list[tuple[str, list[str], list[str], tuple]] = []

    def _answer(self, question, memories_a, memories_b, speakers):
        texts = [m.text for m in memories_a + memories_b]
        self.seen.append((question, [m.text for m in memories_a], [m.text for m in memories_b], speakers))
        for cue, word in (("dog", "Rex"), ("live", "Paris")):
            if cue in question and any(word in t for t in texts):
                return word
        return "unknown"

    def answer(self, question, memories_a, memories_b, *, speakers):
        if self.asynchronous:
            async def later():
                await asyncio.sleep(0)
                return self._answer(question, memories_a, memories_b, speakers)

            return later()
        return self._answer(question, memories_a, memories_b, speakers)


@pytest.fixture
def factory():
    f = BankFactory.open(path=":memory:", embedder=WordHashEmbedder())
    yield f
    f.close()


@pytest.fixture
def row(factory):
    """A manager row as manager_rows() writes it: Sam's bank holds 2 memories (ids 0 and 1 in the
    prompt), Alex's 1; the linked question asks for Sam's dog."""
    sam, alex = factory.bank("src/Sam"), factory.bank("src/Alex")
    m0, m1 = sam.add_many(["Sam lives in Paris", "Sam likes tea"], timestamps=["1 May, 2023"] * 2)
    alex.add("Alex runs marathons", timestamp="1 May, 2023")
    info = {
        "owner": "Sam",
        "speakers": ["Sam", "Alex"],
        "timestamp": "8 May, 2023",
        "id_map": json.dumps({"0": m0.id, "1": m1.id}),
        "banks": json.dumps({"Sam": sam.snapshot(), "Alex": alex.snapshot()}),
        "questions": [{"qid": "c/q1", "question": "What is the name of Sam's dog?", "answer": "Rex", "category": 1}],
        "top_k": 5,
    }
    factory.drop("src/Sam")
    factory.drop("src/Alex")
    return info


def run(coro):
    return asyncio.run(coro)


def test_add_that_answers_scores_one_and_leaves_the_row_untouched(row, factory):
    before = json.dumps(row, sort_keys=True)
    ans = KeywordAnswerer()
    res = run(manager_reward("ADD: Sam adopted a dog named Rex", row, ans, factory=factory))
    assert res.parsed and res.score == 1.0 and res.per_question == [1.0]
    assert res.ops["added"] == 1 and res.answers == ["Rex"]
    question, mem_sam, mem_alex, speakers = ans.seen[0]
    assert "Sam adopted a dog named Rex" in mem_sam and mem_alex == ["Alex runs marathons"]
    assert speakers == ("Sam", "Alex")
    # the snapshot in the row is a copy: nothing written back, scratch namespaces dropped
    assert json.dumps(row, sort_keys=True) == before
    assert factory.namespaces() == []
    # the same row again (another sampled completion) starts from the same state
    res2 = run(manager_reward("NONE", row, ans, factory=factory))
    assert res2.parsed and res2.score == 0.0 and res2.ops["noop"] == 1


def test_update_and_delete_use_the_prompt_ids(row, factory):
    ans = KeywordAnswerer()
    res = run(manager_reward("UPDATE 1: Sam likes tea and has a dog named Rex", row, ans, factory=factory))
    assert res.score == 1.0 and res.ops["updated"] == 1
    res = run(manager_reward("DELETE 0", row, ans, factory=factory))
    assert res.ops["deleted"] == 1
    assert all("Sam lives in Paris" not in t for t in ans.seen[-1][1])


def test_invented_id_is_rejected_and_counted(row, factory):
    ans = KeywordAnswerer()
    res = run(manager_reward("DELETE 7\nUPDATE 9: Sam has a dog named Rex", row, ans, factory=factory))
    assert res.parsed and res.invalid_ids == 2
    assert res.ops == {"added": 0, "updated": 0, "deleted": 0, "noop": 0, "duplicate": 0, "failed": 0}
    assert res.score == 0.0  # nothing was applied to another memory


def test_unparseable_completion_gets_the_defined_score(row, factory):
    ans = KeywordAnswerer()
    res = run(manager_reward("I am not sure what to do with these memories.", row, ans, factory=factory))
    assert not res.parsed and res.score == UNPARSED_SCORE == 0.0
    assert ans.seen == []  # the answerer is not asked


def test_mean_over_linked_questions_f1_and_async_answerer(row, factory):
    row = dict(row)
    row["questions"] = row["questions"] + [
        {"qid": "c/q2", "question": "Where does Sam live?", "answer": "in Paris", "category": 1}
    ]
    ans = KeywordAnswerer(asynchronous=True)
    em = run(manager_reward("ADD: Sam has a dog called Rex", row, ans, factory=factory))
    assert em.per_question == [1.0, 0.0] and em.score == 0.5  # "Paris" vs "in Paris": no exact match
    f1 = run(manager_reward("ADD: Sam has a dog called Rex", row, ans, factory=factory, metric="f1"))
    assert f1.per_question[0] == 1.0 and 0.0 < f1.per_question[1] < 1.0


def test_bad_rows_raise(row, factory):
    with pytest.raises(ValueError, match="links no question"):
        run(manager_reward("NONE", {**row, "questions": []}, KeywordAnswerer(), factory=factory))
    with pytest.raises(ValueError, match="metric"):
        run(manager_reward("NONE", row, KeywordAnswerer(), factory=factory, metric="bleu"))


def test_helpers():
    assert decode_id_map('{"3": "x"}') == {3: "x"} and decode_id_map(None) == {}
    assert score_answers(["Rex"], ["rex"], "em") == [1.0]


class CountingLLM:
    name = "counting"
    context_window = 2048

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, conversations, params):
        from memory_r1.llm.base import Generation

        self.calls.append(len(conversations))
        return [
            Generation(text=f"Answer: {c[-1]['content'].splitlines()[-1]}", prompt_tokens=1, completion_tokens=1,
                       finish_reason="stop")
            for c in conversations
        ]


def test_llm_answerer_batches_concurrent_requests():
    llm = CountingLLM()
    ans = LLMAnswerer(llm, max_batch=8, wait_s=0.05)

    async def many():
        return await asyncio.gather(*[ans.answer(f"q{i}?", [], [], speakers=("A", "B")) for i in range(5)])

    out = asyncio.run(many())
    assert out == [f"Question: q{i}?" for i in range(5)]  # the parsed text after "Answer:"
    assert llm.calls == [5]  # one generate call for the five concurrent questions
    assert ans.answer_sync("q?", [], [], speakers=("A", "B")) == "Question: q?"
