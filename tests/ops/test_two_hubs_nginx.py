"""Two hubs on one redis-server behind the shipped nginx config (deploy/nginx/resumable-hub.conf with
both hubs as upstream servers): kill -9 one hub mid-answer; the WebSocket subscriber, the SSE reader
and the producer reconnect through nginx to the other hub, the readers resume exactly where they were
(no chunk lost, none twice, in order) and the producer continues its seq (retries answered as
duplicates)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from bench.redisproc import RedisServer

from .procs import HubProcess, Nginx
from .test_nginx import sse_events

TOKENS = [f"t{i} " for i in range(120)]
ADMIN = "two-hubs-admin"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", appendfsync="always") as srv:
        yield srv


class Producer:
    """Appends TOKENS with producer id + seq through nginx; on a dropped connection it reconnects
    and resends every unacknowledged seq (the engine answers the ones that landed as duplicates)."""

    def __init__(self, session: aiohttp.ClientSession, ws_url: str) -> None:
        self.session, self.url = session, ws_url
        self.acked: dict[int, int] = {}  # seq -> offset
        self.reconnects = 0
        self.duplicates = 0

    async def run(self, sent_enough: asyncio.Event, go_on: asyncio.Event) -> None:
        seq = 0
        async with asyncio.timeout(90):
            while len(self.acked) < len(TOKENS):
                try:
                    async with self.session.ws_connect(self.url) as ws:
                        for q in sorted(set(range(seq)) - set(self.acked)):  # unacknowledged: again
                            await ws.send_json(self._append(q))
                        while len(self.acked) < len(TOKENS):
                            if seq < len(TOKENS):
                                if seq == len(TOKENS) // 3:
                                    sent_enough.set()
                                    await go_on.wait()
                                await ws.send_json(self._append(seq))
                                seq += 1
                            m = await ws.receive(timeout=10)
                            if m.type != aiohttp.WSMsgType.TEXT:
                                raise ConnectionError(f"producer socket: {m.type}")
                            f = msgspec.json.decode(m.data)
                            if f["op"] == "ack" and isinstance(f.get("id"), int):
                                self.acked[f["id"]] = f["offset"]
                                self.duplicates += bool(f.get("duplicate"))
                            elif f["op"] == "error":
                                raise AssertionError(f)
                        await ws.send_json({"op": "close", "stream": "fo/1", "status": "done", "id": "end"})
                        while (msgspec.json.decode((await ws.receive(timeout=10)).data)).get("id") != "end":
                            pass
                        return
                except (aiohttp.ClientError, ConnectionError, TimeoutError):
                    self.reconnects += 1
                    await asyncio.sleep(0.1)

    @staticmethod
    def _append(q: int) -> dict[str, Any]:
        return {"op": "append", "stream": "fo/1", "data": TOKENS[q], "id": q, "producer": "fo", "seq": q}


async def ws_reader(session: aiohttp.ClientSession, ws_url: str, got: list[tuple[int, str]]) -> int:
    """Subscribes from what it holds, again after every drop; returns how often it reconnected."""
    drops = 0
    async with asyncio.timeout(90):
        while True:
            try:
                async with session.ws_connect(ws_url) as ws:
                    await ws.send_json({"op": "subscribe", "stream": "fo/1", "from": len(got)})
                    async for m in ws:
                        f = msgspec.json.decode(m.data)
                        if f["op"] == "chunks":
                            assert f["offset"] == len(got), (
                                f"gap or duplicate at {f['offset']} after {len(got)}"
                            )
                            got += [(f["offset"] + i, d) for i, d in enumerate(f["data"])]
                        elif f["op"] == "end":
                            return drops
                        elif f["op"] == "error" and f.get("code") != "stream_not_found":
                            raise AssertionError(f)
                    raise ConnectionError("closed")
            except (aiohttp.ClientError, ConnectionError):
                drops += 1
                await asyncio.sleep(0.1)


async def sse_reader(session: aiohttp.ClientSession, http: str, got: list[tuple[int, str]]) -> int:
    drops = 0
    async with asyncio.timeout(90):
        while True:
            headers = {"Last-Event-ID": str(len(got))} if got else {}
            try:
                async with session.get(f"{http}/streams/fo/1/sse", headers=headers) as r:
                    if r.status == 404:  # not created yet
                        await asyncio.sleep(0.05)
                        continue
                    async for ev in sse_events(r):
                        if ev.get("event") == "end":
                            return drops
                        body = msgspec.json.decode(ev["data"])
                        assert body["offset"] == len(got), f"SSE gap or duplicate at {body['offset']}"
                        got += [(body["offset"] + i, d) for i, d in enumerate(body["data"])]
                drops += 1
            except (aiohttp.ClientError, ConnectionError):
                drops += 1
                await asyncio.sleep(0.1)


async def connections(session: aiohttp.ClientSession, hub: HubProcess) -> int:
    async with session.get(f"{hub.http}/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        return int((await r.json())["connections"])


async def test_kill9_one_of_two_hubs_behind_nginx_mid_answer(
    hub_process: Callable[..., HubProcess],
    nginx: Callable[[Sequence[str]], Nginx],
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    hubs = [
        hub_process("--store", redis_server.url, "--data-dir", str(tmp_path / n), "--admin-token", ADMIN)
        for n in ("a", "b")
    ]
    px = nginx([f"127.0.0.1:{h.port}" for h in hubs])
    ws_url = px.http.replace("http://", "ws://") + "/ws"
    async with aiohttp.ClientSession() as s:
        prod = Producer(s, ws_url)
        async with s.ws_connect(ws_url) as ws:  # the stream exists before the readers come
            await ws.send_json({"op": "create", "stream": "fo/1", "id": "c"})
            while msgspec.json.decode((await ws.receive(timeout=10)).data)["op"] != "ack":
                pass
        ws_got: list[tuple[int, str]] = []
        sse_got: list[tuple[int, str]] = []
        sent_enough, go_on = asyncio.Event(), asyncio.Event()
        tasks = [
            asyncio.create_task(prod.run(sent_enough, go_on)),
            asyncio.create_task(ws_reader(s, ws_url, ws_got)),
            asyncio.create_task(sse_reader(s, px.http, sse_got)),
        ]
        async with asyncio.timeout(30):
            await sent_enough.wait()
            while len(ws_got) < len(TOKENS) // 3 or len(sse_got) < len(TOKENS) // 3:
                await asyncio.sleep(0.02)
        counts = [await connections(s, h) for h in hubs]
        victim = hubs[counts.index(max(counts))]  # the hub holding the most of our clients
        victim.kill9()
        t_kill = time.monotonic()
        go_on.set()
        try:
            ws_drops, sse_drops = (await asyncio.gather(*tasks))[1:]
        finally:
            for t in tasks:
                t.cancel()
                with contextlib.suppress(BaseException):
                    await t
    assert max(counts) >= 1 and time.monotonic() - t_kill < 60
    assert [d for _, d in ws_got] == TOKENS and [d for _, d in sse_got] == TOKENS
    assert [o for o, _ in ws_got] == list(range(len(TOKENS)))
    assert sorted(prod.acked.values()) == list(range(len(TOKENS)))  # every seq at one offset, once
    # the clients the victim held reconnected through nginx to the other hub
    assert prod.reconnects + ws_drops + sse_drops >= max(counts)
