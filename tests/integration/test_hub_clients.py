"""Slow consumers, the Python client (producer + subscriber with reconnects), auth, shutdown."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from bench.load import never_reader
from hub.client import ClientError, Producer, Subscriber
from hub.core.outbox import Outbox

from .conftest import wait_for


async def test_slow_consumer_does_not_delay_fast_one_and_memory_stays_bounded(start_hub, connect):
    hub = await start_hub(outbox_bytes=64 << 10)
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="slow", id=0)
    await prod.recv_op("ack")
    port = hub.server.port
    slow = [never_reader(port, "slow", start="0") for _ in range(3)]
    await wait_for(lambda: hub.hub.fanout.count("slow") == 3, what="slow subscribers")
    fast = await connect(hub.ws_url)
    await fast.send(op="subscribe", stream="slow")
    await fast.recv_op("subscribed")
    chunk = "x" * 2000
    n = 1500  # 3 MB: far more than the slow sockets' buffers and outboxes can hold
    lat: list[float] = []
    for i in range(0, n, 50):
        t0 = time.perf_counter()
        await prod.send(op="append", stream="slow", data=[chunk] * 50, id=i)
        await prod.recv_op("ack")
        got = 0
        while got < 50:
            f = await fast.recv_op("chunks")
            got += len(f["data"])
        lat.append(time.perf_counter() - t0)
    outboxes = [c.outbox for c in hub.hub.connections]  # type: ignore[attr-defined]
    assert all(isinstance(o, Outbox) and o.bytes <= 2 * o.max_bytes for o in outboxes)
    assert hub.hub.fanout.stats.slow_drops >= 3
    # the fast reader kept pace: every batch arrived, none waited on the stalled sockets
    assert max(lat) < 5.0
    for s in slow:
        s.close()


async def test_python_producer_and_subscriber_survive_disconnects(hub):
    text = [f"tok{i} " for i in range(400)]
    got: list[str] = []
    sub = Subscriber(hub.ws_url, "py/1", backoff=(0.01, 0.1))

    async def consume() -> None:
        async for c in sub:
            got.append(c.data)
            if len(got) in (50, 170, 333):
                await sub.disconnect()

    async with Producer(hub.ws_url, "py/1", backoff=(0.01, 0.1)) as p:
        consuming = asyncio.create_task(consume())
        for i, t in enumerate(text):
            assert await (await p.append(t)) == i
            if i in (100, 250):
                await p._ws.close()  # type: ignore[union-attr]  # the network drops under the producer
    await asyncio.wait_for(consuming, 20)
    assert got == text
    assert sub.status == "done" and sub.connects >= 4
    assert p.reconnects >= 2
    assert hub.hub.store.get("py/1").read(0, 1000) == [t.encode() for t in text]


async def test_producer_cancel_flag_and_callback(hub):
    called = asyncio.Event()

    async def on_cancel() -> None:
        called.set()

    async with Producer(hub.ws_url, "py/c", on_cancel=on_cancel) as p:
        await p.append("a")
        async with aiohttp.ClientSession() as s, s.post(f"{hub.http}/streams/py/c/cancel") as r:
            assert r.status == 202 and (await r.json())["producer_notified"] is True
        await asyncio.wait_for(called.wait(), 5)
        assert p.cancelled
    sub = Subscriber(hub.ws_url, "py/c")
    assert await sub.text() == "a" and sub.status == "cancelled"


async def test_producer_error_in_block_closes_stream_with_error(hub):
    with pytest.raises(RuntimeError):
        async with Producer(hub.ws_url, "py/e") as p:
            await p.append("partial")
            raise RuntimeError("model crashed")
    sub = Subscriber(hub.ws_url, "py/e")
    assert await sub.text() == "partial"
    assert sub.status == "error" and "model crashed" in (sub.error or "")


async def test_auth_tokens_grant_read_and_write_per_prefix(start_hub, session):
    hub = await start_hub(jwt_secret="k" * 32)
    auth = hub.hub.auth
    writer = auth.mint(read=["chat/1/*"], write=["chat/1/*"])
    reader = auth.mint(read=["chat/1/*"])
    other = auth.mint(read=["chat/2/*"], write=["chat/2/*"])
    expired = auth.mint(read=["*"], write=["*"], ttl=-10)

    def h(tok: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {tok}"} if tok else {}

    async with session.put(f"{hub.http}/streams/chat/1/a", headers=h(writer)) as r:
        assert r.status == 201
    for tok, status in [
        (None, 401),
        (expired, 401),
        ("garbage", 401),
        (reader, 403),
        (other, 403),
        (writer, 200),
    ]:
        async with session.post(f"{hub.http}/streams/chat/1/a", json={"data": "x"}, headers=h(tok)) as r:
            assert r.status == status, (tok, await r.text())
    async with session.get(f"{hub.http}/streams/chat/1/a", headers=h(reader)) as r:
        assert r.status == 200 and (await r.json())["chunks"] == ["x"]
    with pytest.raises(ClientError) as e:
        await Subscriber(hub.ws_url, "chat/1/a", token=other).text()
    assert e.value.code == "forbidden"
    with pytest.raises(ClientError) as e:
        await Subscriber(hub.ws_url, "chat/1/a", token="bad").text()
    assert e.value.code in ("unauthorized",)


async def test_websocket_origin_is_checked(start_hub, session):
    hub = await start_hub(allowed_origins=["https://app.example"])
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await session.ws_connect(hub.ws_url, headers={"Origin": "https://evil.example"})
    assert e.value.status == 403
    ws = await session.ws_connect(hub.ws_url, headers={"Origin": "https://app.example"})
    await ws.close()


async def test_graceful_shutdown_sends_going_away_and_keeps_data(start_hub, tmp_path):
    data = tmp_path / "keep"
    hub = await start_hub(data_dir=data)
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(hub.ws_url)
        await ws.send_json({"op": "append", "stream": "g", "data": ["a", "b"], "id": 1, "create": True})
        assert (await ws.receive_json(timeout=5))["op"] == "ack"
        closing = asyncio.create_task(hub.server.close())
        msg = await ws.receive(timeout=10)
        assert msg.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1001
        await closing
    again = await start_hub(data_dir=data)
    assert again.hub.store.get("g").read(0) == [b"a", b"b"]


async def test_unused_sockets_are_cleaned(hub):
    # a client that connects and vanishes without a close frame is dropped by the heartbeat/reader
    r, w = await asyncio.open_connection(hub.server.host, hub.server.port)
    w.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await r.readuntil(b"\r\n\r\n")
    await wait_for(lambda: len(hub.hub.connections) == 1, what="connection registered")
    w.transport.abort()
    await wait_for(lambda: len(hub.hub.connections) == 0, what="connection dropped")


async def test_a_silent_peer_is_pinged_then_dropped_and_a_live_one_is_kept(start_hub, session):
    """The heartbeat (hub/protocols/native/heartbeat.py): a peer that keeps its TCP connection open but
    never answers a ping (a laptop asleep behind a NAT) is dropped about 1.5-1.75 heartbeats after its
    last frame; a client that answers pings (aiohttp's does, inside ``receive``) stays however long."""
    running = await start_hub(heartbeat_s=0.4)
    hub = running.hub
    r, w = await asyncio.open_connection(running.server.host, running.server.port)
    w.write(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await r.readuntil(b"\r\n\r\n")
    alive = await session.ws_connect(f"ws://{running.server.host}:{running.server.port}/ws")
    reader = asyncio.create_task(alive.receive())  # answers pings while it waits
    await wait_for(lambda: len(hub.connections) == 2, what="both connections registered")
    t0 = time.monotonic()
    ping = await asyncio.wait_for(r.readexactly(2), 5)
    assert ping[0] == 0x89, f"a ping frame, got {ping!r}"  # FIN + opcode 9
    await wait_for(lambda: len(hub.connections) == 1, timeout=5, what="the silent peer dropped")
    assert time.monotonic() - t0 < 2.0
    # the live one answers its pings throughout: still there 5 heartbeats later
    deadline = time.monotonic() + 5 * 0.4
    while time.monotonic() < deadline:
        assert len(hub.connections) == 1 and not alive.closed
        await asyncio.sleep(0.05)
    assert not reader.done()
    reader.cancel()
    await alive.close()
    w.close()
