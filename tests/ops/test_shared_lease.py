"""Producer leases on a shared engine (Redis): the lease lives in Redis, renewed by the hub the
producer is connected to. kill -9 that hub and the stream ends ``producer_lost`` through the others
within the lease time, exactly once however many hubs sweep; a producer that reconnects to another
hub in time keeps its stream alive and continues its seq."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from bench.redisproc import RedisServer

from .procs import HubProcess

ADMIN = "lease-admin"
LEASE = 1.5


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as srv:
        yield srv


def start_hubs(hub_process: Callable[..., HubProcess], url: str, tmp_path: Path, n: int) -> list[HubProcess]:
    return [
        hub_process(
            "--store",
            url,
            "--data-dir",
            str(tmp_path / f"h{i}"),
            "--admin-token",
            ADMIN,
            "--producer-lease-s",
            str(LEASE),
        )  # fmt: skip
        for i in range(n)
    ]


async def state(s: aiohttp.ClientSession, hub: HubProcess, sid: str) -> dict[str, Any]:
    async with s.get(f"{hub.http}/streams/{sid}") as r:
        body: dict[str, Any] = await r.json()
        return body


async def stats(s: aiohttp.ClientSession, hub: HubProcess) -> dict[str, Any]:
    async with s.get(f"{hub.http}/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        body: dict[str, Any] = await r.json()
        return body


async def append(ws: aiohttp.ClientWebSocketResponse, sid: str, seq: int, **kw: Any) -> dict[str, Any]:
    await ws.send_json(
        {"op": "append", "stream": sid, "data": f"c{seq}", "id": seq, "producer": "p", "seq": seq, **kw}
    )
    while True:
        f = msgspec.json.decode((await ws.receive(timeout=10)).data)
        if f.get("id") == seq:
            assert f["op"] == "ack", f
            return dict(f)


async def test_kill9_the_producers_hub_ends_its_stream_through_another_exactly_once(
    hub_process: Callable[..., HubProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b, c = start_hubs(hub_process, redis_server.url, tmp_path, 3)
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(a.http + "/ws") as ws:
            await append(ws, "l/1", 0, create=True)
            await asyncio.sleep(LEASE * 1.5)  # held: hub A renews it past its first lease
            assert (await state(s, b, "l/1"))["status"] == "open"
            a.kill9()
            t_kill = time.monotonic()
        async with asyncio.timeout(LEASE * 4):
            while (body := await state(s, b, "l/1"))["status"] == "open":
                await asyncio.sleep(0.05)
        elapsed = time.monotonic() - t_kill
        assert (body["status"], body["error"]) == ("error", "producer_lost")
        # the last renewal was at most a third of the lease before the kill; a sweep runs every third
        assert LEASE / 2 <= elapsed <= LEASE + LEASE / 3 + 1.0, elapsed
        assert (await state(s, c, "l/1"))["error"] == "producer_lost"
        lost = [(await stats(s, h))["producer_lost"] for h in (b, c)]
        assert sum(lost) == 1, lost  # two hubs swept, one ended it


async def test_a_producer_back_on_another_hub_within_the_lease_keeps_its_stream(
    hub_process: Callable[..., HubProcess], redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = start_hubs(hub_process, redis_server.url, tmp_path, 2)
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(a.http + "/ws") as ws:
            await append(ws, "l/2", 0, create=True)
            a.kill9()
        async with s.ws_connect(b.http + "/ws") as ws:  # back within the lease, through hub B
            assert (await append(ws, "l/2", 1))["offset"] == 1
            await asyncio.sleep(LEASE * 3)  # three leases long, held by hub B now
            assert (await state(s, b, "l/2"))["status"] == "open"
            await append(ws, "l/2", 2)
            await ws.send_json({"op": "close", "stream": "l/2", "status": "done", "id": "end"})
            while msgspec.json.decode((await ws.receive(timeout=10)).data).get("id") != "end":
                pass
        body = await state(s, b, "l/2")
        assert (body["status"], body.get("error")) == ("done", None)
        assert (await stats(s, b))["producer_lost"] == 0
