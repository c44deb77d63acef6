"""Two real hubs side by side on one real redis-server (``--store redis://...``): a producer on hub
A, WebSocket subscribers on hub B get every chunk live, in order, once; a Stop on hub B reaches the
producer connected to A (the cancel travels through Redis pub/sub)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.redisproc import RedisServer

from .conftest import wait_for
from .test_hub_ws import produce, tokens

_dbs = itertools.count(1)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis-hubs"), appendfsync="everysec") as server:
        yield server


@pytest.fixture
def store(redis_server: RedisServer) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{next(_dbs) % 16}"  # a fresh db per test


async def test_subscriber_on_b_gets_producer_on_a_live_in_order_once(
    start_hub, connect, store, tmp_path: Path
):
    a = await start_hub(store=store)
    b = await start_hub(store=store)
    prod = await connect(a.ws_url)
    await prod.send(op="create", stream="x", id="c")
    await prod.recv_op("ack")
    subs = [await connect(b.ws_url) for _ in range(3)] + [await connect(a.ws_url)]
    for ws in subs:
        await ws.send(op="subscribe", stream="x", **{"from": 0})
        await ws.recv_op("subscribed")
    toks = tokens(400, seed=3)
    results = await asyncio.gather(*(ws.collect("x", timeout=60) for ws in subs), produce(prod, "x", toks))
    for got, end in results[:-1]:  # collect() already asserts no gap and no duplicate
        assert [d for _, d in got] == toks and end["status"] == "done"
    assert b.hub.store.stats()["engine"] == "redis"


async def test_stop_on_b_reaches_the_producer_on_a(start_hub, connect, store):
    a = await start_hub(store=store)
    b = await start_hub(store=store)
    prod = await connect(a.ws_url)
    await prod.send(op="create", stream="c", id=0)
    await prod.recv_op("ack")
    reader = await connect(b.ws_url)
    await reader.send(op="subscribe", stream="c")
    await reader.recv_op("subscribed")
    await reader.send(op="cancel", stream="c")
    f = await prod.recv_op("cancel", timeout=15)
    assert f == {"op": "cancel", "stream": "c"}
    await prod.send(op="append", stream="c", data="x", id=1)
    assert (await prod.recv_op("ack"))["cancelled"] is True  # hub A knows it too
    await prod.send(op="close", stream="c", status="cancelled", id=2)
    await prod.recv_op("ack")
    got, end = await reader.collect("c")
    assert got == [(0, "x")] and end["status"] == "cancelled"
    await wait_for(lambda: "c" not in b.hub.cancel_requested, what="hub B forgets the cancel at the end")
