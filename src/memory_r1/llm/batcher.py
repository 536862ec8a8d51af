"""Micro-batching of concurrent async requests into one blocking call in a worker thread.

Two places receive many concurrent requests that a model serves best as one batch: the frozen
Answer Agent of the manager reward (verl scores every sample of a step concurrently,
:class:`memory_r1.rewards.manager.LLMAnswerer`) and the CPU rollout server of verl (one request per
sample, :class:`memory_r1.train.verl.cpu.rollout_server.HFRolloutServer`). Both submit to an
:class:`AsyncBatcher`: the first request wakes a batching task on the running event loop, which
waits for the burst to arrive (until no new request came for ``idle_s``, at most ``max_wait_s``, or
``max_batch`` are queued), takes up to ``max_batch`` requests with the key of the oldest one, runs
``run(batch)`` in a worker thread (one batch at a time, so the loop keeps accepting requests
meanwhile) and resolves each request with its result. A failing batch fails its requests with the
error and the batcher keeps serving.

>>> import asyncio
>>> calls = []
>>> def double(xs):
...     calls.append(len(xs))
...     return [2 * x for x in xs]
>>> batcher = AsyncBatcher(double, max_batch=8, idle_s=0.01)
>>> async def main():
...     return await asyncio.gather(*[batcher.submit(i) for i in range(5)])
>>> asyncio.run(main()), calls
([0, 2, 4, 6, 8], [5])
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, Optional, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class AsyncBatcher(Generic[T, R]):
    """``await submit(item)`` -> the result of ``run([..., item, ...])`` for that item.

    ``run``: blocking, a list of items -> a list of results in the same order (called in a worker
    thread). ``key``: items with another key than the batch's oldest item wait for a later batch
    (e.g. other sampling parameters). ``name``: for the log line of a failed batch."""

    def __init__(
        self,
        run: Callable[[list[T]], Sequence[R]],
        *,
        max_batch: int = 32,
        idle_s: float = 0.05,
        max_wait_s: float = 1.0,
        key: Optional[Callable[[T], Hashable]] = None,
        name: str = "batch",
    ) -> None:
        self.run = run
        self.max_batch = max(1, int(max_batch))
        self.idle_s = idle_s
        self.max_wait_s = max_wait_s
        self.key = key or (lambda _: None)
        self.name = name
        self.inflight = 0  # submitted and not yet answered
        self._queue: list[tuple[T, asyncio.Future]] = []
        self._event: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._loop is not loop:  # first request, or a new loop
            self._loop, self._event = loop, asyncio.Event()
            self._task = loop.create_task(self._batch_loop())
        fut: asyncio.Future = loop.create_future()
        self._queue.append((item, fut))
        self.inflight += 1
        assert self._event is not None
        self._event.set()
        try:
            return await fut
        finally:
            self.inflight -= 1

    async def drain(self, poll_s: float = 0.01) -> None:
        """Return once every submitted request is answered."""
        while self.inflight:
            await asyncio.sleep(poll_s)

    async def _batch_loop(self) -> None:
        assert self._event is not None
        while True:
            if not self._queue:
                self._event.clear()
                await self._event.wait()
                continue
            # let a burst of requests arrive before batching
            waited, seen = 0.0, len(self._queue)
            while waited < self.max_wait_s and len(self._queue) < self.max_batch:
                await asyncio.sleep(self.idle_s)
                waited += self.idle_s
                if len(self._queue) == seen:
                    break
                seen = len(self._queue)
            first = self.key(self._queue[0][0])
            batch = [entry for entry in self._queue if self.key(entry[0]) == first][: self.max_batch]
            taken = {id(fut) for _, fut in batch}
            self._queue = [entry for entry in self._queue if id(entry[1]) not in taken]
            try:
                results = await asyncio.to_thread(self.run, [item for item, _ in batch])
            except Exception as exc:  # fail the requests with the real error, keep serving
                log.exception("%s of %d failed", self.name, len(batch))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)

