"""The micro-batcher alone: bounded batches, the adaptive wait, per-item failures, a bounded queue, input order."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from reczero.serve import batcher as batcher_module
from reczero.serve.batcher import CONCURRENCY_WINDOW, MicroBatcher
from reczero.serve.errors import Overloaded


def run(coro):
    return asyncio.run(coro)


def test_concurrent_items_are_batched_up_to_the_bound_and_answered_in_place():
    sizes: list[int] = []

    def double(items):
        return [2 * x for x in items]

    async def main():
        batcher = MicroBatcher(double, name="t", max_batch_size=4, max_wait_s=0.2,
                               on_batch=lambda n, s: sizes.append(n))
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.stop()

    assert run(main()) == [2 * i for i in range(10)]
    assert sum(sizes) == 10 and max(sizes) == 4 and len(sizes) == 3


class SlowModel:
    """A fake generate call: takes ``seconds`` whatever the batch size (as a tiny model's decode steps
    do), records each batch; its first call waits for ``gate`` when one is given."""

    def __init__(self, seconds: float, gate: threading.Event | None = None) -> None:
        self.seconds, self.gate, self.sizes = seconds, gate, []
        self.first_call = threading.Event()

    def __call__(self, items):
        self.first_call.set()
        if self.gate is not None:
            self.gate.wait(30)
            self.gate = None
        time.sleep(self.seconds)
        self.sizes.append(len(items))
        return list(items)


def closed_loop(batcher: MicroBatcher, requests: list[int], callers: int, done: list[int]):
    """``callers`` clients, each sending its next request as soon as its last is answered, until the
    shared list is used up (as bench/serve.py's clients do)."""
    async def caller():
        while requests:
            item = requests.pop(0)
            done.append(await batcher.submit(item))
    return [asyncio.create_task(caller()) for _ in range(callers)]


@pytest.fixture
def no_time_bound(monkeypatch):
    """Only max_wait_s bounds the wait (not a fraction of the model call), so that batch sizes depend
    on the count rule alone, not on how fast a loaded machine schedules the callers."""
    monkeypatch.setattr(batcher_module, "WAIT_FRACTION", 1e6)


def test_a_caller_served_alone_is_waited_for_so_closed_loop_callers_are_not_split_into_a_convoy(no_time_bound):
    # The convoy of bench/RESULTS.md "Serving": one caller is served alone while the 7 others queue;
    # it comes back while their batch runs. A short fixed window (or none) serves it alone again,
    # every cycle; the adaptive wait expects 8 (the peak concurrency) and holds the batch until it is
    # back. The wait (5 s) is far longer than the callers ever take.
    gate = threading.Event()
    model = SlowModel(0.02, gate)
    done: list[int] = []

    async def main():
        batcher = MicroBatcher(model, name="t", max_batch_size=32, max_wait_s=5.0)
        await batcher.start()
        try:
            requests = list(range(1 + 8 * 4))
            first = closed_loop(batcher, requests, 1, done)
            while not model.first_call.is_set():                # the lone caller's request is in the model call
                await asyncio.sleep(0.005)
            others = closed_loop(batcher, requests, 7, done)
            while batcher.expected < 8:                         # the 7 others are queued behind it
                await asyncio.sleep(0.005)
            gate.set()
            await asyncio.wait_for(asyncio.gather(*first, *others), 60)
        finally:
            gate.set()
            await batcher.stop()

    run(main())
    assert sorted(done) == list(range(33))
    assert model.sizes == [1, 8, 8, 8, 8]


def test_a_lone_caller_never_waits_for_others_that_are_not_there():
    # One request in flight at a time: the expected batch is 1, so no request waits max_wait_s (the
    # fixed window made each pay it). Bound by ratio: 5 requests in under half of one max_wait_s;
    # paying the wait would take 10 times that.
    model = SlowModel(0.0)

    async def main():
        batcher = MicroBatcher(model, name="t", max_batch_size=32, max_wait_s=4.0)
        await batcher.start()
        try:
            async def lone():
                return [await batcher.submit(i) for i in range(5)]
            return await asyncio.wait_for(lone(), batcher.max_wait_s / 2)
        finally:
            await batcher.stop()

    assert run(main()) == list(range(5))
    assert model.sizes == [1] * 5


def test_after_a_burst_the_expectation_decays_within_the_window(no_time_bound):
    # 8 concurrent callers, then one alone: its first requests may still wait for the 8 (at most
    # CONCURRENCY_WINDOW + 1 of them), the rest go at once. Bound by ratio: 20 lone requests in well
    # under the time that 20 full waits would take.
    model = SlowModel(0.0)
    wait = 0.5

    async def main():
        batcher = MicroBatcher(model, name="t", max_batch_size=32, max_wait_s=wait)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(i) for i in range(8)))
            assert batcher.expected == 8
            started = asyncio.get_running_loop().time()
            for i in range(20):
                await batcher.submit(i)
            return asyncio.get_running_loop().time() - started, batcher.expected
        finally:
            await batcher.stop()

    elapsed, expected = run(main())
    assert model.sizes == [8] + [1] * 20 and expected == 1
    assert elapsed < (CONCURRENCY_WINDOW + 1 + 20) / 2 * wait          # ~4 waits paid, not 20


