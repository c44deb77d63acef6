"""The producers' batch without sockets: order, futures, coalescing and failure (hub/client/batch.py)."""

from __future__ import annotations

import asyncio

import pytest

from hub.client.batch import Batch


def _batch(**kw: object) -> Batch:
    opts: dict[str, object] = {
        "max_batch": 4,
        "coalesce_ms": 0.0,
        "coalesce_tokens": 0,
        "on_due": lambda: None,
    }
    opts.update(kw)
    return Batch(**opts)  # type: ignore[arg-type]


async def test_take_cuts_in_order_and_resolves_each_future_at_its_offset() -> None:
    b = _batch()
    f1, f2, f3 = await b.add("a"), await b.add(["b", "c"]), await b.add("d")
    t = b.take()
    assert t.chunks == ["a", "b", "c", "d"] and t.where == [0, 1, 3] and not b
    b.resolve(t, 10)
    assert [f1.result(), f2.result(), f3.result()] == [10, 11, 13] and b.next_offset == 14


async def test_max_batch_splits_a_call_across_requests_and_add_waits_for_room() -> None:
    b = _batch(max_batch=2)
    f1 = await b.add(["a", "b", "c"])  # one call larger than a request: its future rides the first
    waiting = asyncio.ensure_future(b.add("d"))
    await asyncio.sleep(0)
    assert not waiting.done()  # 3 >= max_batch: no room until a take
    t1 = b.take()
    f2 = await asyncio.wait_for(waiting, 1)
    t2 = b.take()
    assert (t1.chunks, t2.chunks) == (["a", "b"], ["c", "d"])
    b.resolve(t1, 0)
    b.resolve(t2, 2)
    assert (f1.result(), f2.result()) == (0, 3)


async def test_coalescing_holds_a_short_batch_until_due_and_joins_tokens() -> None:
    due = asyncio.Event()
    b = _batch(max_batch=100, coalesce_ms=5.0, coalesce_tokens=3, on_due=due.set)
    await b.add("a")
    await b.add("b")
    assert not b.ready()
    await asyncio.wait_for(due.wait(), 1)  # the timer fired
    assert b.ready()
    for t in "cde":
        await b.add(t)
    t = b.take()
    assert t.chunks == ["abc", "de"] and t.where == [0, 0, 0, 1, 1]


async def test_a_failure_fails_every_future_and_every_later_add() -> None:
    b = _batch()
    f1 = await b.add("a")
    t = b.take()
    f2 = await b.add("b")
    err = RuntimeError("refused")
    b.fail(err, t)
    assert f1.exception() is err and f2.exception() is err and not b and not b.ready()
    with pytest.raises(RuntimeError):
        await b.add("c")
    b.resolve(t, 5)  # a late answer changes nothing: each future resolves once
    assert f1.exception() is err
