"""HTTP producer API, JSON reads, SSE resume, admin endpoints, against the real hub."""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec


async def test_http_produce_read_and_idempotent_retry(hub, session):
    base = hub.http
    async with session.put(f"{base}/streams/chat/1/a", json={"labels": {"chat": "1"}}) as r:
        assert r.status == 201
    async with session.put(f"{base}/streams/chat/1/a") as r:
        assert r.status == 200  # create is idempotent
    hdr = {"Producer-Id": "llm-7", "Producer-Seq": "1"}
    async with session.post(f"{base}/streams/chat/1/a", json={"data": ["Hel", "lo"]}, headers=hdr) as r:
        assert r.status == 200
        first = await r.json()
    async with session.post(f"{base}/streams/chat/1/a", json={"data": ["Hel", "lo"]}, headers=hdr) as r:
        retry = await r.json()
    assert first["offset"] == retry["offset"] == 0 and retry["duplicate"] is True
    hdr["Producer-Seq"] = "2"
    async with session.post(f"{base}/streams/chat/1/a", data=" world", headers=hdr) as r:
        assert (await r.json())["offset"] == 2
    async with session.post(f"{base}/streams/chat/1/a/close", json={"status": "done"}) as r:
        assert r.status == 200
    async with session.get(f"{base}/streams/chat/1/a?from=1") as r:
        body = await r.json()
    assert body["chunks"] == ["lo", " world"] and body["next"] == 3 and body["status"] == "done"
    async with session.post(f"{base}/streams/chat/1/a", json={"data": "late"}) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "stream_closed"


async def test_http_errors_have_stable_codes(hub, session):
    base = hub.http
    cases = [
        ("GET", "/streams/missing", None, 404, "stream_not_found"),
        ("POST", "/streams/missing", {"data": "x"}, 404, "stream_not_found"),
        ("GET", "/streams/x?from=-3", None, None, None),
        ("PUT", "/streams/x", None, 201, None),
        ("GET", "/streams/x?from=-3", None, 400, "invalid_offset"),
        ("GET", "/streams/x?from=abc", None, 400, "invalid_offset"),
        ("GET", "/streams/x?from=99", None, 416, "offset_out_of_range"),
        ("POST", "/streams/x", {"data": 5}, 400, "malformed_frame"),  # a wrong type, as over WebSocket
        ("POST", "/streams/x", {"data": []}, 400, "bad_request"),
        ("POST", "/streams/x/close", {"status": "weird"}, 400, "bad_request"),
        ("GET", "/admin/stats", None, 401, "unauthorized"),
        ("GET", "/metrics", None, 401, "unauthorized"),
    ]
    for method, path, body, status, code in cases:
        async with session.request(method, base + path, json=body) as r:
            if status is None:
                continue
            assert r.status == status, (path, r.status, await r.text())
            if code:
                assert (await r.json())["error"]["code"] == code
    async with session.post(
        f"{base}/streams/x", data=b"{not json", headers={"Content-Type": "application/json"}
    ) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "malformed_frame"
    big = "y" * (hub.config.max_chunk_bytes + 1)
    async with session.post(f"{base}/streams/x", json={"data": big}) as r:
        assert r.status == 413 and (await r.json())["error"]["code"] == "chunk_too_large"


async def _sse_events(resp: aiohttp.ClientResponse, until_end: bool = True, max_events: int = 10**6):
    events = []
    cur: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if cur:
                events.append(cur)
                if (until_end and cur.get("event") == "end") or len(events) >= max_events:
                    return events
            cur = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            cur[k] = cur.get(k, "") + v
    return events


async def test_sse_resumes_with_last_event_id(hub, session):
    base = hub.http
    async with session.put(f"{base}/streams/sse") as r:
        assert r.status == 201
    for i in range(10):
        async with session.post(f"{base}/streams/sse", json={"data": f"t{i}"}):
            pass
    async with session.get(f"{base}/streams/sse/sse") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        first = await _sse_events(r, until_end=False, max_events=1)
    got = msgspec.json.decode(first[0]["data"])["data"]
    last_id = first[0]["id"]
    assert int(last_id) == len(got)

    async def finish() -> None:
        for i in range(10, 20):
            async with session.post(f"{base}/streams/sse", json={"data": f"t{i}"}):
                pass
        async with session.post(f"{base}/streams/sse/close", json={"status": "done"}):
            pass

    async with session.get(f"{base}/streams/sse/sse", headers={"Last-Event-ID": last_id}) as r:
        fin = asyncio.create_task(finish())
        rest = await _sse_events(r)
        await fin
    for e in rest[:-1]:
        got += msgspec.json.decode(e["data"])["data"]
    assert got == [f"t{i}" for i in range(20)]
    assert rest[-1]["event"] == "end" and msgspec.json.decode(rest[-1]["data"])["status"] == "done"
    # an EventSource reconnecting after the end (whose id is "20:end") gets 204 and stops
    assert rest[-1]["id"] == "20:end"
    async with session.get(f"{base}/streams/sse/sse", headers={"Last-Event-ID": "20:end"}) as r:
        assert r.status == 204


async def test_admin_stats_stream_stats_and_metrics(hub, session, connect):
    base = hub.http
    async with session.put(f"{base}/streams/adm"):
        pass
    async with session.post(f"{base}/streams/adm", json={"data": ["a", "b", "c"]}):
        pass
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream="adm", **{"from": 1})
    await ws.recv_op("chunks")
    h = hub.admin_headers()
    async with session.get(f"{base}/admin/stats", headers=h) as r:
        s = await r.json()
    for key in (
        "streams_open",
        "streams_closed",
        "subscribers",
        "connections",
        "appends_per_s",
        "deliveries_per_s",
        "bytes_raw",
        "bytes_stored",
        "resumes",
        "reconnects",
        "slow_consumer_drops",
        "repairs",
    ):
        assert key in s, key
    assert s["streams"] == 1 and s["subscribers"] == 1 and s["resumes"] == 1 and s["bytes_raw"] == 3
    async with session.get(f"{base}/admin/streams/adm", headers=h) as r:
        one = await r.json()
    assert one["chunks"] == 3 and one["subscribers"] == 1 and one["status"] == "open" and one["resumes"] == 1
    async with session.get(f"{base}/metrics", headers=h) as r:
        text = await r.text()
    assert "rhub_subscribers 1.0" in text and "rhub_appended_chunks_total 3.0" in text
    async with session.get(f"{base}/admin/stats", headers={"Authorization": "Bearer wrong"}) as r:
        assert r.status == 401


async def test_cors_for_the_stream_api_and_sse(start_hub, session):
    hub = await start_hub(allowed_origins=["https://app.example"])
    base = hub.http
    async with session.put(f"{base}/streams/cors") as r:
        assert r.status == 201
    pre = {
        "Origin": "https://app.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with session.options(f"{base}/streams/cors", headers=pre) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    async with session.post(
        f"{base}/streams/cors", json={"data": "x"}, headers={"Origin": "https://app.example"}
    ) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "https://app.example"
    async with session.post(f"{base}/streams/cors/close", json={}, headers={"Origin": "https://app.example"}):
        pass
    async with session.get(f"{base}/streams/cors/sse", headers={"Origin": "https://app.example"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"  # SSE too
        await r.read()
    async with session.get(f"{base}/streams/cors", headers={"Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers  # the browser will refuse to show it
    async with session.options(
        f"{base}/streams/cors", headers={**pre, "Origin": "https://evil.example"}
    ) as r:
        assert "Access-Control-Allow-Origin" not in r.headers
    async with session.get(f"{base}/admin/stats", headers={"Origin": "https://app.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers  # never the admin API
