"""``HttpProducer`` against the real hub over plain HTTP: pipelined appends land in order with the
offsets their futures promised, a request whose answer was lost with its TCP connection is retried
with its original seq and lands once, the ``cancelled`` flag of append answers reaches the producer,
the block's outcome picks the close status, and heartbeats hold the producer lease."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hub.client import ClientError, HttpProducer


async def read(session: aiohttp.ClientSession, base: str, sid: str) -> dict[str, Any]:
    async with session.get(f"{base}/streams/{sid}?from=0&limit=10000") as r:
        assert r.status == 200, await r.text()
        body: dict[str, Any] = await r.json()
        return body


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of the hub that, when armed, lets the next request reach the
    hub and then cuts the client's connection as the answer comes back: the append is durable, its
    acknowledgement is lost, as when a network drops between hub and producer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.armed = False
        self.cuts = 0
        self.cut = asyncio.Event()
        self.hold = asyncio.Event()  # cleared: new connections wait (the hub is restarting)
        self.hold.set()
        self.server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        await self.hold.wait()
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.port)
        except OSError:
            cw.transport.abort()
            return

        async def up() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await cr.read(65536):
                    uw.write(data)
                    await uw.drain()

        async def down() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await ur.read(65536):
                    if self.armed:
                        self.armed = False
                        self.cuts += 1
                        self.cut.set()
                        cw.transport.abort()  # the answer never reaches the producer
                        return
                    cw.write(data)
                    await cw.drain()

        tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
        self._pipes.update(tasks)
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in tasks:
            t.cancel()
        cw.transport.abort()
        uw.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in self._pipes:
            t.cancel()


@pytest.fixture
async def proxy(hub) -> AsyncIterator[CuttingProxy]:
    p = CuttingProxy(hub.server.port)
    yield p
    await p.close()


async def test_pipelined_appends_land_in_order_with_their_offsets(hub, session) -> None:
    n = 600
    async with HttpProducer(hub.http, "hp/order") as p:
        futs = [await p.append(f"t{i:03d}") for i in range(n)]  # none awaited: they batch
        offsets = await asyncio.gather(*futs)
    assert offsets == list(range(n))
    assert p.requests_sent < n / 4, f"{p.requests_sent} requests for {n} tokens: appends did not batch"
    body = await read(session, hub.http, "hp/order")
    assert body["chunks"] == [f"t{i:03d}" for i in range(n)]
    assert body["status"] == "done"


async def test_coalescing_merges_tokens_into_chunks(hub, session) -> None:
    async with HttpProducer(hub.http, "hp/coal", coalesce_tokens=10, coalesce_ms=50) as p:
        futs = [await p.append(f"{i % 10}") for i in range(95)]
        await p.flush()
        # token i sits in chunk i // 10; the last 5 went out when the 50 ms timer (or flush) fired
        assert [f.result() for f in futs] == [i // 10 for i in range(95)]
    body = await read(session, hub.http, "hp/coal")
    assert body["chunks"] == ["0123456789"] * 9 + ["01234"]


async def test_a_retry_after_a_cut_connection_lands_once_with_its_original_offset(
    hub, proxy, session
) -> None:
    url = await proxy.start()
    async with HttpProducer(url, "hp/retry", backoff=(0.01, 0.05)) as p:
        first = await (await p.append(["a", "b"]))
        proxy.armed = True  # the next append reaches the hub; its answer is cut off
        second = await (await p.append(["c", "d", "e"]))
        third = await (await p.append("f"))
    assert proxy.cuts == 1 and p.retries >= 1
    assert (first, second, third) == (0, 2, 5)  # the retry was answered with its original offset
    body = await read(session, hub.http, "hp/retry")
    assert body["chunks"] == ["a", "b", "c", "d", "e", "f"]  # written once, in order
    assert body["status"] == "done"


async def test_a_retry_after_a_hub_restart_lands_once(start_hub, tmp_path, session) -> None:
    """The answer of an append is cut off, then the hub restarts (same data dir) before the retry
    arrives: the restarted hub knows the producer's window from its files and answers the retry as
    a duplicate with the original offset."""
    data = tmp_path / "restart"
    one = await start_hub(data_dir=data)
    proxy = CuttingProxy(one.server.port)
    url = await proxy.start()
    try:
        async with HttpProducer(url, "hp/restart", backoff=(0.02, 0.1), max_attempts=50) as p:
            assert await (await p.append(["x", "y"])) == 0
            proxy.hold.clear()  # new connections wait until the hub is back
            proxy.armed = True
            second = await p.append(["z"])
            await asyncio.wait_for(proxy.cut.wait(), 10)
            await one.server.close()
            two = await start_hub(data_dir=data)
            proxy.port = two.server.port
            proxy.hold.set()
            assert await asyncio.wait_for(second, 20) == 2
            assert await (await p.append("!")) == 3
        assert p.retries >= 1
        body = await read(session, two.http, "hp/restart")
        assert (body["chunks"], body["status"]) == (["x", "y", "z", "!"], "done")
    finally:
        await proxy.close()


async def test_cancel_flag_reaches_the_producer_and_closes_cancelled(hub, session) -> None:
    told = asyncio.Event()

    async def on_cancel() -> None:
        told.set()

    async with HttpProducer(hub.http, "hp/c1", on_cancel=on_cancel) as p:
        await (await p.append("partial "))
        assert not p.cancelled
        async with session.post(f"{hub.http}/streams/hp/c1/cancel") as r:
            assert r.status == 202
        await (await p.append("answer"))  # the answer to this append carries cancelled: true
        assert p.cancelled
        await asyncio.wait_for(told.wait(), 5)
    body = await read(session, hub.http, "hp/c1")
    assert body["chunks"] == ["partial ", "answer"]  # the partial answer is kept
    assert body["status"] == "cancelled"


async def test_close_status_follows_the_block(hub, session) -> None:
    with pytest.raises(RuntimeError):
        async with HttpProducer(hub.http, "hp/err") as p:
            await p.append("half")
            raise RuntimeError("model failed")
    body = await read(session, hub.http, "hp/err")
    assert body["chunks"] == ["half"]
    assert (body["status"], body["error"]) == ("error", "RuntimeError: model failed")

    started = asyncio.Event()

    async def produce() -> None:
        async with HttpProducer(hub.http, "hp/stop") as p:
            await (await p.append("some"))
            started.set()
            await asyncio.Event().wait()  # a model that never finishes

    task = asyncio.create_task(produce())
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    body = await read(session, hub.http, "hp/stop")
    assert (body["chunks"], body["status"]) == (["some"], "cancelled")


async def test_a_refused_token_ends_the_producer_with_its_code(start_hub) -> None:
    hub = await start_hub(jwt_secret="s3cret-s3cret-s3cret-s3cret-s3cret")
    with pytest.raises(ClientError) as e:
        async with HttpProducer(hub.http, "hp/auth", token="not-a-token"):
            pass
    assert e.value.code == "unauthorized"


async def test_heartbeats_hold_the_lease_while_the_model_thinks(start_hub, session) -> None:
    lease = 0.5
    hub = await start_hub(producer_lease_s=lease)
    async with HttpProducer(hub.http, "hp/beat", heartbeat_s=lease / 5) as p:
        await (await p.append("thinking..."))
        deadline = time.monotonic() + 4 * lease  # four leases without an append
        while time.monotonic() < deadline:
            assert (await read(session, hub.http, "hp/beat"))["status"] == "open"
            await asyncio.sleep(lease / 10)  # how often we look, not a race: the hub decides
        await (await p.append(" done"))
    body = await read(session, hub.http, "hp/beat")
    assert (body["chunks"], body["status"]) == (["thinking...", " done"], "done")
