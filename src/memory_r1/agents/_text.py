"""Small text helpers shared by the agents' parsers (pure, no I/O).

Every helper here is total: it returns a value for *any* string (an LLM policy under RL writes
anything, e.g. a thousand ``[`` in a row) and runs in time roughly linear in the text's length.
"""

from __future__ import annotations

import json
import math
import re

# `\s*+` is possessive: a fence followed by a long run of blanks and no closing fence must not
# make the engine retry every split of the blanks (quadratic time)
_FENCE = re.compile(r"```(?:json|JSON)?\s*+(.*?)```", re.S)

#: Deepest nesting of brackets `find_json` accepts. Real outputs nest 3 deep; a deeper value is
#: treated as not JSON (it could not be printed or re-encoded without hitting Python's recursion limit).
MAX_JSON_DEPTH = 32


def strip_fences(text: str) -> str:
    """Remove markdown code fences, keeping their content.

    >>> strip_fences("Here:\\n```json\\n[1]\\n```\\nDone")
    'Here:\\n[1]\\n\\nDone'
    """
    return _FENCE.sub(lambda m: m.group(1), text)


_OPEN = re.compile(r"[\[{]")
_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"(-?(?:0|[1-9][0-9]*))(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS = (("true", True), ("false", False), ("null", None),
              ("NaN", math.nan), ("Infinity", math.inf), ("-Infinity", -math.inf))
_CLOSE = {"[": "]", "{": "}"}
_SURROGATE = re.compile("[\ud800-\udfff]")
# a whole JSON string, possessive so a failed match never backtracks: checked before decoding,
# because json's own error for a bad string counts the lines up to its position (O(position) per
# error, so quadratic over a text of many bad strings)
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]++|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*+"')
# what a container expects next
_VALUE, _VALUE_OR_CLOSE, _KEY, _KEY_OR_CLOSE, _COLON, _COMMA_OR_CLOSE = range(6)


class _Frame:
    __slots__ = ("value", "start", "close", "expect", "key")

    def __init__(self, value: list | dict, start: int, close: str) -> None:
        self.value = value
        self.start = start
        self.close = close
        self.expect = _VALUE_OR_CLOSE if close == "]" else _KEY_OR_CLOSE
        self.key = ""


def _scalar(text: str, pos: int) -> tuple[object, int] | None:
    """A JSON number, string or constant at `pos` and the position after it, else None."""
    ch = text[pos]
    if ch == '"':
        m = _STRING.match(text, pos)
        if m is None:
            return None
        try:
            value, end = json.decoder.scanstring(text, pos + 1, True)
        except json.JSONDecodeError:  # not expected after the match; never an exception out of here
            return None
        if _SURROGATE.search(value):  # "\ud800" escapes: pair them up, replace the lone ones
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value, end
    m = _NUMBER.match(text, pos)
    if m is not None:
        try:
            value = float(m.group()) if m.group(2) or m.group(3) else int(m.group())
        except ValueError:  # an integer over Python's digit limit
            return None
        return value, m.end()
    for word, value in _CONSTANTS:
        if text.startswith(word, pos):
            return value, pos + len(word)
    return None


