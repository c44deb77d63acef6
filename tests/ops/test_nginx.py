"""deploy/nginx/resumable-hub.conf in front of a real hub: WebSocket and SSE stream through it chunk by
chunk, resume works through it, the Origin check still sees the browser's host, oversized bodies get the
hub's own error, and no token reaches nginx's access log."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aiohttp
import msgspec
import pytest

from hub.core.auth import Auth
from hub.core.config import Config

from .procs import NGINX_CONF, HubProcess, Nginx

HubFactory = Callable[..., HubProcess]
NginxFactory = Callable[[Sequence[str]], Nginx]


async def recv(ws: aiohttp.ClientWebSocketResponse, op: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        m = await ws.receive(timeout=max(0.01, deadline - time.monotonic()))
        assert m.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {m.type} {m.data!r}"
        frame: dict[str, Any] = msgspec.json.decode(m.data)
        assert frame["op"] != "error", frame
        if frame["op"] == op:
            return frame


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """Events as they arrive (comments skipped), each a dict of its fields."""
    event: dict[str, str] = {}
    while True:
        raw = await resp.content.readline()
        if not raw:
            return
        line = raw.decode().rstrip("\n")
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = value


async def test_websocket_and_sse_stream_chunk_by_chunk_through_nginx(
    hub_process: HubFactory, nginx: NginxFactory
) -> None:
    hub = hub_process()
    px = nginx([f"127.0.0.1:{hub.port}"])
    ws_url = px.http.replace("http://", "ws://") + "/ws"
    async with aiohttp.ClientSession() as s:
        producer = await s.ws_connect(ws_url)
        reader = await s.ws_connect(ws_url)
        await producer.send_json({"op": "create", "stream": "nx/1", "id": 1})
        await recv(producer, "ack")
        await reader.send_json({"op": "subscribe", "stream": "nx/1", "from": 0})
        await recv(reader, "subscribed")
        sse = await s.get(f"{px.http}/streams/nx/1/sse", timeout=aiohttp.ClientTimeout(total=30))
        assert sse.status == 200 and sse.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(sse)
        # Lockstep: each chunk must reach both readers through nginx before the next one is written,
        # so any buffering in the proxy shows up as a timeout here, not as a late batch.
        for i in range(5):
            await producer.send_json({"op": "append", "stream": "nx/1", "data": f"tok{i} ", "id": 10 + i})
            assert (await recv(producer, "ack"))["offset"] == i
            frame = await recv(reader, "chunks", timeout=5)
            assert (frame["offset"], frame["data"]) == (i, [f"tok{i} "])
            ev = await asyncio.wait_for(events.__anext__(), 5)
            assert ev["id"] == str(i + 1)
            assert msgspec.json.decode(ev["data"]) == {"offset": i, "data": [f"tok{i} "]}
        await producer.send_json({"op": "close", "stream": "nx/1", "status": "done", "id": 99})
        await recv(producer, "ack")
        end = await recv(reader, "end")
        assert (end["offset"], end["status"]) == (5, "done")
        ev = await asyncio.wait_for(events.__anext__(), 5)
        assert ev["event"] == "end" and msgspec.json.decode(ev["data"])["status"] == "done"
        sse.close()

        # EventSource's resume header passes through the proxy: from chunk 3 on, then the end.
        async with s.get(f"{px.http}/streams/nx/1/sse", headers={"Last-Event-ID": "3"}) as r:
            got = [e async for e in sse_events(r)]
        bodies = [msgspec.json.decode(e["data"]) for e in got]
        assert bodies[0]["offset"] == 3
        assert [c for b in bodies[:-1] for c in b["data"]] == ["tok3 ", "tok4 "]
        assert got[-1]["event"] == "end" and bodies[-1]["status"] == "done"
        await producer.close()
        await reader.close()


async def test_origin_check_sees_the_browsers_host_through_nginx(
    hub_process: HubFactory, nginx: NginxFactory
) -> None:
    """The hub allows an Origin equal to the Host it is reached by: nginx must pass Host with its port."""
    hub = hub_process()
    px = nginx([f"127.0.0.1:{hub.port}"])
    host = f"chat.example:{px.port}"
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(
            px.http.replace("http://", "ws://") + "/ws", headers={"Host": host, "Origin": f"http://{host}"}
        )
        await ws.send_json({"op": "ping", "t": 1})
        assert (await recv(ws, "pong"))["t"] == 1
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError) as e:
            await s.ws_connect(
                px.http.replace("http://", "ws://") + "/ws",
                headers={"Host": host, "Origin": "https://evil.example"},
            )
        assert e.value.status == 403


async def test_oversized_append_gets_the_hubs_error_not_nginxs(
    hub_process: HubFactory, nginx: NginxFactory
) -> None:
    hub = hub_process()
    px = nginx([f"127.0.0.1:{hub.port}"])
    big = "x" * (Config().max_message_bytes + 10)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{px.http}/streams/nx/big?create=1", json={"data": big}) as r:
            assert r.status == 413
            body = await r.json()  # the hub's JSON error, not nginx's HTML page
            assert "code" in body["error"], body
        async with s.post(f"{px.http}/streams/nx/big?create=1", json={"data": "fits"}) as r:
            assert r.status == 200, await r.text()


async def test_no_token_in_the_nginx_access_log(hub_process: HubFactory, nginx: NginxFactory) -> None:
    secret = "nginx-test-secret-0123456789abcdef"
    hub = hub_process("--jwt-secret", secret)
    px = nginx([f"127.0.0.1:{hub.port}"])
    token = Auth(secret, "unused").mint(read=["nx/*"], write=["nx/*"])
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{px.http}/streams/nx/t?create=1&token={token}", json={"data": "a"}) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{px.http}/streams/nx/t/close?token={token}", json={"status": "done"}) as r:
            assert r.status == 200, await r.text()
        async with s.get(f"{px.http}/streams/nx/t/sse?token={token}") as r:
            assert r.status == 200
            await r.read()
    # nginx writes the access line once the response is done; wait for all three with a deadline.
    deadline = time.monotonic() + 10
    while True:
        log = px.access_log.read_text() if px.access_log.exists() else ""
        if log.count("/streams/nx/t") >= 3 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    assert 'GET /streams/nx/t/sse HTTP/1.1" 200' in log, log
    assert token not in log and "token=" not in log


def _seconds(value: str) -> float:
    n, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()  # type: ignore[union-attr]
    return int(n) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[unit]


def test_proxy_timeouts_outlast_the_hubs_keepalives() -> None:
    """A quiet WebSocket or SSE reader stays connected as long as the hub keeps it alive: nginx's idle
    timeouts must be several keep-alive periods (the hub pings WebSockets every heartbeat_s and writes
    an SSE comment every 15 s), and buffering must be off for the streaming location."""
    conf = NGINX_CONF.read_text()
    settings = dict(re.findall(r"^\s*(proxy_\w+)\s+([^;]+);", conf, flags=re.MULTILINE))
    keepalive = max(Config().heartbeat_s, 15.0)
    assert _seconds(settings["proxy_read_timeout"]) >= 10 * keepalive
    assert _seconds(settings["proxy_send_timeout"]) >= 10 * keepalive
    assert settings["proxy_buffering"] == "off"
    assert settings["proxy_http_version"] == "1.1"
