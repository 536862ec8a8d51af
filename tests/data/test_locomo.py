"""The LoCoMo loader on the real file and on broken copies of it."""

from __future__ import annotations

import copy
import json

import pytest

from memory_r1.data import LocomoDataError, load_locomo, split_conversations
from memory_r1.data.locomo import KNOWN_DANGLING_EVIDENCE


def test_real_file_shape(conversations):
    assert len(conversations) == 10
    assert sum(len(c.sessions) for c in conversations) == 272
    assert sum(len(c.turns) for c in conversations) == 5882
    assert sum(len(c.qa) for c in conversations) == 1986
    cats = [q.category for c in conversations for q in c.qa]
    assert [cats.count(k) for k in range(1, 6)] == [282, 321, 96, 841, 446]


def test_quirks_of_real_file(conversations, locomo_raw):
    conv26 = next(c for c in conversations if c.conversation_id == "conv-26")
    # 35 date keys but 19 sessions: sessions come from session_N keys
    n_date_keys = sum(1 for k in locomo_raw[0]["conversation"] if k.endswith("_date_time"))
    assert n_date_keys == 35 and len(conv26.sessions) == 19
    # integer answers are strings now
    assert conv26.qa[1].answer == "2022"
    assert all(isinstance(q.answer, str) for c in conversations for q in c.qa)
    # empty evidence loads
    assert sum(1 for c in conversations for q in c.qa if not q.evidence and q.category != 5) == 4
    # image turns keep their caption, and the rendered line shows it
    captioned = [t for c in conversations for t in c.turns if t.image_caption]
    assert len(captioned) == 1226
    assert captioned[0].image_caption in captioned[0].render()
    # multi-id evidence strings are split
    q = next(q for q in conv26.qa if "D8:6" in q.evidence)
    assert "D9:17" in q.evidence


def test_evidence_links_to_turns(conversations):
    linked = dangling = 0
    for c in conversations:
        index = c.turn_index()
        for q in c.qa:
            turns = c.evidence_turns(q)
            assert all(t.dia_id in q.evidence for t in turns)
            linked += len(turns)
            dangling += sum(1 for e in q.evidence if e not in index)
    assert dangling == len(KNOWN_DANGLING_EVIDENCE)
    assert linked > 2500
    conv26 = conversations[0]
    first = conv26.evidence_turns(conv26.qa[0])
    assert [t.dia_id for t in first] == ["D1:3"]
    assert "support group" in first[0].text and first[0].session_date == "1:56 pm on 8 May, 2023"


@pytest.mark.parametrize(
    "name,qa,cats,turns",
    [
        ("train", 152, [32, 37, 13, 70], 419),
        ("val", 81, [11, 26, 0, 44], 369),
        ("test", 1307, [239, 258, 83, 727], 5094),
    ],
)
def test_split_counts(conversations, name, qa, cats, turns):
    s = split_conversations(conversations, name).stats()
    assert s["qa"] == qa
    assert [s["by_category"][str(k)] for k in range(1, 5)] == cats
    assert s["turns"] == turns


def test_split_membership_and_adversarial(conversations):
    test = split_conversations(conversations, "test")
    assert test.conversation_ids == [
        "conv-41", "conv-42", "conv-43", "conv-44", "conv-47", "conv-48", "conv-49", "conv-50"
    ]
    with_adv = split_conversations(conversations, "train", include_adversarial=True)
    assert with_adv.stats()["by_category"]["5"] == 47
    assert with_adv.stats()["qa"] == 152 + 47
    with pytest.raises(ValueError, match="unknown split"):
        split_conversations(conversations, "dev")


# ---- broken copies ---------------------------------------------------------------------------


def _write(tmp_path, raw) -> str:
    p = tmp_path / "locomo10.json"
    p.write_text(json.dumps(raw))
    return p


def _broken(locomo_raw, edit):
    raw = copy.deepcopy(locomo_raw)
    edit(raw)
    return raw


BROKEN = [
    ("category_out_of_range", lambda r: r[0]["qa"][3].__setitem__("category", 7),
     "conv-26.qa[3].category", "1-5"),
    ("category_wrong_type", lambda r: r[0]["qa"][3].__setitem__("category", "two"),
     "conv-26.qa[3].category", "expected an integer"),
    ("missing_question", lambda r: r[1]["qa"][0].pop("question"),
     "conv-30.qa[0].question", "missing key"),
    ("missing_answer", lambda r: r[0]["qa"][5].pop("answer"),
     "conv-26.qa[5].answer", "missing key"),
    ("unknown_evidence", lambda r: r[0]["qa"][2]["evidence"].append("D99:1"),
     "conv-26.qa[2].evidence[2]", "unknown dialogue id 'D99:1'"),
    ("turn_text_type", lambda r: r[0]["conversation"]["session_2"][4].__setitem__("text", 5),
     "conv-26.conversation.session_2[4].text", "expected a string"),
    ("missing_date", lambda r: r[0]["conversation"].pop("session_3_date_time"),
     "conv-26.conversation.session_3_date_time", "missing key"),
    ("missing_speaker", lambda r: r[2]["conversation"].pop("speaker_a"),
     "conv-41.conversation.speaker_a", "missing key"),
    ("sessions_not_list", lambda r: r[0]["conversation"].__setitem__("session_1", {}),
     "conv-26.conversation.session_1", "expected a list"),
    ("qa_not_list", lambda r: r[0].__setitem__("qa", None), "conv-26.qa", "expected a list"),
]


@pytest.mark.parametrize("case,edit,place,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_copy_names_place(tmp_path, locomo_raw, case, edit, place, message):
    path = _write(tmp_path, _broken(locomo_raw, edit))
    with pytest.raises(LocomoDataError) as info:
        load_locomo(path)
    err = info.value
    assert err.place == place
    assert message in err.message
    assert str(err).startswith("locomo10.json: ")
    assert "\n" not in str(err)


def test_truncated_json(tmp_path, locomo_path):
    p = tmp_path / "locomo10.json"
    p.write_bytes(locomo_path.read_bytes()[:100_000])
    with pytest.raises(LocomoDataError, match=r"locomo10.json: line \d+ column \d+: invalid JSON"):
        load_locomo(p)


def test_top_level_not_a_list(tmp_path):
    p = _write(tmp_path, {"conv": []})
    with pytest.raises(LocomoDataError, match="top level: expected a list"):
        load_locomo(p)


def test_dangling_evidence_outside_known_quirks_fails(tmp_path, locomo_raw):
    # the same id that is a known quirk in conv-42 is an error in another conversation
    raw = _broken(locomo_raw, lambda r: r[0]["qa"][0]["evidence"].append("D10:19"))
    raw[0]["conversation"]["session_10"] = raw[0]["conversation"]["session_10"][:18]
    with pytest.raises(LocomoDataError, match="conv-26.qa\\[0\\].evidence\\[1\\]"):
        load_locomo(_write(tmp_path, raw))
