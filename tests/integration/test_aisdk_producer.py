"""The pipelined ``Producer``: many appends in flight, in order and exactly once across drops."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from hub.client import ClientError, Producer, Subscriber
from tests.integration.conftest import Running


async def test_pipelined_appends_survive_drops_in_order_exactly_once(hub: Running) -> None:
    tokens = [f"t{i} " for i in range(3000)]
    async with Producer(hub.ws_url, "pipe/1", backoff=(0.01, 0.05)) as p:
        futs = []
        for i, t in enumerate(tokens):
            futs.append(await p.append(t))
            if i in (700, 1500, 2400):
                assert p._ws is not None
                await p._ws.close()  # the network drops with frames in flight
            if i % 50 == 0:
                await asyncio.sleep(0)  # let acks in, as a model's pacing would
        await p.flush()
        offsets = [f.result() for f in futs]
    assert p.reconnects >= 3
    assert p.frames_sent < len(tokens)  # tokens waiting for a window slot shared a frame
    assert hub.hub.store.get("pipe/1").read(0, 10_000) == [t.encode() for t in tokens]
    known = [(i, o) for i, o in enumerate(offsets) if o != -1]
    # -1: acked before a drop but the ack was lost; the hub only remembers a producer's last seq
    assert known and all(i == o for i, o in known) and offsets[-1] == len(tokens) - 1
    sub = Subscriber(hub.ws_url, "pipe/1")
    assert await sub.text() == "".join(tokens) and sub.status == "done"


async def test_coalescing_by_tokens_and_by_time(hub: Running) -> None:
    async with Producer(hub.ws_url, "pipe/n", coalesce_tokens=10, coalesce_ms=10_000) as p:
        for i in range(95):
            await p.append(f"{i},")
    stored = [c.decode() for c in hub.hub.store.get("pipe/n").read(0, 100)]
    assert "".join(stored) == "".join(f"{i}," for i in range(95))
    assert len(stored) == 10 and all(c.count(",") == 10 for c in stored[:9])  # the last 5 by the close

    async with Producer(hub.ws_url, "pipe/ms", coalesce_ms=30) as p:
        first = await p.append("a")
        await p.append("b")
        assert await asyncio.wait_for(first, 5) == 0  # flushed by the timer, no flush() or close
        assert hub.hub.store.get("pipe/ms").read(0, 10) == [b"ab"]
        await asyncio.wait_for(await p.append("c"), 5)
    assert hub.hub.store.get("pipe/ms").read(0, 10) == [b"ab", b"c"]


async def test_a_refused_append_fails_its_future_and_the_next_append(hub: Running) -> None:
    with pytest.raises(ClientError):  # leaving the block says so too: not every append landed
        async with Producer(hub.ws_url, "pipe/x") as p:
            await (await p.append("kept"))
            async with aiohttp.ClientSession() as s, s.post(f"{hub.http}/streams/pipe/x/close") as r:
                assert r.status == 200
            refused = await p.append("late")
            with pytest.raises(ClientError) as e:
                await refused
            assert e.value.code == "stream_closed"
            with pytest.raises(ClientError):
                await p.append("later")
    assert hub.hub.store.get("pipe/x").read(0, 10) == [b"kept"]


def test_window_is_bounded_by_the_hubs_producer_window() -> None:
    with pytest.raises(ValueError):
        Producer("ws://127.0.0.1:1/ws", "s", window=6)
