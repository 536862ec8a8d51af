"""Agent parsers on real-looking and broken completions (table-driven)."""

from __future__ import annotations

import pytest

from memory_r1.agents.answerer import build_answer_messages, format_memories, parse_answer
from memory_r1.agents.extractor import build_extraction_messages, parse_facts
from memory_r1.agents.manager import build_manager_messages, parse_operations
from memory_r1.eval.judge import parse_judgment
from memory_r1.types import MemoryItem, Turn

IDS = {0: "id-a", 1: "id-b", 2: "id-c"}

MANAGER_CASES = [
    # (completion, expected ops as (op, id, text), invalid ids, parsed)
    ("ADD: Caroline adopted a dog", [("ADD", None, "Caroline adopted a dog")], [], True),
    ("UPDATE 1: Caroline lives in Oslo\nDELETE 2\nNONE",
     [("UPDATE", "id-b", "Caroline lives in Oslo"), ("DELETE", "id-c", None), ("NOOP", None, None)], [], True),
    ("Sure! Here are the operations:\n```\nADD: likes tea\nUPDATE 0: moved in 2023\n```\nHope this helps.",
     [("ADD", None, "likes tea"), ("UPDATE", "id-a", "moved in 2023")], [], True),
    ('{"memory": [{"id": "0", "text": "Caroline is 30", "event": "UPDATE"},'
     ' {"id": "5", "text": "x", "event": "ADD"}, {"id": "1", "text": "", "event": "NONE"}]}',
     [("UPDATE", "id-a", "Caroline is 30"), ("ADD", None, "x"), ("NOOP", None, None)], [], True),
    ('[{"id": "9", "text": "ghost", "event": "UPDATE"}]', [], ["9"], True),
    ("DELETE 17\nUPDATE abc: text", [], ["17", "abc"], True),
    ("NONE", [("NOOP", None, None)], [], True),
    ("noop", [("NOOP", None, None)], [], True),
    ("- ADD: bullet form fact", [("ADD", None, "bullet form fact")], [], True),
    ("The memories look consistent with the facts.", [], [], False),
    ("", [], [], False),
    ('{"memory": [{"id": "0", "event": "MERGE"}]}', [], [], False),
    ("UPDATE 1:\nADD:", [], [], False),
]


@pytest.mark.parametrize("text,ops,invalid,parsed", MANAGER_CASES)
def test_parse_operations(text, ops, invalid, parsed):
    r = parse_operations(text, IDS)
    assert [(o.op.value, o.id, o.text) for o in r.ops] == ops
    assert r.invalid_ids == invalid
    assert r.parsed is parsed


def test_invented_id_never_maps_to_another_memory():
    r = parse_operations("UPDATE 3: x\nDELETE -1\nDELETE 1.0", IDS)
    assert all(o.id in (None, *IDS.values()) for o in r.ops)
    assert not any(o.op.value in ("UPDATE", "DELETE") for o in r.ops)


ANSWER_CASES = [
    ("Relevant:\n- 8 May 2023: Caroline went to a support group.\nAnswer: 7 May 2023", "7 May 2023", True),
    ("Answer: Paris", "Paris", True),
    ("answer:Paris\nmore text", "Paris", True),
    ("Answer: first guess\nHmm, no.\nAnswer: second", "second", True),
    ("ANSWER : Sweden", "Sweden", True),
    ("The answer is Sweden", "The answer is Sweden", False),
    ("", "", False),
    ("Answer:", "", True),
]


@pytest.mark.parametrize("text,answer,ok", ANSWER_CASES)
def test_parse_answer(text, answer, ok):
    r = parse_answer(text)
    assert (r.answer, r.ok) == (answer, ok)


FACT_CASES = [
    ("- Caroline went to a support group on 7 May 2023.\n- Caroline is studying counseling.",
     ["Caroline went to a support group on 7 May 2023.", "Caroline is studying counseling."], True),
    ("Here are the facts:\n1. Caroline likes hiking\n2) She has a dog", ["Caroline likes hiking", "Caroline: She has a dog"], True),
    ("```json\n[\"Caroline moved from Sweden\"]\n```", ["Caroline moved from Sweden"], True),
    ("NONE", [], True),
    ("None.", [], True),
    ("Melanie said hi to Caroline and they chatted.", [], False),
]


@pytest.mark.parametrize("text,facts,ok", FACT_CASES)
def test_parse_facts(text, facts, ok):
    r = parse_facts(text, "Caroline")
    assert (r.facts, r.ok) == (facts, ok)


def test_parse_facts_caps():
    text = "\n".join(f"- Caroline fact {i}" for i in range(50))
    assert len(parse_facts(text, "Caroline", max_facts=7).facts) == 7


JUDGE_CASES = [
    ('{"label": "CORRECT"}', True),
    ('```json\n{"label": "WRONG"}\n```', False),
    ("CORRECT", True),
    ("The generated answer is wrong.", False),
    ('{"label": "maybe"}', None),
    ("", None),
]


@pytest.mark.parametrize("text,label", JUDGE_CASES)
def test_parse_judgment(text, label):
    assert parse_judgment(text) == label


def _mem(i, text, ts="8 May, 2023"):
    return MemoryItem(id=f"m{i}", text=text, namespace="c/x", created_at="t", updated_at="t", timestamp=ts)


def test_prompts_show_integer_ids_and_timestamps():
    msgs, id_map = build_manager_messages(["Caroline likes tea"], [_mem(0, "Caroline likes coffee"), _mem(1, "b")])
    assert id_map == {0: "m0", 1: "m1"}
    assert "0: Caroline likes coffee\n1: b" in msgs[-1]["content"] and "m0" not in msgs[-1]["content"]
    assert "- Caroline likes tea" in msgs[-1]["content"]
    empty, no_ids = build_manager_messages(["x"], [])
    assert no_ids == {} and "(empty)" in empty[-1]["content"]
    assert format_memories([_mem(0, "Caroline likes coffee")]) == "- 8 May, 2023: Caroline likes coffee"
    am = build_answer_messages("Q?", "Caroline", [_mem(0, "a")], "Melanie", [], distill=False)
    assert "Relevant:" not in am[0]["content"] and "(none)" in am[-1]["content"]
    t = Turn(dia_id="D1:1", speaker="Caroline", text="Hi", session=1, session_date="8 May, 2023",
             image_caption="a photo of a dog")
    em = build_extraction_messages(t)
    assert "Date: 8 May, 2023" in em[-1]["content"] and "a photo of a dog" in em[-1]["content"]
