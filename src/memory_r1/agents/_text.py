"""Small text helpers shared by the agents' parsers (pure, no I/O)."""

from __future__ import annotations

import json
import re

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)


def strip_fences(text: str) -> str:
    """Remove markdown code fences, keeping their content.

    >>> strip_fences("Here:\\n```json\\n[1]\\n```\\nDone")
    'Here:\\n[1]\\n\\nDone'
    """
    return _FENCE.sub(lambda m: m.group(1), text)


def find_json(text: str):
    """The first JSON object or array embedded in `text` (prose around it allowed), else None.

    >>> find_json('Sure! {"a": [1, 2]} hope it helps')
    {'a': [1, 2]}
    >>> find_json("no json here") is None
    True
    """
    text = strip_fences(text)
    decoder = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "[{":
            try:
                value, _ = decoder.raw_decode(text[i:])
            except json.JSONDecodeError:
                continue
            return value
    return None


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
