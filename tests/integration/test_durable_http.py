"""Durable Streams endpoints (/v1/stream/{path}) against the real hub: interop with the WebSocket
API (same streams, same offsets), idempotent producers, Stream-Seq, JSON mode, crash leftovers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from hub.client import Producer
from hub.protocols.durable.wire import PENDING, format_offset

from .conftest import WS, Running

StartHub = Callable[..., Awaitable[Running]]
Connect = Callable[..., Awaitable[WS]]


def url(hub: Running, sid: str) -> str:
    return f"{hub.http}/v1/stream/{sid}"


async def post(
    session: aiohttp.ClientSession, u: str, body: bytes | str, ct: str = "text/plain", **headers: str
) -> aiohttp.ClientResponse:
    h = {"Content-Type": ct, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with session.post(u, data=body, headers=h) as r:
        await r.read()
        return r


def producer(pid: str, epoch: int, seq: int) -> dict[str, str]:
    return {"Producer_Id": pid, "Producer_Epoch": str(epoch), "Producer_Seq": str(seq)}


async def test_websocket_appends_are_read_over_durable_streams(
    hub: Running, session: aiohttp.ClientSession
) -> None:
    sid = "chat/1/a"
    async with Producer(hub.ws_url, sid) as p:
        for tok in ["Hel", "lo", ", wörld"]:
            await p.append(tok)
    async with session.get(url(hub, sid)) as r:
        assert r.status == 200
        assert await r.text() == "Hello, wörld"
        assert r.headers["Content-Type"] == "text/plain"  # created without a type: served as text
        assert r.headers["Stream-Next-Offset"] == format_offset(3)  # one offset per chunk
        assert r.headers["Stream-Up-To-Date"] == "true"
        assert r.headers["Stream-Closed"] == "true"  # the producer closed it on leaving the block
    # a resume token from DS reads exactly what follows that chunk
    async with session.get(url(hub, sid), params={"offset": format_offset(1)}) as r:
        assert await r.text() == "lo, wörld"


async def test_durable_streams_appends_are_read_over_websocket(
    hub: Running, session: aiohttp.ClientSession, connect: Connect
) -> None:
    sid = "chat/2/b"
    async with session.put(url(hub, sid), headers={"Content-Type": "text/plain"}, data="first ") as r:
        assert r.status == 201
        assert r.headers["Stream-Next-Offset"] == format_offset(1)
    offsets = []
    for body in ["second ", "third"]:
        r = await post(session, url(hub, sid), body)
        assert r.status == 204
        offsets.append(r.headers["Stream-Next-Offset"])
    assert offsets == [format_offset(2), format_offset(3)]
    r = await post(session, url(hub, sid), b"", **{"Stream_Closed": "true"})
    assert r.status == 204 and r.headers["Stream-Closed"] == "true"
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream=sid, **{"from": 0})
    got, end = await ws.collect(sid)
    assert got == [(0, "first "), (1, "second "), (2, "third")]
    assert end["status"] == "done" and end["offset"] == 3


async def test_live_long_poll_and_sse_see_websocket_appends(
    hub: Running, session: aiohttp.ClientSession
) -> None:
    sid = "live/1"
    async with Producer(hub.ws_url, sid) as p:
        await (await p.append("a"))  # durable before the poll asks for offset 1
        poll = asyncio.create_task(
            session.get(url(hub, sid), params={"offset": format_offset(1), "live": "long-poll"})
        )
        await asyncio.sleep(0.1)
        await p.append("b")
        async with await poll as r:
            assert r.status == 200 and await r.text() == "b"
            assert r.headers["Stream-Next-Offset"] == format_offset(2)
            assert r.headers["Stream-Cursor"].isdigit()
    async with session.get(url(hub, sid), params={"offset": "-1", "live": "sse"}) as r:
        text = (await asyncio.wait_for(r.read(), 10)).decode()  # ends: the stream is closed
    assert "event: data\ndata:ab\n" in text
    controls = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:{")]
    assert controls[-1] == {"streamNextOffset": format_offset(2), "streamClosed": True, "upToDate": True}


async def test_producer_fencing_duplicates_and_gaps(hub: Running, session: aiohttp.ClientSession) -> None:
    u = url(hub, "prod/1")
    async with session.put(u, headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 201
    r = await post(session, u, "a", **producer("p", 0, 0))
    assert r.status == 200 and r.headers["Producer-Seq"] == "0"
    r = await post(session, u, "b", **producer("p", 0, 1))
    assert r.status == 200
    # a retry is acknowledged and writes nothing
    r = await post(session, u, "b", **producer("p", 0, 1))
    assert r.status == 204 and r.headers["Producer-Seq"] == "1"
    r = await post(session, u, "a", **producer("p", 0, 0))
    assert r.status == 204 and r.headers["Producer-Seq"] == "1"  # the highest accepted, not ours
    # a gap is refused with what the hub expected
    r = await post(session, u, "d", **producer("p", 0, 3))
    assert r.status == 409
    assert (r.headers["Producer-Expected-Seq"], r.headers["Producer-Received-Seq"]) == ("2", "3")
    # a new epoch fences the old one (zombie), and must start at seq 0
    r = await post(session, u, "x", **producer("p", 1, 1))
    assert r.status == 400
    r = await post(session, u, "c", **producer("p", 1, 0))
    assert r.status == 200 and r.headers["Producer-Epoch"] == "1"
    r = await post(session, u, "zombie", **producer("p", 0, 2))
    assert r.status == 403 and r.headers["Producer-Epoch"] == "1"
    async with session.get(u) as r:
        assert await r.text() == "abc"


async def test_producer_state_and_stream_seq_survive_a_restart(start_hub: StartHub, tmp_path: Path) -> None:
    data = tmp_path / "restart-data"
    first = await start_hub(data_dir=data)
    async with aiohttp.ClientSession() as session:
        u = url(first, "prod/restart")
        async with session.put(u, headers={"Content-Type": "text/plain"}) as r:
            assert r.status == 201
        for seq, body in enumerate(["a", "b", "c"]):
            r = await post(session, u, body, **producer("p", 0, seq), **{"Stream_Seq": f"0{seq}"})
            assert r.status == 200
        await first.server.close()  # a stop: the retry below comes after it
        second = await start_hub(data_dir=data)
        u = url(second, "prod/restart")
        # the retry of the last append is recognised from the durable producer mark, not re-written
        r = await post(session, u, "c", **producer("p", 0, 2), **{"Stream_Seq": "02"})
        assert r.status == 204 and r.headers["Producer-Seq"] == "2"
        # the last Stream-Seq came back with it
        r = await post(session, u, "late", **{"Stream_Seq": "01"})
        assert r.status == 409
        r = await post(session, u, "d", **producer("p", 0, 3), **{"Stream_Seq": "03"})
        assert r.status == 200
        async with session.get(u) as r:
            assert await r.text() == "abcd"


async def test_stream_seq_is_byte_wise_and_checked_after_producer_retries(
    hub: Running, session: aiohttp.ClientSession
) -> None:
    u = url(hub, "seq/1")
    async with session.put(u, headers={"Content-Type": "text/plain"}):
        pass
    assert (await post(session, u, "1", **{"Stream_Seq": "9"})).status == 204
    assert (await post(session, u, "2", **{"Stream_Seq": "10"})).status == 409  # "10" < "9"
    assert (await post(session, u, "3", **{"Stream_Seq": "9a"})).status == 204
    r = await post(session, u, "4", **producer("q", 0, 0), **{"Stream_Seq": "9b"})
    assert r.status == 200
    r = await post(session, u, "4", **producer("q", 0, 0), **{"Stream_Seq": "9b"})
    assert r.status == 204  # a retry, not a Stream-Seq regression


async def test_json_mode(hub: Running, session: aiohttp.ClientSession, connect: Connect) -> None:
    u = url(hub, "json/1")
    async with session.put(u, headers={"Content-Type": "application/json"}, data='[{"a": 1}, [2, 3]]') as r:
        assert r.status == 201
        assert r.headers["Stream-Next-Offset"] == format_offset(2)  # one level flattened: 2 messages
    assert (await post(session, u, '{"b":\n 2}', "application/json; charset=utf-8")).status == 204
    assert (await post(session, u, "[[[4]]]", "application/json")).status == 204
    assert (await post(session, u, "[]", "application/json")).status == 400
    assert (await post(session, u, "{nope}", "application/json")).status == 400
    assert (await post(session, u, "x", "text/plain")).status == 409
    async with session.get(u) as r:
        assert r.headers["Content-Type"] == "application/json"
        assert json.loads(await r.text()) == [{"a": 1}, [2, 3], {"b": 2}, [[4]]]
    async with session.get(u, params={"offset": format_offset(2)}) as r:
        assert json.loads(await r.text()) == [{"b": 2}, [[4]]]
    async with session.get(u, params={"offset": "now"}) as r:
        assert await r.text() == "[]"
    # each message is one chunk for WebSocket subscribers, byte for byte as appended
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream="json/1", **{"from": 0})
    f = await ws.recv_op("chunks")
    assert f["data"][:2] == ['{"a": 1}', "[2, 3]"]


async def test_sse_frames_binary_as_base64_and_keeps_lines_apart(
    hub: Running, session: aiohttp.ClientSession
) -> None:
    u = url(hub, "bin/1")
    async with session.put(
        u, headers={"Content-Type": "application/octet-stream", "Stream-Closed": "true"}, data=b"\x00\xff\n"
    ) as r:
        assert r.status == 201 and r.headers["Stream-Closed"] == "true"
    async with session.get(u, params={"offset": "-1", "live": "sse"}) as r:
        assert r.headers["Stream-SSE-Data-Encoding"] == "base64"
        text = (await asyncio.wait_for(r.read(), 10)).decode()
    assert "event: data\ndata:AP8K\n\n" in text
    u = url(hub, "text/lines")
    async with session.put(u, headers={"Content-Type": "text/plain"}, data="a\r\n\r\nevent: control\n b"):
        pass
    async with session.get(u, params={"offset": "-1", "live": "sse"}) as r:
        chunk = await asyncio.wait_for(r.content.readuntil(b"\n\nevent: control"), 10)
    assert chunk.startswith(b"event: data\ndata:a\ndata:\ndata:event: control\ndata:  b\n\n")


async def test_a_create_cut_short_by_a_stop_never_existed(
    hub: Running, session: aiohttp.ClientSession
) -> None:
    # what a PUT with a body leaves if the hub stops before the body is durable
    await hub.hub.store.create("half/made", content_type="text/plain", labels={PENDING: "1"})
    async with session.get(url(hub, "half/made")) as r:
        assert r.status == 404
    async with session.put(url(hub, "half/made"), headers={"Content-Type": "text/plain"}, data="whole") as r:
        assert r.status == 201
    async with session.get(url(hub, "half/made")) as r:
        assert await r.text() == "whole"


async def test_errors_and_headers(hub: Running, session: aiohttp.ClientSession) -> None:
    u = url(hub, "hdr/1")
    async with session.get(u) as r:
        assert r.status == 404 and r.headers["X-Content-Type-Options"] == "nosniff"
    async with session.put(u, headers={"Stream-TTL": "60", "Stream-Expires-At": "2030-01-01T00:00:00Z"}) as r:
        assert r.status == 400
    async with session.put(u, headers={"Stream-TTL": "060"}) as r:
        assert r.status == 400
    async with session.put(u, headers={"Stream-TTL": "60"}) as r:
        assert r.status == 201 and r.headers["Content-Type"] == "application/octet-stream"
    async with session.head(u) as r:
        assert r.headers["Stream-TTL"] == "60" and r.headers["Cache-Control"] == "no-store"
    for bad in ["1", "0,1", "../x", format_offset(1) + "x", "0000000000000000_0000000000000001"]:
        async with session.get(u, params={"offset": bad}) as r:
            assert r.status == 400, bad
    async with session.get(u, params={"offset": format_offset(5)}) as r:
        assert r.status == 400  # past the tail
    big = b"x" * (hub.config.max_message_bytes + 1)
    r = await post(session, u, big, "application/octet-stream")
    assert r.status == 413
    page = "http://localhost:5173"  # allowed by default, as for the WebSocket (other sites: 403)
    async with session.options(u, headers={"Origin": page, "Access-Control-Request-Method": "GET"}) as r:
        assert r.status == 204 and "If-None-Match" in r.headers["Access-Control-Allow-Headers"]
    async with session.get(u, headers={"Origin": page}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == page
        assert "Stream-Next-Offset" in r.headers["Access-Control-Expose-Headers"]
        etag = r.headers["ETag"]
    async with session.get(u, headers={"If-None-Match": etag}) as r:
        assert r.status == 304


async def test_auth_applies_to_durable_streams(start_hub: StartHub) -> None:
    hub = await start_hub(jwt_secret="a-test-secret-that-is-32-bytes-long!")
    token = hub.hub.auth.mint(read=["open/*"], write=["open/*"])
    async with aiohttp.ClientSession() as session:
        async with session.put(url(hub, "open/1")) as r:
            assert r.status == 401
        auth = {"Authorization": f"Bearer {token}"}
        async with session.put(url(hub, "open/1"), headers=auth) as r:
            assert r.status == 201
        async with session.put(url(hub, "closed/1"), headers=auth) as r:
            assert r.status == 403
        async with session.get(url(hub, "open/1"), headers=auth) as r:
            assert r.status == 200 and r.headers["Cache-Control"].startswith(("no-cache", "private"))
        # a fork reads its source: writing the fork is not enough
        admin = {"Authorization": f"Bearer {hub.hub.auth.mint(write=['secret/*'])}"}
        async with session.put(url(hub, "secret/1"), headers=admin, data="classified") as r:
            assert r.status == 201
        fork = {**auth, "Stream-Forked-From": "/v1/stream/secret/1"}
        async with session.put(url(hub, "open/leak"), headers=fork) as r:
            assert r.status == 403
        async with session.put(
            url(hub, "open/2"), headers={**auth, "Stream-Forked-From": "/v1/stream/open/1"}
        ) as r:
            assert r.status == 201
