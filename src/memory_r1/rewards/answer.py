"""Answer Agent rewards: the text after the last ``Answer:`` scored against the gold answer."""

from __future__ import annotations

from memory_r1.agents.answerer import parse_answer
from memory_r1.metrics import exact_match, f1_score


def answer_em_reward(completion: str, gold: str) -> float:
    """Exact match (normalised) of the parsed answer; the paper's reward.

    >>> answer_em_reward("Relevant:\\n- 2023: Sam adopted Rex.\\nAnswer: Rex.", "rex")
    1.0
    >>> answer_em_reward("Answer: a dog named Rex", "Rex")
    0.0
    >>> answer_em_reward("Rex", "Rex")  # no Answer: line -> no reward
    0.0
    """
    parsed = parse_answer(completion)
    return exact_match(parsed.answer, gold) if parsed.ok else 0.0


def answer_f1_reward(completion: str, gold: str) -> float:
    """Token-set F1 of the parsed answer (a denser reward for tiny CPU models; named so in results).

    >>> answer_f1_reward("Answer: a dog named Rex", "Rex")
    0.4
    >>> answer_f1_reward("no marker", "Rex")
    0.0
    """
    parsed = parse_answer(completion)
    return f1_score(parsed.answer, gold) if parsed.ok else 0.0
