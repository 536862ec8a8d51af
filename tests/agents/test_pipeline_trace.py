"""The pipeline's trace events and the per-op outcomes of the Memory Manager, on a real bank (qdrant
local mode in memory, MiniLM) with a scripted LLM: what the walkthrough notebook shows must be what
happened to the bank."""

from __future__ import annotations

import json
import re
import uuid

from memory_r1.agents.answerer import ANSWER_SYSTEM
from memory_r1.agents.extractor import EXTRACT_SYSTEM
from memory_r1.agents.manager import apply_operations, build_manager_messages, parse_operations
from memory_r1.agents.pipeline import Pipeline
from memory_r1.agents.retrieval import bank_namespace
from memory_r1.llm import Generation
from memory_r1.memory import BankFactory
from memory_r1.types import QA, Conversation, MemoryOp, OpKind, Session, Turn

CFG = {
    "ingest": {
        "turns_per_chunk": 0,
        "extract": {"temperature": 0.0, "max_new_tokens": 40, "ahead_turns": 0},
        "manager": {"temperature": 0.0, "max_new_tokens": 128, "related_k": 3, "max_related": 10,
                    "max_facts_per_call": 6, "skip_known_facts": True},
    },
    "answer": {"top_k": 2, "distill": False, "temperature": 0.0, "max_new_tokens": 16},
}


def _conversation() -> Conversation:
    lines = [
        ("1 May, 2023", [("Ann", "I live in Boston"), ("Bo", "I have a cat"), ("Ann", "I have a bike")]),
        ("2 May, 2023", [("Ann", "I moved to Oslo"), ("Bo", "Hello there"), ("Ann", "I sold my bike"),
                         ("Bo", "I have a cat")]),
    ]
    sessions = [
        Session(index=i + 1, date_time=date, turns=[
            Turn(dia_id=f"D{i + 1}:{j + 1}", speaker=who, text=text, session=i + 1, session_date=date)
            for j, (who, text) in enumerate(turns)
        ])
        for i, (date, turns) in enumerate(lines)
    ]
    qa = [QA(conversation_id="conv-x", index=0, question="Where does Ann live?", answer="Oslo", category=1)]
    return Conversation(conversation_id="conv-x", speaker_a="Ann", speaker_b="Bo", sessions=sessions, qa=qa)


class ScriptedLLM:
    """Extraction: one fact per turn ("Hello" holds none). Manager: a move UPDATEs the memory about
    where the speaker lives, a sale DELETEs the memory of the thing sold, anything else is ADDed.
    Answers: "Answer: Oslo"."""

    name, context_window = "scripted", 4096

    def generate(self, conversations, params):
        out = []
        for conv in conversations:
            last = conv[-1]["content"]
            if conv[0]["content"] == EXTRACT_SYSTEM:
                who, said = last.split("\n", 1)[1].split(": ", 1)
                text = "NONE" if said.startswith("Hello") else f"- {who} says: {said}"
            elif conv[0]["content"].startswith(ANSWER_SYSTEM[:30]):
                text = "Answer: Oslo"
            else:
                existing = re.findall(r"^(\d+): (.*)$", last.split("NEW FACTS:")[0], re.M)
                ops = []
                for fact in re.findall(r"^- (.*)$", last.split("NEW FACTS:")[1], re.M):
                    home = next((i for i, t in existing if "live" in t), None)
                    bike = next((i for i, t in existing if "bike" in t), None)
                    if "moved" in fact and home:
                        ops.append(f"UPDATE {home}: {fact}")
                    elif "sold" in fact and bike:
                        ops.append(f"DELETE {bike}")
                    else:
                        ops.append(f"ADD: {fact}")
                text = "\n".join(ops) or "NONE"
            out.append(Generation(text, 10, 5, "stop"))
        return out


def test_outcomes_name_every_op_in_order(factory):
    bank = factory.bank("conv-o/Ann")
    apply_operations(bank, parse_operations("ADD: Ann lives in Boston\nADD: Ann has a bike", {}).ops)
    related = bank.list()
    _, id_map = build_manager_messages(["x"], related, owner="Ann")
    ops = parse_operations("UPDATE 0: Ann lives in Oslo\nADD: ann has a  bike\nDELETE 1\nNONE\n"
                           "ADD: Ann likes tea", id_map).ops
    ghost = str(uuid.uuid4())
    ops.append(MemoryOp(op=OpKind.DELETE, id=ghost))
    outcomes: list[dict] = []
    stats = apply_operations(bank, ops, timestamp="2 May, 2023", outcomes=outcomes)

    assert (stats.updated, stats.deleted, stats.added, stats.duplicate, stats.noop, stats.failed) == (1, 1, 1, 1, 1, 1)
    assert [(o["op"], o["status"]) for o in outcomes] == [
        ("UPDATE", "applied"), ("ADD", "duplicate"), ("DELETE", "applied"), ("NOOP", "applied"),
        ("ADD", "applied"), ("DELETE", "refused")]
    upd, _, dele, _, add, ref = outcomes
    assert (upd["id"], upd["old_text"], upd["text"]) == (related[0].id, "Ann lives in Boston", "Ann lives in Oslo")
    assert (dele["id"], dele["old_text"]) == (related[1].id, "Ann has a bike")
    assert ref["id"] == ghost and ref["error"]
    held = {m.id: m.text for m in bank.list()}
    assert held == {related[0].id: "Ann lives in Oslo", add["id"]: "Ann likes tea"}
    json.dumps(outcomes)  # plain data


