"""Micro-batching: concurrent requests to one model joined into one model call, off the event loop.

What this module chose, and why:

* **One queue and one worker thread per model.** Requests are put on an ``asyncio.Queue``; a
  collector task takes the first one, then gathers more until ``max_batch_size`` are in hand or
  ``max_wait_s`` has passed since the first arrived, and runs ``run_batch(items)`` on a
  single-thread executor. One thread, because a model is not safe to call from two threads at once
  and a CPU gains nothing from two generate calls competing for the same cores. While a batch runs,
  the next one forms in the queue, so under load batches fill up without waiting at all.
* **A failing item fails only its own request.** ``run_batch`` may return an ``Exception`` in an
  item's place; if it raises instead, every item of the batch is run again alone, so the one at
  fault gets the exception and the others their answers.
* **Bounded**: the queue holds at most ``max_queue`` requests; beyond that :class:`Overloaded`
  (HTTP 503) is raised at once instead of letting latency grow without limit.
* ``max_batch_size=1, max_wait_s=0`` is the unbatched server (``--no-batching``), with the same
  queue and thread, so the benchmark compares batching and nothing else.

Hand-written: no library batches asyncio requests into calls of a synchronous model (Ray Serve's
``@serve.batch`` does it inside Ray); this is the small part of it we need.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from reczero.serve.errors import Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """``await batcher.submit(item) -> result``, items batched into ``run_batch(list) -> list``."""

    def __init__(self, run_batch: Callable[[list[T]], list[R | Exception]], *, name: str, max_batch_size: int = 32,
                 max_wait_s: float = 0.01, max_queue: int | None = None,
                 on_batch: Callable[[int, float], None] | None = None) -> None:
        if max_batch_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_wait_s >= 0, got {max_batch_size}, {max_wait_s}")
        self.run_batch, self.name = run_batch, name
        self.max_batch_size, self.max_wait_s = max_batch_size, max_wait_s
        self.max_queue = max_queue or 64 * max_batch_size
        self.on_batch = on_batch                       # (batch size, seconds in run_batch), for metrics
        self._queue: asyncio.Queue[tuple[T, asyncio.Future]] | None = None
        self._collector: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{self.name}")
        self._collector = asyncio.create_task(self._collect(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._collector is not None:
            self._collector.cancel()
            try:
                await self._collector
            except asyncio.CancelledError:
                pass
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.set_exception(Overloaded("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"model {self.name!r} has {self.max_queue} requests waiting; try again shortly")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        return await future

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(item, future) for item, future in batch if not future.done()]   # callers that gave up
            if batch:
                try:
                    await self._run(batch)
                except Exception:       # never let the collector die: log, and fail this batch only
                    log.exception("batcher %s: a batch of %d failed outside the model call", self.name, len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(RuntimeError("internal error while batching"))

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self._call(items)
        except Exception as err:
            if len(batch) == 1:
                results = [err]
            else:   # find the item at fault: each alone, so that only its own request fails
                log.warning("batcher %s: a batch of %d raised %s; running its items one by one",
                            self.name, len(batch), type(err).__name__)
                results = []
                for item in items:
                    try:
                        results.extend(await self._call([item]))
                    except Exception as alone:
                        results.append(alone)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _call(self, items: list[T]) -> list[Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await loop.run_in_executor(self._executor, self.run_batch, items)
        if len(results) != len(items):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
        if self.on_batch is not None:
            self.on_batch(len(items), loop.time() - started)
        return results
