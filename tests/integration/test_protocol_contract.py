"""The protocol as an outside client sees it (issue 11): frames over a real WebSocket and plain HTTP
requests against the real hub, one test per promise of docs/protocol.md that the hub once broke."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from typing import Any

import aiohttp
import msgspec

from bench.common import HubProcess


async def sse_events(r: aiohttp.ClientResponse, timeout: float = 10.0) -> list[dict[str, str]]:
    """Every event of an SSE response until the server ends it (comments skipped)."""
    events: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    async with asyncio.timeout(timeout):
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if cur:
                    events.append(cur)
                cur = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                cur[k] = v
    return events


# --- item 1: SSE end status after a reconnect ------------------------------------------------------


async def test_sse_reconnect_after_the_last_chunks_still_gets_the_end(hub, session):
    base = hub.http
    async with session.post(f"{base}/streams/e1?create=1", json={"data": ["a", "b"]}) as r:
        assert r.status == 200
    async with session.post(f"{base}/streams/e1/close", json={"status": "error", "error": "boom"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/streams/e1/sse") as r:
        events = await sse_events(r)
    assert [e.get("id") for e in events] == ["2", "2:end"]
    assert events[1]["event"] == "end"
    # a reader that got the chunks (id 2) but dropped before the end: reconnects and gets the end
    async with session.get(f"{base}/streams/e1/sse", headers={"Last-Event-ID": "2"}) as r:
        assert r.status == 200
        again = await sse_events(r)
    assert len(again) == 1 and again[0]["event"] == "end" and again[0]["id"] == "2:end"
    assert msgspec.json.decode(again[0]["data"]) == {"offset": 2, "status": "error", "error": "boom"}
    # one that got the end reconnects (as EventSource does) and is told to stop
    async with session.get(f"{base}/streams/e1/sse", headers={"Last-Event-ID": "2:end"}) as r:
        assert r.status == 204


async def test_sse_from_now_is_live_only(hub, session, connect):
    base = hub.http
    async with session.post(f"{base}/streams/live?create=1", json={"data": ["old"]}):
        pass
    async with session.get(f"{base}/streams/live/sse?from=now") as r:
        assert r.status == 200
        async with session.post(f"{base}/streams/live", json={"data": ["new"]}):
            pass
        async with session.post(f"{base}/streams/live/close", json={"status": "done"}):
            pass
        events = await sse_events(r)
    assert msgspec.json.decode(events[0]["data"]) == {"offset": 1, "data": ["new"]}
    assert events[-1]["event"] == "end"


# --- item 3: pipelined ops land in arrival order ---------------------------------------------------


async def test_pipelined_appends_with_create_land_in_order(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="p3", data="a", create=True, id="a")
    await ws.send(op="append", stream="p3", data="b", id="b")
    await ws.send(op="append", stream="p3", data="c", create=True, id="c")
    acks = {}
    while len(acks) < 3:
        f = await ws.recv()
        assert f["op"] == "ack", f
        acks[f["id"]] = f["offset"]
    assert acks == {"a": 0, "b": 1, "c": 2}
    await ws.send(op="subscribe", stream="p3")
    await ws.send(op="close", stream="p3", status="done")
    got, end = await ws.collect("p3")
    assert [d for _, d in got] == ["a", "b", "c"] and end["offset"] == 3


async def test_pipelined_create_then_append_and_subscribe(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="create", stream="p3b", id=1)
    await ws.send(op="subscribe", stream="p3b", id=2)
    await ws.send(op="append", stream="p3b", data="x", id=3)
    await ws.send(op="close", stream="p3b", id=4)
    seen = []
    deadline = time.monotonic() + 10
    want = {("ack", 3, 0), ("ack", 4, 1), ("chunks", None, 0), ("end", None, 1)}
    while not want <= set(seen):
        f = await ws.recv(max(0.01, deadline - time.monotonic()))
        assert f["op"] != "error", f
        seen.append((f["op"], f.get("id"), f.get("offset")))
    assert seen[0] == ("ack", 1, 0) and seen[1] == ("subscribed", 2, 0)
    # the subscriber's end may overtake the acks (acks go out once durable, frames once published)
    assert seen.index(("chunks", None, 0)) < seen.index(("end", None, 1))


async def test_ops_behind_a_failed_create_still_run_in_order(hub, connect, session):
    async with session.put(f"{hub.http}/streams/p3c"):
        pass
    ws = await connect(hub.ws_url)
    await ws.send(op="create", stream="p3c", exist_ok=False, id=1)  # refused: it exists
    await ws.send(op="append", stream="p3c", data="y", id=2)
    f1, f2 = await ws.recv(), await ws.recv()
    assert (f1["op"], f1["code"], f1["id"]) == ("error", "stream_exists", 1)
    assert (f2["op"], f2["id"], f2["offset"]) == ("ack", 2, 0)


# --- item 4: a deleted id is not created again while its tombstone lives ---------------------------


async def test_deleted_id_answers_gone_on_every_create_path(hub, connect, session):
    base = hub.http
    async with session.post(f"{base}/streams/g4?create=1", json={"data": ["old0", "old1", "old2"]}):
        pass
    async with session.delete(f"{base}/streams/g4") as r:
        assert r.status == 204
    ws = await connect(hub.ws_url)
    await ws.send(op="create", stream="g4", id=1)
    f = await ws.recv_op("error")
    assert (f["code"], f["id"], f["stream"]) == ("stream_gone", 1, "g4")
    await ws.send(op="append", stream="g4", data="NEW", create=True, id=2)
    f = await ws.recv_op("error")
    assert (f["code"], f["id"]) == ("stream_gone", 2)
    async with session.put(f"{base}/streams/g4") as r:
        assert r.status == 410 and (await r.json())["error"]["code"] == "stream_gone"
    async with session.post(f"{base}/streams/g4?create=1", json={"data": "NEW"}) as r:
        assert r.status == 410 and (await r.json())["error"]["code"] == "stream_gone"
    async with session.post(f"{base}/streams/other/fork", json={"stream": "g4"}) as r:
        assert r.status in (404, 410)
    # a reader holding an offset of the old stream is told it is gone, never fed new data
    async with session.get(f"{base}/streams/g4/sse", headers={"Last-Event-ID": "3"}) as r:
        assert r.status == 410
    await ws.send(op="subscribe", stream="g4", **{"from": 3}, id=3)
    f = await ws.recv_op("error")
    assert (f["code"], f["id"]) == ("stream_gone", 3)


# --- item 5: 4408 ----------------------------------------------------------------------------------


def _ws_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x80 | opcode]) + (
        bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack("!H", n)
    )
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _ping_flood_then_read(port: int, pings: int) -> tuple[int, int | None]:
    """Send ``pings`` ping ops without reading a byte (stop once the hub stops reading), then read
    everything: (pongs received, close code or None)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    batch = b"".join(_ws_frame(b'{"op":"ping","t":%d}' % i) for i in range(1000))
    s.settimeout(2.0)
    try:
        for _ in range(pings // 1000):
            s.sendall(batch)
    except (TimeoutError, ConnectionError):
        pass  # the hub stopped reading us: it is closing
    s.settimeout(15.0)
    buf = bytearray()
    try:
        while chunk := s.recv(1 << 16):
            buf += chunk
    except (TimeoutError, ConnectionError):
        pass  # the hub gives up on a close reply after a few seconds
    finally:
        s.close()
    head = buf.index(b"\r\n\r\n") + 4
    pos, pongs, code = head, 0, None
    while pos + 2 <= len(buf):
        op, n = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n = struct.unpack("!H", buf[pos : pos + 2])[0]
            pos += 2
        elif n == 127:
            n = struct.unpack("!Q", buf[pos : pos + 8])[0]
            pos += 8
        if pos + n > len(buf):
            break
        body = bytes(buf[pos : pos + n])
        pos += n
        if op == 0x1 and b'"pong"' in body:
            pongs += 1
        elif op == 0x8:
            code = struct.unpack("!H", body[:2])[0]
            break
    return pongs, code


async def test_a_client_that_never_reads_its_pongs_gets_4408(start_hub):
    hub = await start_hub(outbox_bytes=16 << 10, socket_sndbuf=16 << 10)
    loop = asyncio.get_running_loop()
    pongs, code = await loop.run_in_executor(None, _ping_flood_then_read, hub.server.port, 200_000)
    assert code == 4408, (pongs, code)
    assert 0 < pongs < 200_000


# --- items 6 and 7: one code per bad input, on every transport, with the request id -----------------

WS_BAD = [
    ({"op": "append", "stream": "e6", "data": [], "id": 1}, "bad_request"),
    ({"op": "close", "stream": "e6", "status": "finished", "id": 2}, "bad_request"),
    ({"op": "subscribe", "stream": "e6", "from": 1.5, "id": 3}, "invalid_offset"),
    ({"op": "subscribe", "stream": "e6", "from": -1, "id": "s"}, "invalid_offset"),
    ({"op": "subscribe", "stream": "e6", "from": "later", "id": 4}, "invalid_offset"),
    ({"stream": "e6", "id": 5}, "malformed_frame"),  # no op
    ({"op": 5, "stream": "e6", "id": 51}, "malformed_frame"),  # an op that is not a string
    ({"op": "subscribe", "stream": "e6", "from": None, "id": 31}, "invalid_offset"),
    ({"op": "subscribe", "stream": "e6", "from": True, "id": 32}, "invalid_offset"),
    ({"op": "append", "stream": "e6", "data": "x", "producer": "p", "seq": -1, "id": 33}, "bad_request"),
    ({"op": "launch", "stream": "e6", "id": 6}, "unknown_op"),
    ({"op": "append", "stream": "e6", "data": 5, "id": 7}, "malformed_frame"),
    ({"op": "append", "stream": "e6", "data": "x", "bogus": 1, "id": 8}, "malformed_frame"),
    ({"op": "append", "stream": "e6", "data": "x", "producer": "p", "id": 9}, "bad_request"),
    ({"op": "append", "stream": "e6", "data": "x", "seq": 1, "id": 10}, "bad_request"),
    ({"op": "append", "stream": "e6", "data": "x", "producer": "p", "seq": 1 << 53, "id": 11}, "bad_request"),
    ({"op": "create", "stream": "e6", "ttl": -1, "id": 12}, "bad_request"),
    ({"op": "subscribe", "stream": "e6", "coalesce_ms": -1, "id": 13}, "bad_request"),
    ({"op": "subscribe", "stream": "e6", "from": 99, "id": 14}, "offset_out_of_range"),
]


async def test_websocket_bad_input_codes_carry_the_request_id(hub, connect, session):
    async with session.put(f"{hub.http}/streams/e6"):
        pass
    ws = await connect(hub.ws_url)
    for frame, code in WS_BAD:
        await ws.send(**frame)
        f = await ws.recv()
        assert (f["op"], f["code"], f.get("id"), f.get("stream")) == ("error", code, frame["id"], "e6"), (
            frame,
            f,
        )
        if frame.get("seq") == 1 << 53:
            assert "between 0 and 9007199254740991" in f["message"]
    await ws.ws.send_str("[1]")  # not an object: no id to echo, still an error and the connection lives
    assert (await ws.recv())["code"] == "malformed_frame"
    await ws.send(op="ping", t=1)
    assert (await ws.recv())["op"] == "pong"
    async with session.get(f"{hub.http}/streams/e6") as r:
        assert (await r.json())["chunks"] == []  # nothing refused was written


async def test_http_bad_input_codes_match_the_websocket(hub, session):
    base = hub.http
    async with session.put(f"{base}/streams/h6"):
        pass
    cases: list[tuple[str, str, dict[str, Any], int, str]] = [
        ("POST", "/streams/h6", {"json": {"data": "x", "bogus": 1}}, 400, "malformed_frame"),
        ("POST", "/streams/h6", {"json": {"data": 5}}, 400, "malformed_frame"),
        ("POST", "/streams/h6", {"json": {"data": []}}, 400, "bad_request"),
        ("POST", "/streams/h6/close", {"json": {"status": "finished"}}, 400, "bad_request"),
        (
            "POST",
            "/streams/h6",
            {"json": {"data": "x"}, "headers": {"Producer-Seq": "1"}},
            400,
            "bad_request",
        ),
        ("POST", "/streams/h6", {"json": {"data": "x"}, "headers": {"Producer-Id": "p"}}, 400, "bad_request"),
        ("PUT", "/streams/h7", {"json": {"ttl": -1}}, 400, "bad_request"),
        ("GET", "/streams/h6?from=1.5", {}, 400, "invalid_offset"),
        ("GET", "/streams/h6/sse?from=-1", {}, 400, "invalid_offset"),
        ("POST", "/streams/h6", {"json": {"data": "x" * (2 << 20)}}, 413, "body_too_large"),
    ]
    for method, path, kw, status, code in cases:
        async with session.request(method, base + path, **kw) as r:
            assert r.status == status, (path, kw.get("json", {}).keys(), r.status)
            assert r.content_type == "application/json"
            assert (await r.json())["error"]["code"] == code, (path, status)
    async with session.get(f"{base}/streams/h6") as r:
        assert (await r.json())["chunks"] == []


async def test_a_client_reset_mid_body_logs_no_traceback(tmp_path):
    hub = HubProcess(tmp_path / "data", log=tmp_path / "hub.log", args=["--access-log", "on"])
    await hub.start()
    try:
        loop = asyncio.get_running_loop()
        for method, path in (
            ("POST", "/streams/r?create=1"),
            ("PUT", "/v1/stream/d"),
            ("POST", "/v1/stream/d"),
        ):
            await loop.run_in_executor(None, _reset_mid_body, hub.port, method, path)
        async with aiohttp.ClientSession() as s, s.get(f"{hub.url}/healthz") as r:
            assert r.status == 200  # and still serving
    finally:
        await hub.stop()
    log = (tmp_path / "hub.log").read_text()
    assert "Traceback" not in log and "Error handling request" not in log, log[-2000:]
    assert log.count("/v1/stream/d") >= 2  # the requests did reach the hub (access log)


def _reset_mid_body(port: int, method: str, path: str) -> None:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\n"
        "Content-Length: 100000\r\n\r\npartial".encode()
    )
    time.sleep(0.2)  # the handler is reading the body (this runs in a worker thread)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
    s.close()
    time.sleep(0.2)


