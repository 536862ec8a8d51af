"""The frozen Answer Agent of the Memory Manager's reward as its own Ray actor group.

The manager stage scores a completion by letting a frozen Answer Agent answer the linked questions
from the edited banks (:func:`memory_r1.rewards.manager.manager_reward`). With
``reward.answerer_server: ray`` (the default) that Answer Agent is not loaded inside verl's reward
workers: it is a group of named Ray actors (``replicas`` of them, ``memr1-answerer-<i>``) in the
training's own Ray cluster, created by the first reward worker that needs one
(``get_if_exists``) and shared by all: one copy of the model per replica, whatever the number of
reward workers, nothing to start by hand. Each replica is an async actor over an
:class:`~memory_r1.rewards.manager.LLMAnswerer`, so concurrent requests from every reward worker
are micro-batched into one ``generate`` call. Resources per replica: ``num_cpus`` logical CPUs
(CPU stack) and ``num_gpus`` (a vLLM answerer on GPU: leave it a GPU outside verl's resource pools).

``reward.answerer_server: worker`` keeps the previous behaviour (the Answer Agent loaded once per
reward worker process); an ``openai:MODEL@URL`` answerer is a server already and never gets actors.
The actors live in the job's Ray namespace: two trainings on one cluster do not share them, and
they end with the job.
"""

from __future__ import annotations

import logging
import os
import threading
import zlib
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

ACTOR_PREFIX = "memr1-answerer"
SERVERS = ("ray", "worker")

_handles: dict[str, Any] = {}
_lock = threading.Lock()
_actor_class = None


def _server_class():
    """The actor class (built on first use: importing this module does not import ray)."""
    global _actor_class
    if _actor_class is None:
        import ray

        @ray.remote
        class AnswererServer:
            """One replica: the frozen Answer Agent of a spec, loaded once in this actor's process."""

            def __init__(self, spec: dict) -> None:
                from memory_r1.threads import configure_threads, worker_threads
                from memory_r1.train.stages.manager import get_answerer

                configure_threads(worker_threads())
                self.answerer = get_answerer(spec)
                self.pid = os.getpid()

            async def answer(self, question: str, memories_a: list, memories_b: list, speakers: tuple) -> str:
                return await self.answerer.answer(question, memories_a, memories_b, speakers=tuple(speakers))

            def info(self) -> dict:
                return {"pid": self.pid, "calls": self.answerer.calls, "batches": self.answerer.batches}

        _actor_class = AnswererServer
    return _actor_class


class RayAnswerer:
    """An :class:`~memory_r1.rewards.manager.Answerer` whose answers come from the actor group:
    requests go to the replica picked by the question (stable, so a question's repeats reuse one
    replica's batches)."""

    def __init__(self, handles: list) -> None:
        self.handles = handles

    async def answer(self, question, memories_a, memories_b, *, speakers=("A", "B")) -> str:
        actor = self.handles[zlib.crc32(question.encode()) % len(self.handles)]
        return await actor.answer.remote(question, list(memories_a), list(memories_b), tuple(speakers))


def in_ray_worker() -> bool:
    """Whether this process is connected to a Ray cluster (verl's reward workers are)."""
    import ray

    return ray.is_initialized()


def actor_answerer(spec: Mapping, *, replicas: int = 1, num_cpus: float = 1, num_gpus: float = 0) -> RayAnswerer:
    """The Answer Agent group of ``spec`` (a parsed answerer spec) in the current Ray cluster:
    each replica ``memr1-answerer-<i>`` is looked up, or created by the first caller (the others
    wait for it to load). Called inside verl's reward workers, which are already connected."""
    import json

    import ray

    key = json.dumps(dict(spec), sort_keys=True)
    with _lock:
        if key not in _handles:
            cls = _server_class()
            handles = [
                cls.options(name=f"{ACTOR_PREFIX}-{i}", get_if_exists=True, num_cpus=num_cpus, num_gpus=num_gpus,
                            max_concurrency=256).remote(dict(spec))
                for i in range(replicas)
            ]
            infos = ray.get([h.info.remote() for h in handles])
            log.info("frozen Answer Agent served by %d Ray actor(s) (pids %s), asked from pid %d",
                     len(handles), [i["pid"] for i in infos], os.getpid())
            _handles[key] = RayAnswerer(handles)
        return _handles[key]


def group_info() -> list[dict]:
    """Calls and batches of each replica of this job's actor group (for run summaries and tests)."""
    import ray

    out = []
    i = 0
    while True:
        try:
            actor = ray.get_actor(f"{ACTOR_PREFIX}-{i}")
        except ValueError:
            return out
        out.append({"name": f"{ACTOR_PREFIX}-{i}", **ray.get(actor.info.remote())})
        i += 1
