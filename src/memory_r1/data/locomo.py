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

Files that parse but would distort an evaluation, or that the program cannot use, are refused the
same way (one `LocomoDataError` naming the place):
- a ``sample_id`` that is not a usable id (`check_label`): blank, padded with blanks, longer than
  `MAX_LABEL_CHARS`, holding a control, invisible format or line-separator character, or a ``/`` or
  ``@`` (they separate the id from the speaker in bank namespaces and question ids, so ``a/b`` +
  ``c`` and ``a`` + ``b/c`` would share a bank). Run files named after an id go through
  `memory_r1.runs.data_path` whatever the id; this check keeps ids meaningful;
- a speaker name or dialogue id that is not a usable label (same rule, ``/`` and ``@`` allowed),
  the two speakers of a conversation with the same name (case aside: their banks would be one), and
  a turn whose speaker is neither ``speaker_a`` nor ``speaker_b``;
- any text holding an unpaired ``\\ud800``-style escape (it has no UTF-8 form);
- a blank question, a blank gold answer outside category 5 (adversarial questions have none), and
  answers given as ``NaN`` / ``Infinity`` literals or numbers too large for a float;
- JSON nested deeper than Python can decode, an integer literal over Python's digit limit, a file
  that cannot be read: each is one line naming the place, never a traceback.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

from memory_r1.types import QA, Conversation, Session, Turn

log = logging.getLogger(__name__)

#: (conversation, evidence id) pairs of the pinned file that name no turn. Kept, not guessed at.
KNOWN_DANGLING_EVIDENCE: frozenset[tuple[str, str]] = frozenset(
    {("conv-42", "D10:19"), ("conv-42", "D"), ("conv-47", "D4:36")}
)

_SESSION_RE = re.compile(r"session_(\d+)")
_SURROGATE = re.compile("[\ud800-\udfff]")
#: Longest sample_id or speaker name accepted (the published ones have at most 8 characters).
MAX_LABEL_CHARS = 100
#: Characters a sample_id may not hold: they separate it from the speaker in bank namespaces
#: (``conv-26/Caroline``), question ids (``conv-26/q3``) and training namespaces (``conv-26@D1:3``).
ID_SEPARATORS = "/@"
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


#: Unicode categories a label may not hold: control, format (zero-width, bidi), surrogate, line
#: and paragraph separators.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def check_label(value: str, what: str, forbidden: str = "") -> str | None:
    """Why `value` cannot be used as an id or a name, or None when it can.

    >>> check_label("conv-26", "sample_id", ID_SEPARATORS) is None
    True
    >>> check_label("x/../../escaped", "sample_id", ID_SEPARATORS)
    "sample_id 'x/../../escaped' holds '/' (at 1)"
    >>> check_label("  ", "speaker name")
    'blank speaker name'
    """
    if not value.strip():
        return f"blank {what}"
    if value != value.strip():
        return f"{what} {value!r:.60} starts or ends with blanks"
    if len(value) > MAX_LABEL_CHARS:
        return f"{what} is {len(value)} characters long (at most {MAX_LABEL_CHARS})"
    for i, ch in enumerate(value):
        if ch in forbidden or unicodedata.category(ch) in _INVISIBLE:
            return f"{what} {value!r:.60} holds {ch!r} (at {i})"
    return None


class _Unusable:
    """A JSON literal the file holds that Python cannot turn into a value (an integer over the digit
    limit); refused with its place by the checks."""

    def __init__(self, what: str) -> None:
        self.what = what