def _close_code_after(port: int, frame: bytes) -> int | None:
    """Send one raw frame on a fresh WebSocket and return the close code the hub answers with."""
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        + frame
    )
    s.settimeout(10.0)
    buf = bytearray()
    try:
        while chunk := s.recv(1 << 16):
            buf += chunk
            if b"\r\n\r\n" in buf:
                rest = buf[buf.index(b"\r\n\r\n") + 4 :]
                if len(rest) >= 4 and rest[0] & 0x0F == 0x8:
                    return int(struct.unpack("!H", rest[2:4])[0])
    except (TimeoutError, ConnectionError):
        pass
    finally:
        s.close()
    return None


async def test_documented_close_codes_and_defaults(hub, connect):
    loop = asyncio.get_running_loop()
    # 1007: a text frame that is not UTF-8
    assert (
        await loop.run_in_executor(None, _close_code_after, hub.server.port, _ws_frame(b"\xff\xfe")) == 1007
    )
    # a close without status means done
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="d7", data="x", create=True, id=1)
    await ws.recv_op("ack")
    await ws.send(op="close", stream="d7", id=2)
    assert (await ws.recv_op("ack"))["id"] == 2
    await ws.send(op="subscribe", stream="d7")
    got, end = await ws.collect("d7")
    assert got == [(0, "x")] and end["status"] == "done"
    # a producer's first seq may be any value (0 included); then last + 1, or sequence_gap
    await ws.send(op="append", stream="d8", data="a", create=True, producer="p", seq=0, id=3)
    assert (await ws.recv_op("ack"))["offset"] == 0
    await ws.send(op="append", stream="d8", data="c", producer="p", seq=2, id=4)
    assert (await ws.recv_op("error"))["code"] == "sequence_gap"


