"""Answer Agent: memories retrieved for each speaker (30 + 30 in the paper) -> distilled memories ->
``Answer: ...``. The parser keeps the text after the last ``Answer:``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from memory_r1.types import MemoryItem

ANSWER_SYSTEM = """You answer questions about two people, {speaker_a} and {speaker_b}, using memories of their conversations.
Each memory has the date it was recorded. Resolve relative dates ("last year") against that date.
{steps}
Keep the answer short: a few words, a name, a date or a short phrase."""

STEPS_DISTILL = """First write "Relevant:" and copy the one to three memories that help answer the question.
Then write "Answer:" followed by the answer."""

STEPS_DIRECT = 'Write "Answer:" followed by the answer.'

ANSWER_EXAMPLE_USER = """Memories for Sam:
- 3 June, 2023: Sam adopted a beagle puppy named Rex.
- 10 July, 2023: Sam started a pottery class.
Memories for Alex:
- 3 June, 2023: Alex is training for a marathon.
Question: What is the name of Sam's dog?"""

ANSWER_EXAMPLE_DISTILL = """Relevant:
- 3 June, 2023: Sam adopted a beagle puppy named Rex.
Answer: Rex"""

ANSWER_EXAMPLE_DIRECT = "Answer: Rex"


def format_memories(items: list[MemoryItem]) -> str:
    """Memories as the Answer Agent reads them: ``- {timestamp}: {text}``."""
    return "\n".join(f"- {m.timestamp}: {m.text}" if m.timestamp else f"- {m.text}" for m in items)


def build_answer_messages(
    question: str,
    speaker_a: str,
    memories_a: list[MemoryItem],
    speaker_b: str,
    memories_b: list[MemoryItem],
    distill: bool = True,
) -> list[dict]:
    system = ANSWER_SYSTEM.format(
        speaker_a=speaker_a, speaker_b=speaker_b, steps=STEPS_DISTILL if distill else STEPS_DIRECT
    )
    user = (
        f"Memories for {speaker_a}:\n{format_memories(memories_a) or '(none)'}\n"
        f"Memories for {speaker_b}:\n{format_memories(memories_b) or '(none)'}\n"
        f"Question: {question}"
    )
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": ANSWER_EXAMPLE_USER},
        {"role": "assistant", "content": ANSWER_EXAMPLE_DISTILL if distill else ANSWER_EXAMPLE_DIRECT},
        {"role": "user", "content": user},
    ]


def build_context_messages(question: str, context: str) -> list[dict]:
    """The full-context baseline: the dialogue itself instead of memories."""
    return [
        {"role": "system", "content": "Answer the question about the conversation below. "
         'Write "Answer:" followed by a short answer (a few words, a name or a date).'},
        {"role": "user", "content": f"{context}\n\nQuestion: {question}"},
    ]


@dataclass
class AnswerParse:
    answer: str
    distilled: str  # what the agent wrote before the answer (its selected memories)
    ok: bool  # an "Answer:" marker was present


_MARK = re.compile(r"answer\s*:", re.I)


def parse_answer(text: str) -> AnswerParse:
    """The text after the last ``Answer:``; without one, the last non-empty line (ok=False).

    >>> parse_answer("Relevant:\\n- 2023: Sam adopted Rex.\\nAnswer: Rex")
    AnswerParse(answer='Rex', distilled='Relevant:\\n- 2023: Sam adopted Rex.', ok=True)
    >>> parse_answer("answer: Oslo\\nAnswer: Berlin, Germany.").answer
    'Berlin, Germany.'
    >>> parse_answer("I think it is Rex").ok
    False
    """
    marks = list(_MARK.finditer(text))
    if marks:
        last = marks[-1]
        answer = text[last.end():].strip()
        answer = answer.splitlines()[0].strip() if answer else ""
        return AnswerParse(answer=answer, distilled=text[: last.start()].strip(), ok=True)
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return AnswerParse(answer=lines[-1] if lines else "", distilled="", ok=False)
