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


async def test_redis_losing_acknowledged_chunks_reaches_a_live_subscriber_as_reset(
    start_hub, connect, tmp_path: Path
):
    """AOF everysec, redis-server killed and its AOF's unsynced tail cut: a WebSocket subscriber on
    hub B, live when it happened, gets ``reset`` with the new epoch (never ``stream_gone``, never a
    silent gap), then the stream again from offset 0, exactly as Redis now holds it."""
    with RedisServer(tmp_path / "redis-reset", appendfsync="everysec") as srv:
        a = await start_hub(store=srv.url)
        b = await start_hub(store=srv.url)
        prod = await connect(a.ws_url)
        await prod.send(op="create", stream="r", id="c")
        await prod.recv_op("ack")
        sub = await connect(b.ws_url)
        await sub.send(op="subscribe", stream="r", **{"from": 0})
        epoch0 = (await sub.recv_op("subscribed"))["epoch"]
        toks = tokens(300, seed=5)
        for i, t in enumerate(toks):
            await prod.send(op="append", stream="r", data=t, id=i, producer="p", seq=i)
        for _ in toks:
            assert (await prod.recv_op("ack"))["op"] == "ack"
        live: list[str] = []
        while len(live) < len(toks):
            f = await sub.recv()
            assert f["op"] == "chunks" and f["offset"] == len(live), f
            live += f["data"]
        assert live == toks

        srv.kill()
        (aof,) = (srv.dir / "appendonlydir").glob("*.incr.aof")
        size = aof.stat().st_size
        with aof.open("r+b") as fh:
            fh.truncate(size - 3000)  # what everysec had not fsynced: the last appends are gone
        await asyncio.to_thread(srv.start)

        async with asyncio.timeout(30):  # hub B resubscribes, reloads the stream: its epoch is renewed
            f = await sub.recv(timeout=30)
        assert f["op"] == "reset" and f["stream"] == "r" and f["epoch"] != epoch0, f
        await prod.send(op="close", stream="r", status="done", id="close")  # A reconnects by itself
        assert (await prod.recv_op("ack", timeout=30))["id"] == "close"
        again, end = await sub.collect("r", timeout=30)
        kept = [d for _, d in again]
        assert again[0][0] == 0 and end["status"] == "done"
        assert 0 < len(kept) < len(toks) and kept == toks[: len(kept)]  # a prefix: the tail was lost
        s = await b.hub.get("r")
        assert s.epoch == f["epoch"] and s.next_offset == len(kept)