async def test_replaced_and_ended_subscriptions(start_hub, connect, session):
    hub = await start_hub(max_subscriptions=1)
    data = [f"c{i}" for i in range(3000)]
    async with session.post(f"{hub.http}/streams/rs?create=1", json={"data": data}) as r:
        assert r.status == 200
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream="rs", id="old")
    await ws.send(op="subscribe", stream="rs", **{"from": 2990}, id="new")  # replaces it at once
    seen_new = False
    got: list[tuple[int, str]] = []
    while len(got) < 10:
        f = await ws.recv()
        if f["op"] == "subscribed":
            seen_new = f["id"] == "new"
        elif f["op"] == "chunks" and seen_new:  # after the newer subscribed: only the new position
            assert f["offset"] == 2990 + len(got), f["offset"]
            got += list(enumerate(f["data"], f["offset"]))
    assert [d for _, d in got] == data[2990:]
    # an ended stream's subscription ends with its end frame: with room for one, both fit in turn
    for sid in ("end1", "end2"):
        async with session.post(f"{hub.http}/streams/{sid}?create=1", json={"data": ["x"]}):
            pass
        async with session.post(f"{hub.http}/streams/{sid}/close", json={"status": "done"}):
            pass
    await ws.send(op="unsubscribe", stream="rs")
    await ws.recv_op("unsubscribed")
    for sid in ("end1", "end2"):
        await ws.send(op="subscribe", stream=sid)
        _, end = await ws.collect(sid)
        assert end["status"] == "done"
