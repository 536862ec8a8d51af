"""The parsers of LLM output are total: any string gives a result (or a counted "unparseable"), never
an exception, in time roughly linear in its length. Property-based (hypothesis) over arbitrary text
and over mutations of valid outputs, plus the adversarial shapes an RL policy is known to produce."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_r1.agents._text import MAX_JSON_DEPTH, find_json, json_text
from memory_r1.agents.answerer import AnswerParse, parse_answer
from memory_r1.agents.extractor import FactParse, parse_facts
from memory_r1.agents.manager import ManagerParse, parse_operations
from memory_r1.eval.judge import parse_judgment
from memory_r1.types import OpKind

IDS = {0: "id-a", 1: "id-b", 2: "id-c"}

#: valid completions of each agent, the seeds of the mutations
VALID = [
    "ADD: Caroline adopted a dog\nUPDATE 1: Caroline lives in Oslo\nDELETE 2\nNONE",
    '```json\n{"memory": [{"id": "0", "text": "Caroline is 30", "event": "UPDATE"},'
    ' {"id": "1", "event": "DELETE"}, {"text": "x", "event": "ADD"}]}\n```',
    '[{"id": "2", "text": "Caroline moved", "event": "UPDATE"}]',
    "- Caroline went to a support group on 7 May 2023.\n- Caroline is studying counseling.",
    '{"facts": ["Caroline moved from Sweden", "Caroline likes tea"]}',
    "Relevant:\n- 8 May 2023: Caroline went to a support group.\nAnswer: 7 May 2023",
    '{"label": "CORRECT"}',
    "NONE",
]
#: pieces a mutation inserts: the syntax the parsers key on
PIECES = ["[", "]", "{", "}", '"', ":", ",", "\\", "```", "```json", "\n", "Answer:", "ADD", "UPDATE 1:",
          "DELETE", "null", "NaN", "1e999", "-", "\ud83d", "\x00", " " * 50, "9" * 5000]

EXAMPLES = 300  # per parser and strategy: the whole file runs in a few seconds


@st.composite
def mutated(draw) -> str:
    """A valid completion with a few random edits: insert a piece or random text, delete or
    duplicate a span, repeat a piece many times (up to a deep bracket bomb), truncate."""
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["piece", "text", "delete", "dup", "bomb", "cut"]))
        if kind == "piece":
            text = text[:i] + draw(st.sampled_from(PIECES)) + text[i:]
        elif kind == "text":
            text = text[:i] + draw(st.text(max_size=20)) + text[i:]
        elif kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 20)):]
        elif kind == "dup":
            j = draw(st.integers(i, min(len(text), i + 40)))
            text = text[:j] + text[i:j] * draw(st.integers(2, 50)) + text[j:]
        elif kind == "bomb":
            text = text[:i] + draw(st.sampled_from(["[", "{", '{"a":', '["', "[1,"])) * draw(
                st.integers(100, 3000)) + text[i:]
        else:
            text = text[:i]
    return text


ANY_TEXT = st.one_of(st.text(max_size=400), mutated())
SPEAKERS = st.one_of(st.sampled_from(["Caroline", "Melanie Smith", "", " ", "\t\n"]), st.text(max_size=20))


def _check_manager(r: ManagerParse) -> None:
    assert isinstance(r, ManagerParse)
    for op in r.ops:
        if op.op in (OpKind.UPDATE, OpKind.DELETE):
            assert op.id in IDS.values()  # never an invented id
        else:
            assert op.id is None
        if op.op in (OpKind.ADD, OpKind.UPDATE):
            assert isinstance(op.text, str) and op.text.strip() and op.text != "None"
    assert r.parsed or not r.ops  # an unparseable completion changes nothing


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_parse_operations_is_total(text):
    _check_manager(parse_operations(text, IDS))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT, SPEAKERS)
def test_parse_facts_is_total(text, speaker):
    r = parse_facts(text, speaker, max_facts=5, max_chars=50)
    assert isinstance(r, FactParse) and len(r.facts) <= 5
    assert all(isinstance(f, str) and f.strip() and f != "None" for f in r.facts)
    assert len(set(f.lower() for f in r.facts)) == len(r.facts)
    assert r.ok == bool(r.facts) or (not r.facts and r.ok)  # ok without facts only for NONE


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_parse_answer_is_total(text):
    r = parse_answer(text)
    assert isinstance(r, AnswerParse) and isinstance(r.answer, str)
    assert "\n" not in r.answer


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_parse_judgment_is_total(text):
    assert parse_judgment(text) in (True, False, None)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
                    max_leaves=20),
       st.text(max_size=30), st.text(max_size=30))
def test_find_json_finds_any_embedded_value(value, before, after):
    """Whatever JSON container sits in prose (without brackets of its own) is found, equal to the
    original: the finder is not just total but right."""
    if not isinstance(value, (list, dict)):
        value = [value]
    before = before.replace("[", "").replace("{", "")
    assert find_json(before + json.dumps(value) + after) == value


def test_null_text_is_no_text():
    r = parse_operations('[{"event": "ADD", "text": null}, {"event": "UPDATE", "id": "1", "text": null}]', IDS)
    assert r.ops == [] and r.malformed == 2 and not r.parsed
    r = parse_operations('{"event": "ADD", "text": 42}', IDS)
    assert [(o.op, o.text) for o in r.ops] == [(OpKind.ADD, "42")]
    assert parse_facts('{"facts": [null, true, {"text": null}, "Sam likes tea"]}', "Sam").facts == ["Sam likes tea"]
    assert json_text(float("nan")) is None and json_text(False) is None


def test_blank_speaker_keeps_facts_as_written():
    assert parse_facts("- likes tea\n- moved to Oslo", "   ").facts == ["likes tea", "moved to Oslo"]
    assert parse_facts("- likes tea", " Sam  Lee ").facts == ["Sam Lee: likes tea"]


def _depth(value) -> int:
    depth = 0
    while isinstance(value, list) and value:
        value, depth = value[0], depth + 1
    return depth + isinstance(value, list)


def test_deep_nesting_is_not_json_but_inner_values_are():
    fits = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert _depth(find_json(fits)) == MAX_JSON_DEPTH
    assert _depth(find_json("[" + fits + "]")) < MAX_JSON_DEPTH  # one level more: not taken whole
    assert find_json('[' * 5000 + '{"label": "WRONG"}') == {"label": "WRONG"}
    assert parse_judgment("[" * 5000 + '{"label": "WRONG"}') is False
    ops = parse_operations("[" * 1000 + "\nADD: Caroline likes tea", IDS).ops
    assert [(o.op, o.text) for o in ops] == [(OpKind.ADD, "Caroline likes tea")]


#: shapes that made the old finder recursive or quadratic; each is parsed at 200,000 characters
BOMBS = ["[", "{", '{"a":', '["', "[1,", '"[', "[[]", "```", "```json\n[", '{"a": "\\', "[" + " " * 9,
         "Answer:" + " " * 9, "ADD " + " " * 9, "1" * 9 + ".", "- " * 5]


def _parse_all_cpu_seconds(text: str) -> float:
    """CPU seconds this process spends running every parser over ``text`` (process time, so a
    loaded machine does not change it the way wall time would)."""
    t = time.process_time()
    find_json(text)
    parse_operations(text, IDS)
    parse_facts(text, "Caroline")
    parse_answer(text)
    parse_judgment(text)
    return time.process_time() - t


@pytest.mark.parametrize("piece", BOMBS)
def test_time_is_linear_in_length(piece):
    """One adversarial shape at 50,000 and at 200,000 characters: 4x the text may cost about 4x the
    CPU time (linear), never the 16x a quadratic parser needs. Compared in CPU time of this process,
    not against a wall-clock budget, so a busy machine neither fails nor hides it."""
    small = piece * (50_000 // len(piece))
    big = piece * (200_000 // len(piece))
    _parse_all_cpu_seconds(small)  # warm-up: imports, regex compilation
    t_small = min(_parse_all_cpu_seconds(small) for _ in range(2))
    t_big = _parse_all_cpu_seconds(big)
    assert t_big < 8 * t_small + 0.2, f"{t_big:.2f} s CPU at 200k vs {t_small:.2f} s at 50k: not linear"
