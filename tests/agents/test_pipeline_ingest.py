"""Ingestion order and batching of the memory-r1 pipeline, with a scripted LLM and a real bank
(qdrant local mode in memory, MiniLM): fact extraction runs ahead of the Memory Manager in windows
of ``extract.ahead_turns`` turns, and the manager still sees the bank as the previous sessions left
it."""

from __future__ import annotations

import re

import pytest

from memory_r1.agents.extractor import EXTRACT_SYSTEM
from memory_r1.agents.pipeline import Pipeline
from memory_r1.agents.retrieval import bank_namespace
from memory_r1.llm import Generation
from memory_r1.types import Conversation, Session, Turn

CFG = {
    "ingest": {
        "turns_per_chunk": 0,
        "extract": {"temperature": 0.0, "max_new_tokens": 40},
        "manager": {"temperature": 0.0, "max_new_tokens": 128, "related_k": 3, "max_related": 10,
                    "max_facts_per_call": 6},
    }
}


def _conversation() -> Conversation:
    lines = [
        ("1 May, 2023", [("Ann", "I live in Boston"), ("Bo", "I have a cat")]),
        ("2 May, 2023", [("Ann", "I moved to Oslo"), ("Bo", "Hello there")]),
        ("3 May, 2023", [("Ann", "I started a pottery class")]),
    ]
    sessions = [
        Session(index=i + 1, date_time=date, turns=[
            Turn(dia_id=f"D{i + 1}:{j + 1}", speaker=who, text=text, session=i + 1, session_date=date)
            for j, (who, text) in enumerate(turns)
        ])
        for i, (date, turns) in enumerate(lines)
    ]
    return Conversation(conversation_id="conv-x", speaker_a="Ann", speaker_b="Bo", sessions=sessions, qa=[])


class ScriptedLLM:
    """Extraction: one fact per turn ("Hello" holds none). Manager: ADD each new fact, except that a
    fact about moving UPDATEs the memory about where the speaker lives (by its prompt id)."""

    name, context_window = "scripted", 4096

    def __init__(self):
        self.calls: list[list[tuple[str, int]]] = []  # per call: (kind, max_new_tokens) per row
        self.seen_existing: list[list[str]] = []

    def generate(self, conversations, params):
        each = params if isinstance(params, list) else [params] * len(conversations)
        rows, out = [], []
        for conv, p in zip(conversations, each, strict=True):
            last = conv[-1]["content"]
            if conv[0]["content"] == EXTRACT_SYSTEM:
                rows.append(("extract", p.max_new_tokens))
                who, said = last.split("\n", 1)[1].split(": ", 1)
                text = "NONE" if said.startswith("Hello") else f"- {who} says: {said}"
            else:
                rows.append(("manager", p.max_new_tokens))
                existing = re.findall(r"^(\d+): (.*)$", last.split("NEW FACTS:")[0], re.M)
                self.seen_existing.append([t for _, t in existing])
                ops = []
                for fact in re.findall(r"^- (.*)$", last.split("NEW FACTS:")[1], re.M):
                    home = next((i for i, t in existing if "live" in t), None)
                    ops.append(f"UPDATE {home}: {fact}" if "moved" in fact and home else f"ADD: {fact}")
                text = "\n".join(ops) or "NONE"
            out.append(Generation(text, 10, 5, "stop"))
        self.calls.append(rows)
        return out


def _ingest(factory, ahead: int):
    llm = ScriptedLLM()
    cfg = {"ingest": {**CFG["ingest"], "extract": {**CFG["ingest"]["extract"], "ahead_turns": ahead}}}
    stats = Pipeline(llm, factory.bank, cfg).ingest([_conversation()])
    return llm, stats


def test_extraction_runs_ahead_and_the_manager_sees_the_bank_in_order(factory):
    llm, stats = _ingest(factory, ahead=3)

    # sessions 1+2 extracted in one call (2 turns < 3, so session 2 joins), then the managers of
    # sessions 1 and 2, then session 3's extraction when it is needed, then its manager
    assert llm.calls == [
        [("extract", 40)] * 4,
        [("manager", 128), ("manager", 128)],
        [("manager", 128)],
        [("extract", 40)],
        [("manager", 128)],
    ]
    assert stats.turns == 5 and stats.chunks == 3 and stats.extraction_calls == 5
    assert stats.manager_calls == 4 and stats.facts == 4

    # the manager of session 2 saw Ann's bank as session 1 left it, and its UPDATE landed
    assert llm.seen_existing == [[], [], ["Ann says: I live in Boston"], ["Ann says: I moved to Oslo"]]
    ann = factory.bank(bank_namespace("conv-x", "Ann"))
    assert sorted(m.text for m in ann.list()) == ["Ann says: I moved to Oslo", "Ann says: I started a pottery class"]
    moved = next(m for m in ann.list() if "Oslo" in m.text)
    assert [h.op for h in ann.history(moved.id)] == ["ADD", "UPDATE"]
    assert moved.timestamp == "2 May, 2023"
    assert [m.text for m in factory.bank(bank_namespace("conv-x", "Bo")).list()] == ["Bo says: I have a cat"]


@pytest.mark.parametrize("ahead", [0, 100])
def test_window_size_changes_the_calls_not_the_bank(factory, ahead):
    llm, stats = _ingest(factory, ahead=ahead)
    kinds = [rows[0][0] for rows in llm.calls]
    if ahead == 0:  # one session at a time
        assert kinds == ["extract", "manager", "extract", "manager", "extract", "manager"]
    else:  # everything extracted up front
        assert kinds == ["extract", "manager", "manager", "manager"] and len(llm.calls[0]) == 5
    assert stats.extraction_calls == 5 and stats.manager_calls == 4
    ann = factory.bank(bank_namespace("conv-x", "Ann"))
    assert sorted(m.text for m in ann.list()) == ["Ann says: I moved to Oslo", "Ann says: I started a pottery class"]