def test_no_outcomes_list_changes_nothing(factory):
    bank = factory.bank("conv-o/Bo")
    stats = apply_operations(bank, parse_operations("ADD: Bo has a cat", {}).ops)
    assert stats.added == 1 and [m.text for m in bank.list()] == ["Bo has a cat"]


def test_trace_shows_each_turn_each_call_and_the_bank_around_it(factory):
    events: list[dict] = []
    conv = _conversation()
    pipe = Pipeline(ScriptedLLM(), factory.bank, CFG, trace=events.append)
    stats = pipe.ingest([conv])
    json.dumps(events)  # JSON-ready

    facts = [e for e in events if e["event"] == "facts"]
    assert [e["dia_id"] for e in facts] == [t.dia_id for t in conv.turns]
    assert facts[0]["facts"] == ["Ann says: I live in Boston"] and facts[0]["namespace"] == "conv-x/Ann"
    assert facts[4]["facts"] == [] and facts[4]["parsed"]  # "Hello there": NONE
    assert facts[0]["session_date"] == "1 May, 2023" and facts[3]["step"] == 1

    # Bo's cat again in session 2: known verbatim, not sent to the manager
    assert [e for e in events if e["event"] == "known_facts"] == [
        {"event": "known_facts", "step": 1, "namespace": "conv-x/Bo", "facts": ["Bo says: I have a cat"]}]

    calls = [e for e in events if e["event"] == "manager"]
    assert len(calls) == stats.manager_calls == 3
    ann2 = next(e for e in calls if e["step"] == 1 and e["namespace"] == "conv-x/Ann")
    assert ann2["facts"] == ["Ann says: I moved to Oslo", "Ann says: I sold my bike"]
    assert [m["text"] for m in ann2["bank_before"]] == ["Ann says: I live in Boston", "Ann says: I have a bike"]
    assert {m["prompt_id"] for m in ann2["related"]} == {0, 1}
    assert [(o["op"], o["status"], o["old_text"]) for o in ann2["ops"]] == [
        ("UPDATE", "applied", "Ann says: I live in Boston"), ("DELETE", "applied", "Ann says: I have a bike")]
    assert [m["text"] for m in ann2["bank_after"]] == ["Ann says: I moved to Oslo"]
    # the trace's last view of each bank is the bank
    for ns in ("conv-x/Ann", "conv-x/Bo"):
        last = [e for e in calls if e["namespace"] == ns][-1]
        assert last["bank_after"] == [{"id": m.id, "text": m.text, "timestamp": m.timestamp}
                                      for m in factory.bank(ns).list()]
    # before/after chain: each call starts from the bank the previous call of its namespace left
    ann = [e for e in calls if e["namespace"] == "conv-x/Ann"]
    assert ann[0]["bank_before"] == [] and ann[1]["bank_before"] == ann[0]["bank_after"]

    rows = pipe.answer(conv, conv.qa)
    asked = [e for e in events if e["event"] == "answer"]
    assert len(asked) == 1 and asked[0]["qid"] == "conv-x/q0" == rows[0]["qid"]
    assert [m["id"] for m in asked[0]["retrieved"]] == rows[0]["retrieved_ids"]
    assert {m["speaker"] for m in asked[0]["retrieved"]} == {"Ann", "Bo"}
    assert "Ann says: I moved to Oslo" in asked[0]["prompt"][-1]["content"]
    assert rows[0]["prediction"] == "Oslo"


def test_tracing_does_not_change_the_banks(factory):
    conv = _conversation()
    Pipeline(ScriptedLLM(), factory.bank, CFG, trace=lambda e: None).ingest([conv])
    traced = {ns: sorted(m.text for m in factory.bank(bank_namespace("conv-x", ns)).list()) for ns in ("Ann", "Bo")}
    other = BankFactory.open(path=":memory:", embedder=factory.embedder)
    try:
        Pipeline(ScriptedLLM(), other.bank, CFG).ingest([conv])
        plain = {ns: sorted(m.text for m in other.bank(bank_namespace("conv-x", ns)).list()) for ns in ("Ann", "Bo")}
    finally:
        other.close()
    assert traced == plain == {"Ann": ["Ann says: I moved to Oslo"], "Bo": ["Bo says: I have a cat"]}