def test_a_wait_for_requests_that_do_not_come_is_bounded_by_a_fraction_of_the_model_call():
    # After a burst of 4, a lone request expects 3 more that never come: it waits a quarter of the
    # last model call (0.4 s -> 0.1 s), not max_wait_s (20 s). Bound by ratio: answered in under a
    # quarter of max_wait_s.
    model = SlowModel(0.4)

    async def main():
        batcher = MicroBatcher(model, name="t", max_batch_size=32, max_wait_s=20.0)
        await batcher.start()
        try:
            await asyncio.gather(*(batcher.submit(i) for i in range(4)))
            assert batcher.expected == 4 and batcher.wait_s < batcher.max_wait_s
            return await asyncio.wait_for(batcher.submit("lone"), batcher.max_wait_s / 4)
        finally:
            await batcher.stop()

    assert run(main()) == "lone"
    assert model.sizes == [4, 1]


def test_no_batching_means_one_request_per_call_and_no_wait():
    model = SlowModel(0.0)

    async def main():
        batcher = MicroBatcher(model, name="t", max_batch_size=1, max_wait_s=0.0)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(6)))
        finally:
            await batcher.stop()

    assert run(main()) == list(range(6)) and model.sizes == [1] * 6


def test_a_raising_batch_is_retried_item_by_item_so_only_the_bad_item_fails():
    calls: list[list[int]] = []

    def fragile(items):
        calls.append(list(items))
        if 13 in items:
            raise ValueError("13 is bad")
        return [x + 1 for x in items]

    async def main():
        batcher = MicroBatcher(fragile, name="t", max_batch_size=8, max_wait_s=0.2)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in (1, 13, 2)), return_exceptions=True)
        finally:
            await batcher.stop()

    one, bad, two = run(main())
    assert (one, two) == (2, 3)
    assert isinstance(bad, ValueError) and "13 is bad" in str(bad)
    assert calls[0] == [1, 13, 2] and sorted(calls[1:]) == [[1], [2], [13]]


def test_per_item_exceptions_returned_by_the_batch_fail_only_their_item():
    def picky(items):
        return [KeyError(x) if x < 0 else x for x in items]

    async def main():
        batcher = MicroBatcher(picky, name="t", max_batch_size=8, max_wait_s=0.1)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in (5, -1, 6)), return_exceptions=True)
        finally:
            await batcher.stop()

    five, bad, six = run(main())
    assert (five, six) == (5, 6) and isinstance(bad, KeyError)


def test_a_full_queue_is_refused_at_once_and_the_batcher_recovers():
    gate = threading.Event()

    def slow(items):
        gate.wait(30)
        return items

    async def main():
        batcher = MicroBatcher(slow, name="t", max_batch_size=1, max_wait_s=0.0, max_queue=2)
        await batcher.start()
        try:
            first = asyncio.create_task(batcher.submit("running"))
            await asyncio.sleep(0.2)                      # taken off the queue, blocked in the model call
            queued = [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(2)]
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded, match="2 requests waiting"):
                await batcher.submit("one too many")
            gate.set()
            return await asyncio.gather(first, *queued)
        finally:
            gate.set()
            await batcher.stop()

    assert run(main()) == ["running", "q0", "q1"]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(lambda x: x, name="t", max_batch_size=0)
