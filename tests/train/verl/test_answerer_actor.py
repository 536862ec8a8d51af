"""The manager reward's frozen Answer Agent as its own Ray actor group (``reward.answerer_server:
ray``): one copy of the model, in its own process, serving every reward worker, answering exactly
what the same Answer Agent loaded in-process answers."""

from __future__ import annotations

import asyncio
import os

import pytest

pytest.importorskip("ray")

from memory_r1.types import MemoryItem  # noqa: E402

QUESTIONS = ["What pet does Caroline have?", "Where did Melanie go in May 2023?"]
_T = "2023-05-08T00:00:00"
MEMS_A = [MemoryItem(id="a1", namespace="conv-x/Caroline", text="Caroline adopted a dog named Rex in 2022",
                     timestamp="1 May 2023", created_at=_T, updated_at=_T)]
MEMS_B = [MemoryItem(id="b1", namespace="conv-x/Melanie", text="Melanie went camping at the lake in May 2023",
                     timestamp="8 May 2023", created_at=_T, updated_at=_T)]
SPEAKERS = ("Caroline", "Melanie")
#: fp32 on every CPU kind: bf16 sums depend on the thread count, which differs between the actor and this process
SPEC = {"backend": "hf", "model": "smollm2-135m", "dtype": "float32"}


def _reward_worker(questions, concurrent=True):
    """What a verl reward worker does: resolve the answerer of the recipe, then answer (all at once,
    or one question at a time so each is generated alone, as ``answer_sync`` does)."""
    from memory_r1.train.stages.manager import resolve_answerer

    frozen = resolve_answerer(SPEC, answerer_server="ray", answerer_replicas=1)

    async def run():
        if concurrent:
            return await asyncio.gather(*[frozen.answer(q, MEMS_A, MEMS_B, speakers=SPEAKERS) for q in questions])
        return [await frozen.answer(q, MEMS_A, MEMS_B, speakers=SPEAKERS) for q in questions]

    return {"pid": os.getpid(), "kind": type(frozen).__name__, "answers": asyncio.run(run())}


@pytest.mark.slow
def test_reward_workers_share_one_answerer_actor():
    import sys

    import ray
    from ray import cloudpickle

    from memory_r1.train.stages.manager import get_answerer, resolve_answerer
    from memory_r1.train.verl.answerer import group_info

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import tests/
    ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="ERROR")
    try:
        task = ray.remote(num_cpus=1)(_reward_worker)
        results = ray.get([task.remote(QUESTIONS), task.remote(QUESTIONS[::-1])])  # two workers at once
        alone = ray.get(task.remote(QUESTIONS, concurrent=False))
        info = group_info()
    finally:
        ray.shutdown()
    assert [r["kind"] for r in results] == ["RayAnswerer", "RayAnswerer"]
    assert len(info) == 1, info  # one replica for both workers: one copy of the model
    actor_pid = info[0]["pid"]
    assert actor_pid not in {r["pid"] for r in results} | {os.getpid()}
    assert info[0]["calls"] == 6 and 3 <= info[0]["batches"] <= 6  # concurrent requests share batches
    # outside Ray the same recipe loads the Answer Agent in this process; its greedy answers are the actor's
    local = resolve_answerer(SPEC, answerer_server="ray")
    assert local is get_answerer(SPEC)
    expected = [local.answer_sync(q, MEMS_A, MEMS_B, speakers=SPEAKERS) for q in QUESTIONS]
    assert alone["answers"] == expected and alone["pid"] != actor_pid
    # batched with other workers' requests the greedy text may differ (padding), but every request is answered
    assert all(isinstance(a, str) and a for r in results for a in r["answers"])
