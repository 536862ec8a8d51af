"""Outcome rewards as plain callables (TRL style): pure scoring, no training machinery.

The Answer Agent's rewards are ``(completion: str, gold: str) -> float`` functions
(:mod:`memory_r1.rewards.answer`); the Memory Manager's reward needs a frozen Answer Agent
(:mod:`memory_r1.rewards.manager`). Which names a recipe may give (``reward.name``) is each training
stage's to say (:mod:`memory_r1.train.stages`: ``REWARDS`` of its module).
"""

from memory_r1.rewards.answer import answer_em_reward, answer_f1_reward

__all__ = ["answer_em_reward", "answer_f1_reward"]
