"""The reward function verl loads: ``compute_score(data_source, solution_str, ground_truth, extra_info)``.

verl 0.9.1 config (what :func:`memory_r1.train.verl.overrides.recipe_to_overrides` writes)::

    reward.custom_reward_function.path=pkg://memory_r1.train.verl.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs={answer_reward: answer_em, manager_metric: em, ...}

verl merges ``reward_kwargs`` into every call. The function is async (verl awaits it inside its
reward worker, scoring the samples of a batch concurrently) and dispatches on ``data_source``:

- ``memr1/answer``: the Answer Agent reward named by ``answer_reward`` (a key of
  :data:`memory_r1.rewards.REWARDS`: ``answer_em``, the paper's, or ``answer_f1``, the denser one CPU
  recipes name);
- ``memr1/manager``: :func:`memory_r1.rewards.manager.manager_reward` with ``manager_metric``
  (``em`` as in the paper, ``f1`` for CPU recipes) and a frozen Answer Agent.

The frozen Answer Agent is built lazily, **once per reward worker process**, from the first of:
env ``MEMR1_ANSWERER``, ``reward_kwargs.answerer``, the row's ``extra_info.answerer``, the default
``hf:smollm2-135m``. A spec is ``hf:<backbone or path>`` (transformers on this machine: the CPU
recipes use the untrained SmolLM2), ``openai:<model>@<base_url>`` (a vLLM or any OpenAI-compatible
server: the GPU recipes; the URL may come from ``$MEMR1_ANSWERER_BASE_URL``) or a mapping
``{backend, model, base_url, dtype, max_new_tokens, distill}``.

Every call returns ``{"score": float, "parsed": 0.0|1.0}`` (verl logs the extra key per data
source in validation). An unparseable completion gets its stage's defined score (0.0), is logged at
debug level and counted; with ``log_path`` each call also appends one JSON line (data source,
split, row id, score, parsed, ops) that the runner summarises into the run's metrics.

>>> import asyncio
>>> asyncio.run(compute_score("memr1/answer", "Answer: Rex", "rex", answer_reward="answer_em"))
{'score': 1.0, 'parsed': 1.0}
>>> asyncio.run(compute_score("memr1/answer", "Answer: a dog named Rex", "Rex", answer_reward="answer_f1"))
{'score': 0.4, 'parsed': 1.0}
>>> asyncio.run(compute_score("memr1/answer", "no marker", "Rex"))
{'score': 0.0, 'parsed': 0.0}
>>> parse_answerer_spec("openai:Qwen/Qwen2.5-7B-Instruct@http://gpu:8000/v1")["base_url"]
'http://gpu:8000/v1'
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from memory_r1.data.episodes import ANSWER_SOURCE, MANAGER_SOURCE

log = logging.getLogger(__name__)

ANSWERER_ENV = "MEMR1_ANSWERER"
ANSWERER_URL_ENV = "MEMR1_ANSWERER_BASE_URL"
DEFAULT_ANSWERER = "hf:smollm2-135m"

#: calls and unparseable completions scored by this process, per data source
COUNTS: Counter = Counter()
_answerers: dict[str, Any] = {}
_answerers_lock = threading.Lock()
_log_lock = threading.Lock()


def _plain(obj: Any) -> Any:
    """OmegaConf containers (verl passes reward_kwargs as DictConfig) -> plain dict/list."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)) or type(obj).__name__ in ("ListConfig", "ndarray"):
        return [_plain(v) for v in obj]
    return obj


def parse_answerer_spec(spec: str | Mapping | None) -> dict:
    """``hf:NAME`` / ``openai:MODEL@URL`` / a mapping -> ``{backend, model, ...}``."""
    if spec is None or spec == "":
        spec = DEFAULT_ANSWERER
    if isinstance(spec, str) and spec.strip().startswith("{"):
        spec = json.loads(spec)
    if isinstance(spec, Mapping):
        out = _plain(spec)
    else:
        backend, sep, rest = str(spec).partition(":")
        if not sep or backend not in ("hf", "openai", "vllm"):
            raise ValueError(f"answerer spec {spec!r}: expected hf:NAME, vllm:NAME or openai:MODEL@URL")
        out = {"backend": backend}
        if backend == "openai":
            model, _, url = rest.partition("@")
            out.update(model=model, base_url=url or None)
        else:
            out["model"] = rest
    if out.get("backend") not in ("hf", "openai", "vllm") or not out.get("model"):
        raise ValueError(f"answerer spec {spec!r} needs a backend (hf, vllm, openai) and a model")
    if out["backend"] == "openai" and not out.get("base_url"):
        out["base_url"] = os.environ.get(ANSWERER_URL_ENV) or os.environ.get("MEMR1_LLM_BASE_URL")
    return out


def get_answerer(spec: str | Mapping | None):
    """The frozen Answer Agent for a spec, built on first use and kept for the process's lifetime."""
    from memory_r1.llm import build_llm
    from memory_r1.llm.base import SamplingParams
    from memory_r1.recipes import AnswererSpec
    from memory_r1.rewards.manager import LLMAnswerer

    cfg = parse_answerer_spec(spec)
    key = json.dumps(cfg, sort_keys=True)
    with _answerers_lock:
        if key not in _answerers:
            t0 = time.perf_counter()
            s = AnswererSpec.model_validate(cfg)  # its defaults: 48 new tokens, no distillation, hf dtype auto
            llm = build_llm(s.llm, s.model)
            params = SamplingParams(temperature=0.0, max_new_tokens=s.max_new_tokens)
            _answerers[key] = LLMAnswerer(llm, params=params, distill=s.distill)
            log.info("frozen Answer Agent %s loaded in %.1f s (pid %d)", cfg, time.perf_counter() - t0, os.getpid())
        return _answerers[key]


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
    answer_reward: str = "answer_em",
    manager_metric: str = "em",
    answerer: str | Mapping | None = None,
    log_path: str | None = None,
    **kwargs: Any,
) -> dict:
    """Score one completion for verl (see the module docstring). Unknown data sources raise."""
    extra = dict(extra_info or {})
    if data_source == ANSWER_SOURCE:
        from memory_r1.agents.answerer import parse_answer
        from memory_r1.rewards import REWARDS

        if answer_reward not in REWARDS:
            raise ValueError(f"unknown answer reward {answer_reward!r}; choose from {', '.join(REWARDS)}")
        parsed = parse_answer(solution_str).ok
        score = float(REWARDS[answer_reward](solution_str, str(ground_truth)))
        _count(data_source, parsed)
        _append_log(log_path, {"data_source": data_source, "split": extra.get("split"), "id": extra.get("qid"),
                               "reward": answer_reward, "score": score, "parsed": parsed})
        return {"score": score, "parsed": float(parsed)}
    if data_source == MANAGER_SOURCE:
        from memory_r1.rewards.manager import manager_reward

        spec = os.environ.get(ANSWERER_ENV) or (_plain(answerer) if answerer else None) or extra.get("answerer")
        result = await manager_reward(solution_str, extra, get_answerer(spec), metric=manager_metric)
        _count(data_source, result.parsed)
        _append_log(log_path, {"data_source": data_source, "split": extra.get("split"), "id": extra.get("dia_id"),
                               "reward": f"manager_{manager_metric}", "score": result.score,
                               "parsed": result.parsed, "ops": result.ops, "invalid_ids": result.invalid_ids,
                               "answers": result.answers})
        return {"score": float(result.score), "parsed": float(result.parsed)}
    raise ValueError(f"compute_score: unknown data_source {data_source!r} (expected {ANSWER_SOURCE} or {MANAGER_SOURCE})")