def _int_literal(text: str) -> int | _Unusable:
    try:
        return int(text)
    except ValueError:
        return _Unusable(f"an integer literal of {len(text)} digits (over Python's limit)")


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
        if isinstance(value, _Unusable):
            raise self.fail(place, f"expected {name}, got {value.what}")
        # bool is an int subclass; never accept it where a number or string is meant
        if isinstance(value, bool) or not isinstance(value, types):
            raise self.fail(place, f"expected {name}, got {type(value).__name__} {value!r:.60}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(place, f"expected {name}, got {value} (a NaN or Infinity literal, or a number too large)")
        if isinstance(value, str) and (m := _SURROGATE.search(value)):
            # a "\ud800" escape without its pair: no UTF-8 for it, so prompts, stores and result
            # files could not take the text
            raise self.fail(place, f"unpaired surrogate \\u{ord(m.group()):04x} at character {m.start()}")
        return value

    def label(self, value: str, place: str, what: str, forbidden: str = "") -> str:
        problem = check_label(value, what, forbidden)
        if problem:
            raise self.fail(place, problem)
        return value


def _parse_turn(ck: _Checker, raw: Any, place: str, session: int, date: str, speakers: tuple[str, str]) -> Turn:
    ck.typed(raw, place, dict, "an object")
    speaker = ck.get(raw, "speaker", place, str, "a string")
    if speaker not in speakers:
        raise ck.fail(f"{place}.speaker", f"{speaker!r:.60} is neither speaker_a ({speakers[0]!r}) "
                                          f"nor speaker_b ({speakers[1]!r})")
    caption = raw.get("blip_caption")
    if caption is not None:
        ck.typed(caption, f"{place}.blip_caption", str, "a string")
    url = raw.get("img_url")
    if isinstance(url, list):  # the file stores image URLs as one-element lists
        url = url[0] if url else None
    return Turn(
        dia_id=ck.label(ck.get(raw, "dia_id", place, str, "a string"), f"{place}.dia_id", "dialogue id"),
        speaker=speaker,
        text=ck.get(raw, "text", place, str, "a string"),
        image_caption=caption,
        image_url=url if isinstance(url, str) else None,
        session=session,
        session_date=date,
    )


def _parse_conversation(ck: _Checker, raw: Any, pos: int) -> Conversation:
    ck.typed(raw, f"[{pos}]", dict, "an object")
    cid = ck.label(ck.get(raw, "sample_id", f"[{pos}]", str, "a string"), f"[{pos}].sample_id", "sample_id",
                   ID_SEPARATORS)
    conv = ck.get(raw, "conversation", cid, dict, "an object")
    place = f"{cid}.conversation"
    speaker_a = ck.label(ck.get(conv, "speaker_a", place, str, "a string"), f"{place}.speaker_a", "speaker name")
    speaker_b = ck.label(ck.get(conv, "speaker_b", place, str, "a string"), f"{place}.speaker_b", "speaker name")
    if speaker_a.casefold() == speaker_b.casefold():
        raise ck.fail(f"{place}.speaker_b", f"same name as speaker_a ({speaker_a!r}): the two speakers' "
                                            "memories would not be told apart")

    sessions: list[Session] = []
    numbers = sorted(int(m.group(1)) for k in conv if (m := _SESSION_RE.fullmatch(k)))
    for n in numbers:
        key = f"session_{n}"
        date = ck.get(conv, f"{key}_date_time", place, str, "a string")
        raw_turns = ck.get(conv, key, place, list, "a list of turns")
        turns = [
            _parse_turn(ck, t, f"{place}.{key}[{i}]", n, date, (speaker_a, speaker_b))
            for i, t in enumerate(raw_turns)
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
    if not question.strip():
        raise ck.fail(f"{place}.question", "blank question")
    category = ck.get(raw, "category", place, int, "an integer 1-5")
    if not 1 <= category <= 5:
        raise ck.fail(f"{place}.category", f"expected an integer 1-5, got {category}")
    if "answer" in raw:
        answer = ck.typed(raw["answer"], f"{place}.answer", (str, int, float), "a string")
        if category != 5 and not str(answer).strip():  # every answer would score against nothing
            raise ck.fail(f"{place}.answer", f"blank gold answer (category {category})")
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


def _line_col(text: str, pos: int) -> str:
    line = text.count("\n", 0, pos) + 1
    return f"line {line} column {pos - (text.rfind(chr(10), 0, pos) + 1) + 1}"


def _deepest(text: str) -> tuple[int, int]:
    """(position, depth) of the first most deeply nested bracket, strings skipped; linear."""
    depth = best = where = 0
    for m in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[{]|[\]}]', text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            if depth > best:
                best, where = depth, m.start()
        elif tok in "]}":
            depth -= 1
    return where, best


def read_json(path: Path) -> Any:
    """A JSON file's value; every way it cannot be read or decoded is a `LocomoDataError` naming the
    place (the file, a byte, a line and column), never another exception."""
    ck = _Checker(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ck.fail(f"byte {exc.start}", "not UTF-8 text") from None
    except OSError as exc:  # unreadable, a folder, gone since it was found
        raise ck.fail("file", f"cannot be read: {exc.strerror or exc}") from None
    try:
        return json.loads(text, parse_int=_int_literal)
    except json.JSONDecodeError as exc:
        raise ck.fail(f"line {exc.lineno} column {exc.colno}", f"invalid JSON: {exc.msg}") from None
    except ValueError as exc:  # any other literal Python cannot hold
        raise ck.fail("file", f"invalid JSON: {' '.join(str(exc).split())[:200]}") from None
    except RecursionError:
        where, depth = _deepest(text)
        raise ck.fail(_line_col(text, where), f"JSON nested {depth} levels deep (more than Python can "
                                              f"decode with its recursion limit {sys.getrecursionlimit()})") from None


def load_locomo(path: Path | str) -> list[Conversation]:
    """Parse and validate the whole file. Raises `LocomoDataError` (a ValueError) on bad data."""
    path = Path(path)
    ck = _Checker(path)
    raw = read_json(path)
    ck.typed(raw, "top level", list, "a list of conversations")
    convs = [_parse_conversation(ck, c, i) for i, c in enumerate(raw)]
    ids = [c.conversation_id for c in convs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise ck.fail("top level", f"duplicate sample_id {sorted(dup)}")
    log.debug("loaded %d conversations from %s", len(convs), path)
    return convs
