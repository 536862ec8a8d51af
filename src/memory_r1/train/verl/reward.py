"""The reward function verl loads: ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

verl 0.9.1 config (what :func:`memory_r1.train.verl.overrides.recipe_to_overrides` writes)::

    reward.custom_reward_function.path=pkg://memory_r1.train.verl.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs={reward: answer_f1, log_path: ..., ...}

verl merges ``reward_kwargs`` into every call. The function is async (verl awaits it inside its
reward worker, scoring the samples of a batch concurrently). It asks the stage registry
(:mod:`memory_r1.train.stages`) which stage's rows carry ``data_source`` and awaits that stage's
``score`` with the reward named ``reward`` (one of the stage's; default: its first, the paper's) and
the stage's own kwargs (the manager stage's frozen ``answerer``): ``memr1/answer`` rows are scored
by :mod:`memory_r1.train.stages.answer`, ``memr1/manager`` rows by :mod:`memory_r1.train.stages.manager`.

Every call returns ``{"score": float, "parsed": 0.0|1.0}`` (verl logs the extra key per data
source in validation). An unparseable completion gets its stage's defined score (0.0), is logged at
debug level and counted; with ``log_path`` each call also appends one JSON line (data source,
split, row id, reward, score, parsed, and what the stage adds) that the runner summarises into the
run's metrics.

>>> import asyncio
>>> asyncio.run(compute_score("memr1/answer", "Answer: Rex", "rex", reward="answer_em"))
{'score': 1.0, 'parsed': 1.0}
>>> asyncio.run(compute_score("memr1/answer", "Answer: a dog named Rex", "Rex", reward="answer_f1"))
{'score': 0.4, 'parsed': 1.0}
>>> asyncio.run(compute_score("memr1/answer", "no marker", "Rex"))
{'score': 0.0, 'parsed': 0.0}
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.train.stages import stage_for_source

log = logging.getLogger(__name__)

#: calls and unparseable completions scored by this process, per data source
COUNTS: Counter = Counter()
_log_lock = threading.Lock()


def _append_log(path: str | None, record: dict) -> None:
    if not path:
        return
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with _log_lock:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line)


def _count(data_source: str, parsed: bool) -> None:
    COUNTS[f"{data_source}/calls"] += 1
    if not parsed:
        COUNTS[f"{data_source}/unparsed"] += 1
    calls = COUNTS[f"{data_source}/calls"]
    if calls % 100 == 0:
        log.info("%s: %d completions scored, %d unparseable", data_source, calls, COUNTS[f"{data_source}/unparsed"])


async def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: Mapping | None = None,
    *,
    reward: str | None = None,
    log_path: str | None = None,
    **kwargs: Any,
) -> dict:
    """Score one completion for verl (see the module docstring). Unknown data sources and reward
    names raise."""
    try:
        stage = stage_for_source(data_source)
    except ValueError as exc:
        raise ValueError(f"compute_score: {exc}") from None
    name = reward or stage.rewards[0]
    if name not in stage.rewards:
        raise ValueError(f"unknown {stage.name} reward {name!r}; choose from {', '.join(stage.rewards)}")
    extra = dict(extra_info or {})
    scored = await stage.score(solution_str, ground_truth, extra, reward=name, **kwargs)
    if not scored.parsed:
        log.debug("unparseable %s completion: %r", stage.name, solution_str[:200])
    _count(data_source, scored.parsed)
    _append_log(log_path, {"data_source": data_source, "split": extra.get("split"), "id": scored.id,
                           "reward": name, "score": scored.score, "parsed": scored.parsed, **scored.details})
    return {"score": float(scored.score), "parsed": float(scored.parsed)}
