"""Fact extractor: one dialogue turn (with its session date) -> short self-contained facts about its
speaker, as in the paper (facts are extracted per turn). Prompt and parser live together here."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from memory_r1.agents._text import bullet_lines, find_json, json_text, strip_fences
from memory_r1.types import Turn

log = logging.getLogger(__name__)

EXTRACT_SYSTEM = (
    "Rewrite what the speaker says as short facts about the speaker, one per line starting with "
    '"- ". Name the speaker in each fact. Turn words like yesterday or last week into dates using '
    "the date given. Write NONE if the message holds no personal fact (greetings, questions)."
)

#: (date, turn, facts) examples shown before the real turn; {me} is replaced by the speaker's name
#: (a small model copies names from examples, so the examples use the real one)
EXTRACT_SHOTS = (
    ("3 June, 2023",
     "{me}: I adopted a puppy last week, his name is Rex! And I started guitar lessons.",
     "- {me} adopted a puppy named Rex in late May 2023.\n- {me} started taking guitar lessons."),
    ("9 March, 2021", "{me}: Hi! How are you doing?", "NONE"),
)


def build_extraction_messages(turn: Turn, date: str | None = None) -> list[dict]:
    """Chat messages asking for the facts one dialogue turn states about its speaker.

    The session date travels with the turn so that "last week" can be resolved."""
    msgs = [{"role": "system", "content": EXTRACT_SYSTEM}]
    for d, said, facts in EXTRACT_SHOTS:
        msgs += [
            {"role": "user", "content": f"Date: {d}\n" + said.format(me=turn.speaker)},
            {"role": "assistant", "content": facts.format(me=turn.speaker)},
        ]
    msgs.append({"role": "user", "content": f"Date: {date or turn.session_date}\n{turn.render()}"})
    return msgs


@dataclass
class FactParse:
    facts: list[str]
    ok: bool  # False when the completion had no recognisable fact list (and was not NONE)


_NONE = re.compile(r"^\s*(none|no facts?|nothing)\.?\s*$", re.I)


def parse_facts(text: str, speaker: str, max_facts: int = 20, max_chars: int = 300) -> FactParse:
    """Facts from an extractor completion: bullet lines, a JSON list / {"facts": [...]}, or NONE.

    Facts that do not name the speaker get the speaker's name in front; duplicates are dropped.

    >>> parse_facts("- Sam likes tea.\\n- likes tea\\n- Sam likes tea.", "Sam").facts
    ['Sam likes tea.', 'Sam: likes tea']
    >>> parse_facts('{"facts": ["Sam moved to Oslo in 2022"]}', "Sam").facts
    ['Sam moved to Oslo in 2022']
    >>> parse_facts("NONE", "Sam")
    FactParse(facts=[], ok=True)
    >>> parse_facts("I cannot help with that", "Sam").ok
    False
    >>> parse_facts('[{"text": null}, {"text": "likes tea"}]', " ").facts
    ['likes tea']
    """
    body = strip_fences(text).strip()
    if not body or _NONE.match(body):
        return FactParse([], ok=True)
    items: list[str] = []
    data = find_json(body) if body[:1] in "[{" or "```" in text else None
    if isinstance(data, dict):
        data = data.get("facts", data.get("memory"))
    if isinstance(data, list):
        items = [t for x in data if (t := json_text(x.get("text") if isinstance(x, dict) else x))]
    if not items:
        items = bullet_lines(body)
    name = " ".join(speaker.split())  # a blank name is no name: facts are then kept as written
    first = name.split(" ", 1)[0].lower()
    seen: set[str] = set()
    facts: list[str] = []
    for item in items:
        fact = " ".join(item.split())[:max_chars].strip()
        if not fact or _NONE.match(fact):
            continue
        if first and first not in fact.lower():
            fact = f"{name}: {fact}"
        key = fact.lower()
        if key not in seen:
            seen.add(key)
            facts.append(fact)
    return FactParse(facts[:max_facts], ok=bool(facts))
