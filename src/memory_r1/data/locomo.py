"""Load and validate LoCoMo (`locomo10.json`) into typed records.

Every structural problem raises `LocomoDataError` naming the file and the place, e.g.
``locomo10.json: conv-26.qa[3].category: expected an integer 1-5, got 7``.
Known quirks of the published file load without error:
- more `session_N_date_time` keys than sessions (sessions are found by their `session_N` keys);
- integer answers (cast to str);
- empty evidence lists;
- evidence strings holding several ids (``"D8:6; D9:17"``) or a stray colon / leading zero
  (``"D:11:26"``, ``"D30:05"``), which are normalised;
- three evidence ids that point at no turn in the published file (`KNOWN_DANGLING_EVIDENCE`); they
  stay on the QA but link to nothing. Any other unknown evidence id is an error.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from memory_r1.types import QA, Conversation, Session, Turn

log = logging.getLogger(__name__)

#: (conversation, evidence id) pairs of the pinned file that name no turn. Kept, not guessed at.
KNOWN_DANGLING_EVIDENCE: frozenset[tuple[str, str]] = frozenset(
    {("conv-42", "D10:19"), ("conv-42", "D"), ("conv-47", "D4:36")}
)

_SESSION_RE = re.compile(r"session_(\d+)")
_EVIDENCE_RE = re.compile(r"D:?(\d+):0*(\d+)")


class LocomoDataError(ValueError):
    """A LoCoMo file that does not have the expected shape."""

    def __init__(self, file: Path | str, place: str, message: str):
        self.file = str(file)
        self.place = place
        self.message = message
        super().__init__(f"{Path(self.file).name}: {place}: {message}")


def normalise_evidence(raw: str) -> list[str]:
    """Split and normalise one evidence entry into dialogue ids.

    >>> normalise_evidence("D8:6; D9:17")
    ['D8:6', 'D9:17']
    >>> normalise_evidence("D:11:26")
    ['D11:26']
    >>> normalise_evidence("D30:05")
    ['D30:5']
    >>> normalise_evidence("D9:1 D4:4")
    ['D9:1', 'D4:4']
    >>> normalise_evidence("D")
    ['D']
    """
    parts = [p for p in re.split(r"[;,\s]+", raw.strip()) if p]
    out = []
    for p in parts:
        m = _EVIDENCE_RE.fullmatch(p)
        out.append(f"D{int(m.group(1))}:{int(m.group(2))}" if m else p)
    return out


class _Checker:
    """Type checks that raise with the file and place."""

    def __init__(self, file: Path):
        self.file = file

    def fail(self, place: str, message: str) -> LocomoDataError:
        return LocomoDataError(self.file, place, message)

    def get(self, obj: dict, key: str, place: str, types: type | tuple, name: str) -> Any:
        if key not in obj:
            raise self.fail(f"{place}.{key}" if place else key, "missing key")
        return self.typed(obj[key], f"{place}.{key}" if place else key, types, name)

    def typed(self, value: Any, place: str, types: type | tuple, name: str) -> Any:
        # bool is an int subclass; never accept it where a number or string is meant
        if isinstance(value, bool) or not isinstance(value, types):
            raise self.fail(place, f"expected {name}, got {type(value).__name__} {value!r:.60}")
        return value


def _parse_turn(ck: _Checker, raw: Any, place: str, session: int, date: str) -> Turn:
    ck.typed(raw, place, dict, "an object")
    caption = raw.get("blip_caption")
    if caption is not None:
        ck.typed(caption, f"{place}.blip_caption", str, "a string")
    url = raw.get("img_url")
    if isinstance(url, list):  # the file stores image URLs as one-element lists
        url = url[0] if url else None
    return Turn(
        dia_id=ck.get(raw, "dia_id", place, str, "a string"),
        speaker=ck.get(raw, "speaker", place, str, "a string"),
        text=ck.get(raw, "text", place, str, "a string"),
        image_caption=caption,
        image_url=url if isinstance(url, str) else None,
        session=session,
        session_date=date,
    )


def _parse_conversation(ck: _Checker, raw: Any, pos: int) -> Conversation:
    ck.typed(raw, f"[{pos}]", dict, "an object")
    cid = ck.get(raw, "sample_id", f"[{pos}]", str, "a string")
    conv = ck.get(raw, "conversation", cid, dict, "an object")
    place = f"{cid}.conversation"
    speaker_a = ck.get(conv, "speaker_a", place, str, "a string")
    speaker_b = ck.get(conv, "speaker_b", place, str, "a string")

    sessions: list[Session] = []
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_RE.fullmatch(k)))
    for n in numbers:
        key = f"session_{n}"
        date = ck.get(conv, f"{key}_date_time", place, str, "a string")
        raw_turns = ck.get(conv, key, place, list, "a list of turns")
        turns = [
            _parse_turn(ck, t, f"{place}.{key}[{i}]", n, date) for i, t in enumerate(raw_turns)
        ]
        sessions.append(Session(index=n, date_time=date, turns=turns))
    if not sessions:
        raise ck.fail(place, "no session_N keys")

    seen: dict[str, str] = {}
    for s in sessions:
        for i, t in enumerate(s.turns):
            where = f"{place}.session_{s.index}[{i}].dia_id"
            if t.dia_id in seen:
                raise ck.fail(where, f"duplicate dialogue id {t.dia_id!r} (also at {seen[t.dia_id]})")
            seen[t.dia_id] = where

    raw_qa = ck.get(raw, "qa", cid, list, "a list")
    qa = [_parse_qa(ck, q, f"{cid}.qa[{i}]", cid, i, seen) for i, q in enumerate(raw_qa)]
    return Conversation(
        conversation_id=cid, speaker_a=speaker_a, speaker_b=speaker_b, sessions=sessions, qa=qa
    )


def _parse_qa(ck: _Checker, raw: Any, place: str, cid: str, index: int, dia_ids: dict) -> QA:
    ck.typed(raw, place, dict, "an object")
    question = ck.get(raw, "question", place, str, "a string")
    category = ck.get(raw, "category", place, int, "an integer 1-5")
    if not 1 <= category <= 5:
        raise ck.fail(f"{place}.category", f"expected an integer 1-5, got {category}")
    if "answer" in raw:
        answer = ck.typed(raw["answer"], f"{place}.answer", (str, int, float), "a string")
    elif category == 5:
        answer = ""
    else:
        raise ck.fail(f"{place}.answer", "missing key")
    adv = raw.get("adversarial_answer")
    if adv is not None:
        adv = str(ck.typed(adv, f"{place}.adversarial_answer", (str, int, float), "a string"))
    raw_ev = ck.get(raw, "evidence", place, list, "a list of dialogue ids")
    evidence: list[str] = []
    for j, e in enumerate(raw_ev):
        ck.typed(e, f"{place}.evidence[{j}]", str, "a string")
        for eid in normalise_evidence(e):
            if eid not in dia_ids and (cid, eid) not in KNOWN_DANGLING_EVIDENCE:
                raise ck.fail(f"{place}.evidence[{j}]", f"unknown dialogue id {eid!r}")
            evidence.append(eid)
    return QA(
        conversation_id=cid,
        index=index,
        question=question,
        answer=str(answer),
        category=category,
        evidence=evidence,
        adversarial_answer=adv,
    )


def load_locomo(path: Path | str) -> list[Conversation]:
    """Parse and validate the whole file. Raises `LocomoDataError` (a ValueError) on bad data."""
    path = Path(path)
    ck = _Checker(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ck.fail(f"byte {exc.start}", "not UTF-8 text") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ck.fail(f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    ck.typed(raw, "top level", list, "a list of conversations")
    convs = [_parse_conversation(ck, c, i) for i, c in enumerate(raw)]
    ids = [c.conversation_id for c in convs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ck.fail("top level", f"duplicate sample_id {sorted(dup)}")
    log.debug("loaded %d conversations from %s", len(convs), path)
    return convs
