"""Producer leases inside one process (the black-box kill -9 cases are in tests/ops/test_lease.py):
HTTP producers renew by appending or by heartbeat, a WebSocket producer that reconnects within the
lease keeps its stream, Durable Streams streams are never leased, open TTL ends even a held stream,
and a cancelled ``Producer`` task ends its stream as ``cancelled``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from hub.client import Producer

from .conftest import WS, wait_for

LEASE = 0.5


async def status(session: aiohttp.ClientSession, base: str, sid: str) -> dict[str, Any]:
    async with session.get(f"{base}/streams/{sid}") as r:
        body: dict[str, Any] = await r.json()
        return body


async def test_http_producer_renews_by_appending_and_by_heartbeat(start_hub, session) -> None:
    hub = await start_hub(producer_lease_s=LEASE)
    base = hub.http
    async with session.post(f"{base}/streams/h/1?create=1", json={"data": "a"}) as r:
        assert r.status == 200
    deadline = time.monotonic() + 4 * LEASE  # four leases long, kept alive by alternating calls
    i = 0
    while time.monotonic() < deadline:
        if i % 2:
            async with session.post(f"{base}/streams/h/1/heartbeat") as r:
                assert r.status == 200 and (await r.json())["status"] == "open"
        else:
            async with session.post(f"{base}/streams/h/1", json={"data": f"c{i}"}) as r:
                assert r.status == 200
        i += 1
        await asyncio.sleep(LEASE / 5)  # the producer's pace
        assert (await status(session, base, "h/1"))["status"] == "open"
    t0 = time.monotonic()
    await wait_for(lambda: hub.hub.store.get("h/1").ended, 5, "the lease to end the stream")
    assert time.monotonic() - t0 >= LEASE * 0.5
    body = await status(session, base, "h/1")
    assert (body["status"], body["error"]) == ("error", "producer_lost")
    async with session.post(f"{base}/streams/h/1/heartbeat") as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "stream_closed"
    async with session.get(f"{base}/admin/stats", headers=hub.admin_headers()) as r:
        assert (await r.json())["producer_lost"] == 1
    async with session.get(f"{base}/metrics", headers=hub.admin_headers()) as r:
        assert "rhub_producer_lost_total 1.0" in await r.text()


async def test_ws_producer_back_within_the_lease_keeps_its_stream(start_hub, connect, session) -> None:
    hub = await start_hub(producer_lease_s=LEASE)
    a = await connect(hub.ws_url)
    await a.send(op="append", stream="w/1", data="x", id=1, create=True)
    assert (await a.recv_op("ack"))["offset"] == 0
    await asyncio.sleep(3 * LEASE)  # held: a connected producer never lapses, however quiet
    assert not hub.hub.store.get("w/1").ended
    await a.ws.close()
    b = await connect(hub.ws_url)  # back within the lease, as Producer reconnects
    await b.send(op="append", stream="w/1", data="y", id=2)
    assert (await b.recv_op("ack"))["offset"] == 1
    await asyncio.sleep(3 * LEASE)
    assert not hub.hub.store.get("w/1").ended
    # a reader sees the lease's end when the producer goes for good
    reader = await connect(hub.ws_url)
    await reader.send(op="subscribe", stream="w/1", **{"from": 0})
    await b.ws.close()
    got, end = await reader.collect("w/1", timeout=10)
    assert [d for _, d in got] == ["x", "y"]
    assert (end["status"], end.get("error")) == ("error", "producer_lost")


async def test_ws_producer_gone_while_its_appends_await_their_commit_still_lapses(start_hub, connect) -> None:
    """Appends still waiting for their group commit when the producer's connection goes: once they
    are durable nothing holds the stream for the gone connection, so its lease ends it."""
    hub = await start_hub(producer_lease_s=LEASE, fsync="always")
    a = await connect(hub.ws_url)
    await a.send(op="append", stream="w/gone", data="x", id=0, create=True)
    assert (await a.recv_op("ack"))["offset"] == 0
    journal = hub.hub.store._journal
    assert journal is not None
    with journal._lock:  # the commit's fsync waits here: the next appends stay un-acknowledged
        for i in range(1, 6):
            await a.send(op="append", stream="w/gone", data=f"y{i}", id=i)
        s = hub.hub.store.get("w/gone")
        await wait_for(lambda: s.log.next_offset == 6, 5, "the appends to be assigned their offsets")
        await a.ws.close()
        await wait_for(lambda: not hub.hub.connections, 5, "the hub to let the connection go")
    await wait_for(lambda: s.log.durable_offset == 6, 5, "the commit to finish")
    await wait_for(lambda: s.ended, 10 * LEASE + 5, "the lease to end the stream")
    assert (s.status, s.close_info.error if s.close_info else None) == ("error", "producer_lost")
    assert s.read(0, 100) == [b"x", *(f"y{i}".encode() for i in range(1, 6))]


async def test_durable_streams_streams_are_not_leased(start_hub, session) -> None:
    hub = await start_hub(producer_lease_s=LEASE)
    u = f"{hub.http}/v1/stream/ds/keep"
    async with session.put(u, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    async with session.post(u, data=b"a", headers={"Content-Type": "text/plain"}) as r:
        assert r.status in (200, 204)
    await asyncio.sleep(4 * LEASE)
    assert hub.hub.store.get("ds/keep").status == "open"
    assert "ds/keep" not in hub.hub.leases


async def test_open_ttl_ends_a_held_stream(start_hub, connect) -> None:
    hub = await start_hub(producer_lease_s=60, open_ttl_s=LEASE)
    ws: WS = await connect(hub.ws_url)
    await ws.send(op="append", stream="t/1", data="x", id=1, create=True)
    await ws.recv_op("ack")
    await wait_for(lambda: hub.hub.store.get("t/1").ended, 5, "the open TTL")
    ci = hub.hub.store.get("t/1").close_info
    assert ci is not None and (ci.status, ci.error) == ("error", "open_ttl_expired")
    await ws.send(op="append", stream="t/1", data="late", id=2)
    err = await ws.recv_op("error")
    assert err["code"] == "stream_closed"


async def test_a_cancelled_producer_task_closes_its_stream_as_cancelled(start_hub) -> None:
    hub = await start_hub(producer_lease_s=60)
    appended = asyncio.Event()

    async def answer() -> None:
        async with Producer(hub.ws_url, "c/1") as p:
            await p.append("partial ")
            appended.set()
            await asyncio.Event().wait()  # a model that never finishes

    task = asyncio.create_task(answer())
    await asyncio.wait_for(appended.wait(), 10)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    s = hub.hub.store.get("c/1")
    assert s.status == "cancelled" and s.read(0) == [b"partial "]


async def test_graceful_shutdown_mid_answer_ends_the_demo_answer_as_cancelled(start_hub, session) -> None:
    hub = await start_hub(demo=True, producer_lease_s=60)
    async with session.post(
        f"{hub.http}/demo/ask", json={"chat": "g", "prompt": "a long one", "rate": 20}
    ) as r:
        stream = (await r.json())["stream"]
    await wait_for(lambda: hub.hub.store.get(stream).next_offset >= 2, 10, "the answer to start")
    data = hub.config.data_dir
    await hub.server.close()
    again = await start_hub(data_dir=data)
    assert again.hub.store.get(stream).status == "cancelled"
