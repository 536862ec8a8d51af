"""Outcome rewards as plain callables (TRL style), selected by name from recipes.

``REWARDS`` maps a recipe's ``reward.name`` to a function
``(completion: str, gold: str) -> float`` for the Answer Agent; the Memory Manager's reward lives in
:mod:`memory_r1.rewards.manager` because it needs a frozen Answer Agent.
"""

from memory_r1.rewards.answer import answer_em_reward, answer_f1_reward

REWARDS = {
    "answer_em": answer_em_reward,
    "answer_f1": answer_f1_reward,
}

__all__ = ["REWARDS", "answer_em_reward", "answer_f1_reward"]
