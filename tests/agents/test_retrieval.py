"""Train/eval skew guard: for the same bank and question, evaluation (``Pipeline``), the training rows
(``answer_rows``, Memory Manager rows) and the manager reward's frozen Answer Agent retrieve the same
memories, because all of them go through :mod:`memory_r1.agents.retrieval`. Real banks (qdrant local
mode in memory, MiniLM)."""

from __future__ import annotations

import asyncio
import json

from memory_r1.agents.answerer import ANSWER_SYSTEM
from memory_r1.agents.extractor import EXTRACT_SYSTEM
from memory_r1.agents.pipeline import Pipeline
from memory_r1.agents.retrieval import bank_namespace, per_speaker, related_memories, search
from memory_r1.data.splits import Split
from memory_r1.llm import Generation
from memory_r1.memory import MemoryBank
from memory_r1.rewards.manager import manager_reward
from memory_r1.train.stages.answer import answer_rows
from memory_r1.train.stages.manager import EvidenceTurn, manager_row
from memory_r1.types import QA, Conversation, Session, Turn

K = 2
CFG = {
    "ingest": {
        "turns_per_chunk": 0,
        "extract": {"temperature": 0.0, "max_new_tokens": 40, "ahead_turns": 0},
        "manager": {"temperature": 0.0, "max_new_tokens": 128, "related_k": 3, "max_related": 2},
    },
    "answer": {"top_k": K, "distill": False, "temperature": 0.0, "max_new_tokens": 16},
}
MEMORIES = {
    "Ann": ["Ann lives in Boston", "Ann has a red bike", "Ann works as a nurse", "Ann likes green tea",
            "Ann visited Paris in 2021"],
    "Bo": ["Bo has a cat named Tom", "Bo plays the guitar", "Bo lives in Oslo", "Bo studies physics"],
}
QUESTIONS = ["Where does Ann live?", "What pet does Bo have?", "What does Ann drink?"]


def _conversation() -> Conversation:
    date = "2 May, 2023"
    turn = Turn(dia_id="D1:1", speaker="Ann", text="I moved to Oslo and sold my bike", session=1, session_date=date)
    qa = [QA(conversation_id="conv-r", index=i, question=q, answer="x", category=1, evidence=["D1:1"])
          for i, q in enumerate(QUESTIONS)]
    return Conversation(conversation_id="conv-r", speaker_a="Ann", speaker_b="Bo",
                        sessions=[Session(index=1, date_time=date, turns=[turn])], qa=qa)


def _fill(factory, conv) -> dict[str, MemoryBank]:
    banks = {}
    for sp, texts in MEMORIES.items():
        banks[sp] = factory.bank(bank_namespace(conv.conversation_id, sp))
        banks[sp].add_many(texts, timestamps=["1 May, 2023"] * len(texts))
    return banks


class ScriptedLLM:
    """Extraction: the turn itself as one fact; manager: NONE; answers: "Answer: x"."""

    name, context_window = "scripted", 4096

    def generate(self, conversations, params):
        out = []
        for conv in conversations:
            if conv[0]["content"] == EXTRACT_SYSTEM:
                who, said = conv[-1]["content"].split("\n", 1)[1].split(": ", 1)
                text = f"- {who} says: {said}"
            elif conv[0]["content"].startswith(ANSWER_SYSTEM[:30]):
                text = "Answer: x"
            else:
                text = "NONE"
            out.append(Generation(text, 10, 5, "stop"))
        return out


def test_search_edges(factory):
    bank = factory.bank("conv-e/Ann")
    assert search(bank, ["q1", "q2"], 5) == [[], []] and search(bank, [], 5) == []
    bank.add("Ann lives in Boston")
    assert search(bank, ["where?"], 0) == [[]]
    assert [m.text for m in search(bank, ["where?"], 5)[0]] == ["Ann lives in Boston"]
    assert related_memories(bank, [], 3, 10) == []


def test_eval_and_answer_rows_retrieve_the_same_memories(factory):
    conv = _conversation()
    banks = _fill(factory, conv)
    events: list[dict] = []
    pipe = Pipeline(ScriptedLLM(), factory.bank, CFG, trace=events.append)
    records = pipe.answer(conv, list(conv.qa))
    rows = answer_rows(Split("test", (conv,)), factory, top_k=K, distill=False, source="banks")

    assert [r["extra_info"]["qid"] for r in rows] == [r["qid"] for r in records]
    for rec, row, event in zip(records, rows, events, strict=True):
        assert rec["n_retrieved"] == 2 * K
        assert row["extra_info"]["memory_ids"] == rec["retrieved_ids"]
        assert row["prompt"] == event["prompt"]  # the very prompt the eval's Answer Agent read
    # and it is the retrieval of the module, best first per speaker
    hits = per_speaker(banks["Ann"], banks["Bo"], QUESTIONS, K)
    assert [[m.id for m in ma + mb] for ma, mb in hits] == [r["retrieved_ids"] for r in records]
    assert hits[0][0][0].text == "Ann lives in Boston" and hits[1][1][0].text == "Bo has a cat named Tom"


def test_manager_rows_reward_and_ingestion_agree(factory):
    conv = _conversation()
    banks = _fill(factory, conv)
    turn = conv.sessions[0].turns[0]
    fact = "Ann says: I moved to Oslo and sold my bike"
    mcfg = CFG["ingest"]["manager"]
    row = manager_row(0, "test", conv, EvidenceTurn(turn, 0, list(conv.qa)), [fact], "turn", banks,
                       mcfg["related_k"], mcfg["max_related"], K, "banks", None)
    eval_answers = Pipeline(ScriptedLLM(), factory.bank, CFG).answer(conv, list(conv.qa))

    # the reward's frozen Answer Agent reads what the eval's Answer Agent read
    seen: list[list[str]] = []

    class Recorder:
        def answer(self, question, memories_a, memories_b, *, speakers):
            seen.append([m.id for m in memories_a + memories_b])
            return "x"

    result = asyncio.run(manager_reward("NONE", row["extra_info"], Recorder()))
    assert result.parsed and seen == [r["retrieved_ids"] for r in eval_answers]

    # the row's manager prompt shows the memories ingestion shows for the same facts and bank
    events: list[dict] = []
    Pipeline(ScriptedLLM(), factory.bank, CFG, trace=events.append).ingest([conv])
    shown = next(e for e in events if e["event"] == "manager")
    assert shown["facts"] == [fact]
    id_map = json.loads(row["extra_info"]["id_map"])
    assert [m["id"] for m in shown["related"]] == [id_map[str(i)] for i in range(len(id_map))]
    assert len(id_map) == mcfg["max_related"]  # the cap applies (3 per fact, 2 in all)
    expected = related_memories(banks["Ann"], [fact], mcfg["related_k"], mcfg["max_related"])
    assert [m["id"] for m in shown["related"]] == [m.id for m in expected]
