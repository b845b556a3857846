"""Micro-batching: concurrent requests to one model joined into one model call, off the event loop.

What this module chose, and why:

* **One queue and one worker thread per model.** Requests are put on an ``asyncio.Queue``; a
  collector task takes the first one, gathers more (the wait below), and runs ``run_batch(items)``
  on a single-thread executor. One thread, because a model is not safe to call from two threads at
  once and a CPU gains nothing from two generate calls competing for the same cores. While a batch
  runs, the next one forms in the queue.
* **An adaptive wait: for as many requests as are expected, never for nothing, never long.** The
  number expected is the recent *concurrency*: the most requests outstanding (queued or in the model
  call) at any moment of the last :data:`CONCURRENCY_WINDOW` batch cycles and of the current one,
  capped at ``max_batch_size``. Once the worker is free and a first request is in hand, the
  collector takes what is queued and, while it holds fewer than expected, waits for more, stopping
  as soon as the expected number has arrived, or after :data:`WAIT_FRACTION` (a quarter) of the last
  model call's duration, or ``max_wait_s``, whichever comes first.

  Why: with a fixed 10 ms window (the first version), 32 closed-loop clients formed a convoy: a
  client served alone sends its next request while the big batch runs, finds the worker free when
  it ends and is served alone again before the 31 others are back; a lone request costs a generate
  call about as much as a full batch, so 4-5 of 11 model calls served 1-2 requests and the gain
  fell from ~4x to 2.6-3.3x (bench/RESULTS.md, "Serving"). Waiting for the others breaks the convoy.
  Waiting only for requests that recent concurrency says are coming costs a lone client nothing:
  with one request outstanding at a time the expected number is 1 and its batch runs at once (the
  fixed window made it pay the window every time). The concurrency is the recent *peak* because in
  a closed loop nothing is outstanding at the instant a batch is answered, and *recent* (a few
  cycles) so that when load drops the batcher waits in vain for only that many cycles. The time
  bound follows the model, not a guess about the machine: the expected count alone with a 100 ms
  bound still convoyed on the loaded 2-core machine (the 31 answers go out and come back in more
  than 100 ms there), while a quarter of a model call is the most a wait can cost relative to the
  call it saves (a batch of stragglers costs a whole one): seconds-long CPU calls wait up to a
  second, a GPU's 20 ms calls 5 ms. ``max_wait_s`` (default 1 s, ``--max-wait-ms``) is the hard
  bound on top. The costs: after a burst ends, up to :data:`CONCURRENCY_WINDOW` + 1 batches wait
  the full bound; under open-loop traffic (callers whose answered requests do not come back) a
  batch that does not fill waits it, as every unfilled batch did with the fixed window. Counted,
  not predicted from arrival rates: no model of the traffic to get wrong.
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
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from reczero.serve.errors import Overloaded

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

CONCURRENCY_WINDOW = 3
"""Completed batch cycles (dispatch to dispatch) whose peak concurrency the wait still expects."""

WAIT_FRACTION = 0.25
"""A batch waits at most this fraction of the last model call's duration (and ``max_wait_s``)."""


class MicroBatcher(Generic[T, R]):
    """``await batcher.submit(item) -> result``, items batched into ``run_batch(list) -> list``."""

    def __init__(self, run_batch: Callable[[list[T]], list[R | Exception]], *, name: str, max_batch_size: int = 32,
                 max_wait_s: float = 1.0, max_queue: int | None = None,
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
        self._outstanding: set[asyncio.Future] = set()  # submitted, not yet answered (queued or running)
        self._peak = 0                                 # most outstanding at once in the current cycle
        self._recent_peaks: deque[int] = deque(maxlen=CONCURRENCY_WINDOW)
        self._last_call_s: float | None = None         # duration of the last model call

    @property
    def wait_s(self) -> float:
        """Longest the next batch may wait for expected requests: ``max_wait_s``, at most
        ``WAIT_FRACTION`` of the last model call."""
        if self._last_call_s is None:
            return self.max_wait_s
        return min(self.max_wait_s, WAIT_FRACTION * self._last_call_s)

    @property
    def expected(self) -> int:
        """How many requests a batch waits for: the recent peak concurrency, at most ``max_batch_size``."""
        return min(self.max_batch_size, max(1, self._peak, *self._recent_peaks))

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
                self._answer(future, Overloaded("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, item: T) -> R:
        if self._queue is None:
            raise RuntimeError(f"batcher {self.name} is not started")
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"model {self.name!r} has {self.max_queue} requests waiting; try again shortly")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((item, future))
        self._outstanding.add(future)
        self._peak = max(self._peak, len(self._outstanding))
        try:
            return await future
        finally:
            self._outstanding.discard(future)          # a caller that gave up (its future cancelled)

    async def _collect(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.wait_s          # from when the worker is free and a request is in hand
            while len(batch) < self.max_batch_size:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                if len(batch) >= self.expected:             # all the recent concurrency is here: go
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            batch = [(item, future) for item, future in batch if not future.done()]   # callers that gave up
            self._recent_peaks.append(self._peak)         # a new cycle: its peak starts at what is outstanding now
            self._peak = len(self._outstanding)
            if batch:
                try:
                    await self._run(batch)
                except Exception:       # never let the collector die: log, and fail this batch only
                    log.exception("batcher %s: a batch of %d failed outside the model call", self.name, len(batch))
                    for _, future in batch:
                        self._answer(future, RuntimeError("internal error while batching"))

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
            self._answer(future, result)

    def _answer(self, future: asyncio.Future, result: Any) -> None:
        """Resolve a caller's future and stop counting it as outstanding (now, not when its caller resumes)."""
        self._outstanding.discard(future)
        if future.done():
            return
        if isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)

    async def _call(self, items: list[T]) -> list[Any]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = await loop.run_in_executor(self._executor, self.run_batch, items)
        self._last_call_s = loop.time() - started
        if len(results) != len(items):
            raise RuntimeError(f"run_batch returned {len(results)} results for {len(items)} items")
        if self.on_batch is not None:
            self.on_batch(len(items), self._last_call_s)
        return results
