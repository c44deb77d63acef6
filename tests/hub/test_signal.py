"""hub.core.signal.Signal: the Event replacement every idle connection's outbox and subscription holds."""

from __future__ import annotations

import asyncio

from hub.core.signal import Signal


async def test_set_wakes_every_waiter_and_later_waits_return_at_once() -> None:
    sig = Signal()
    waiters = [asyncio.create_task(sig.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    sig.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True] * 3
    assert sig.is_set() and await asyncio.wait_for(sig.wait(), 5)
    sig.clear()
    assert not sig.is_set()


async def test_a_cancelled_waiter_leaves_the_others_waiting() -> None:
    sig = Signal()
    a, b = asyncio.create_task(sig.wait()), asyncio.create_task(sig.wait())
    await asyncio.sleep(0)
    a.cancel()
    await asyncio.gather(a, return_exceptions=True)
    assert a.cancelled() and not b.done()
    sig.set()
    assert await asyncio.wait_for(b, 5)
    assert sig._waiters is None  # nothing kept once nobody waits


async def test_a_waiter_from_before_clear_is_woken_by_the_next_set() -> None:
    sig = Signal()
    w = asyncio.create_task(sig.wait())
    await asyncio.sleep(0)
    sig.clear()
    await asyncio.sleep(0)
    assert not w.done()
    sig.set()
    assert await asyncio.wait_for(w, 5)