def _parse_container(text: str, start: int):
    """Parse the JSON array or object opening at ``text[start]`` with an explicit stack (no recursion).

    Returns ``(True, value, end)``; or, when the text is not valid JSON from `start`, ``(False,
    nested, fail)``: `fail` is where parsing stopped (always > start) and `nested` the earliest-starting
    array or object completed inside before it (or None). A start between `start` and `fail` that is
    not inside a string parses to the same failure, so the caller resumes its search at `fail`.
    """
    n = len(text)
    stack: list[_Frame] = [_Frame([] if text[start] == "[" else {}, start, _CLOSE[text[start]])]
    pos = start + 1
    nested: tuple[int, object] | None = None
    while True:
        pos = _WS.match(text, pos).end()
        if pos >= n:
            return False, nested and nested[1], pos
        top = stack[-1]
        ch = text[pos]
        expect = top.expect
        if expect == _COLON:
            if ch != ":":
                return False, nested and nested[1], pos
            top.expect = _VALUE
            pos += 1
            continue
        if ch == top.close and expect in (_VALUE_OR_CLOSE, _KEY_OR_CLOSE, _COMMA_OR_CLOSE):
            stack.pop()
            value, pos = top.value, pos + 1
            if not stack:
                return True, value, pos
            if nested is None or top.start < nested[0]:
                nested = (top.start, value)
        elif expect == _COMMA_OR_CLOSE:
            if ch != ",":
                return False, nested and nested[1], pos
            top.expect = _VALUE if top.close == "]" else _KEY
            pos += 1
            continue
        elif expect in (_KEY, _KEY_OR_CLOSE):
            if ch != '"':
                return False, nested and nested[1], pos
            got = _scalar(text, pos)
            if got is None:
                return False, nested and nested[1], pos + 1
            top.key, pos = got  # type: ignore[assignment]
            top.expect = _COLON
            continue
        elif ch in "[{":
            if len(stack) >= MAX_JSON_DEPTH:
                return False, nested and nested[1], pos
            stack.append(_Frame([] if ch == "[" else {}, pos, _CLOSE[ch]))
            pos += 1
            continue
        else:
            got = _scalar(text, pos)
            if got is None:
                return False, nested and nested[1], pos + 1 if ch == '"' else pos
            value, pos = got
        # a complete value (scalar or closed container) goes into the container now on top
        top = stack[-1]
        if top.close == "]":
            top.value.append(value)  # type: ignore[union-attr]
        else:
            top.value[top.key] = value  # type: ignore[index]
        top.expect = _COMMA_OR_CLOSE


def find_json(text: str):
    """The first JSON object or array embedded in `text` (prose around it allowed), else None.

    Linear in the length of `text` (each character is read a bounded number of times) and never
    recursive; values nested deeper than `MAX_JSON_DEPTH` are not JSON here. When an array or object
    is cut off or broken, a complete one inside it still counts (``[{"a": 1}, oops``). Text inside a
    JSON string is not searched.

    >>> find_json('Sure! {"a": [1, 2]} hope it helps')
    {'a': [1, 2]}
    >>> find_json("no json here") is None
    True
    >>> find_json('[{"event": "ADD"}, oops')
    {'event': 'ADD'}
    >>> find_json("[" * 5000) is None
    True
    """
    text = strip_fences(text)
    pos = 0
    while True:
        m = _OPEN.search(text, pos)
        if m is None:
            return None
        ok, value, pos = _parse_container(text, m.start())
        if ok or value is not None:
            return value


def json_text(value: object) -> str | None:
    """A JSON scalar as text (strings as they are, finite numbers written out); None for null,
    booleans, non-finite numbers, arrays and objects, which hold no text.

    >>> json_text("Sam likes tea"), json_text(30), json_text(None), json_text([1])
    ('Sam likes tea', '30', None, None)
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")


def bullet_lines(text: str) -> list[str]:
    """Lines that start with a bullet or a number, bullet removed.

    >>> bullet_lines("Facts:\\n- a\\n2. b\\nplain")
    ['a', 'b']
    """
    out = []
    for line in text.splitlines():
        if _BULLET.match(line):
            item = _BULLET.sub("", line).strip()
            if item:
                out.append(item)
    return out


def drop_cut_line(text: str, finish_reason: str) -> str:
    r"""Without its last line when generation stopped at the length limit (that line may be cut off).

    >>> drop_cut_line("ADD: a\nADD: b is cu", "length")
    'ADD: a'
    >>> drop_cut_line("ADD: a\nADD: b", "stop")
    'ADD: a\nADD: b'
    """
    if finish_reason != "length":
        return text
    return text.rsplit("\n", 1)[0] if "\n" in text.strip() else ""
