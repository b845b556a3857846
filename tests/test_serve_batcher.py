"""The micro-batcher alone: bounded batches, per-item failures, a bounded queue, input order."""

from __future__ import annotations

import asyncio
import threading

import pytest

from reczero.serve.batcher import MicroBatcher
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
