"""Analytics against the real hub: a scripted session (answers, a reload, an offline gap, an SSE resume,
a slow reader, a cancel, a lost producer, a fork), then /metrics and /admin/usage values; usage counted
once (unchanged by replays), kept across a restart, and POSTed to a real local webhook receiver."""

from __future__ import annotations

import hashlib
import hmac
import logging
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from bench.load import never_reader

from .conftest import WS, Running, wait_for

SECRET = "whsec-test"


@dataclass
class Receiver:
    """A real webhook endpoint on 127.0.0.1: records what it gets; ``fail_first`` answers 503 first."""

    fail_first: int = 0
    status: int = 200
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    calls: int = 0
    server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        if self.status != 200:
            return web.Response(status=self.status)
        self.got.append((dict(request.headers), body))
        return web.Response(status=204)

    def url(self, query: str = "") -> str:
        assert self.server is not None
        return str(self.server.make_url("/usage")) + query

    def records(self) -> dict[str, dict[str, Any]]:
        return {msgspec.json.decode(b)["stream"]: msgspec.json.decode(b) for _, b in self.got}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(fail_first=1)
    app = web.Application()
    app.router.add_post("/usage", rec.handle)
    rec.server = TestServer(app, host="127.0.0.1", port=0)
    await rec.server.start_server()
    yield rec
    await rec.server.close()


def metrics(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def total(samples: list[Any], suffix: str) -> float:
    return sum(s.value for s in samples if s.name.endswith(suffix))


async def produce(ws: WS, stream: str, chunks: list[str], start_id: int = 0) -> None:
    for i, c in enumerate(chunks):
        await ws.send(op="append", stream=stream, data=c, id=start_id + i)
        await ws.recv_op("ack")


async def create(ws: WS, stream: str, labels: dict[str, str]) -> None:
    await ws.send(op="create", stream=stream, labels=labels, id="c")
    await ws.recv_op("ack")


async def close(ws: WS, stream: str, status: str = "done") -> None:
    await ws.send(op="close", stream=stream, status=status, id="x")
    await ws.recv_op("ack")


async def read_all(ws: WS, stream: str, offset: int = 0) -> list[tuple[int, str]]:
    await ws.send(op="subscribe", stream=stream, **{"from": offset})
    got, end = await ws.collect(stream)
    return got


async def sse_events(resp: aiohttp.ClientResponse, n: int | None = None) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if cur:
                events.append(cur)
                if cur.get("event") == "end" or (n is not None and len(events) >= n):
                    return events
            cur = {}
        elif not line.startswith(":"):
            k, _, v = line.partition(": ")
            cur[k] = cur.get(k, "") + v
    return events


def words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-tok{i} é" for i in range(n)]  # not ASCII: bytes are counted, not characters


async def scripted_session(h: Running, session: aiohttp.ClientSession, connect: Any) -> dict[str, int]:
    """Every kind of traffic analytics measures; returns the bytes appended per tenant."""
    appended: dict[str, int] = {}

    def count(tenant: str, chunks: list[str]) -> None:
        appended[tenant] = appended.get(tenant, 0) + sum(len(c.encode()) for c in chunks)

    # 1. an answer read over WebSocket, with a reload (close + resume at once) and an offline gap
    #    (chunks appended while the reader is away, then a resume that replays them)
    prod = await connect(h.ws_url)
    await create(prod, "a/1", {"tenant": "acme", "model": "m1"})
    text = words("a1", 30)
    reader = await connect(h.ws_url)
    await reader.send(op="subscribe", stream="a/1")
    await reader.recv_op("subscribed")
    await produce(prod, "a/1", text[:10])
    got: list[str] = []
    while len(got) < 10:
        got += (await reader.recv_op("chunks"))["data"]
    await reader.ws.close()  # reload
    await wait_for(lambda: h.hub.fanout.count("a/1") == 0, what="the reload seen")
    reader = await connect(h.ws_url)
    await reader.send(op="subscribe", stream="a/1", **{"from": 10})
    await reader.recv_op("subscribed")
    await produce(prod, "a/1", text[10:15], 10)
    while len(got) < 15:
        got += (await reader.recv_op("chunks"))["data"]
    await reader.ws.close()  # offline
    await wait_for(lambda: h.hub.fanout.count("a/1") == 0, what="the offline reader seen leaving")
    await produce(prod, "a/1", text[15:25], 15)  # missed while away
    reader = await connect(h.ws_url)
    await reader.send(op="subscribe", stream="a/1", **{"from": 15})
    await produce(prod, "a/1", text[25:], 25)
    await close(prod, "a/1")
    rest, end = await reader.collect("a/1")
    assert got + [d for _, d in rest] == text and end["status"] == "done"
    count("acme", text)

    # 2. an answer read over SSE, which drops and resumes with Last-Event-ID
    http = h.http
    text2 = words("a2", 20)
    await create(prod, "a/2", {"tenant": "globex", "model": "m2"})
    await produce(prod, "a/2", text2[:8])
    async with session.get(f"{http}/streams/a/2/sse") as r:
        first = await sse_events(r, 1)
    last_id = first[0]["id"]
    await produce(prod, "a/2", text2[8:], 8)
    await close(prod, "a/2")
    async with session.get(f"{http}/streams/a/2/sse", headers={"Last-Event-ID": last_id}) as r:
        rest_sse = await sse_events(r)
    seen = msgspec.json.decode(first[0]["data"])["data"]
    for e in rest_sse[:-1]:
        seen += msgspec.json.decode(e["data"])["data"]
    assert seen == text2
    count("globex", text2)

    # 3. a slow reader: a socket that never reads, dropped to replay
    await create(prod, "a/3", {"tenant": "acme", "model": "m1"})
    slow = never_reader(h.server.port, "a/3", start="0")
    await wait_for(lambda: h.hub.fanout.count("a/3") == 1, what="the slow reader")
    big = ["z" * 2000] * 50
    for i in range(30):  # 3 MB: far past the slow socket's buffers and its outbox
        await prod.send(op="append", stream="a/3", data=big, id=i)
        await prod.recv_op("ack")
        count("acme", big)
    await close(prod, "a/3")
    assert h.hub.fanout.stats.slow_drops >= 1
    slow.close()

    # 4. a cancel: a reader presses Stop, the producer is told and ends the answer as cancelled
    text4 = words("a4", 6)
    await create(prod, "a/4", {"tenant": "globex", "model": "m1"})
    await produce(prod, "a/4", text4)
    stopper = await connect(h.ws_url)
    await stopper.send(op="cancel", stream="a/4", id="stop")
    await stopper.recv_op("ack")
    assert (await prod.recv_op("cancel"))["stream"] == "a/4"
    await close(prod, "a/4", "cancelled")
    count("globex", text4)

    # 5. a producer that goes away: its lease ends the answer as producer_lost
    lost = await connect(h.ws_url)
    text5 = words("a5", 4)
    await create(lost, "a/5", {"tenant": "initech"})
    await produce(lost, "a/5", text5)
    await lost.ws.close()
    count("initech", text5)
    await wait_for(lambda: h.hub.store.get("a/5").ended, timeout=15, what="the lease to end a/5")

    # 6. a fork of a/1 ("regenerate from here"): shares its chunks, generates none until appended to
    async with session.post(
        f"{http}/streams/a/1/fork", json={"stream": "f/1", "labels": {"tenant": "acme"}}
    ) as r:
        assert r.status == 201, await r.text()
    async with session.post(f"{http}/streams/f/1", json={"data": ["fork-only"]}) as r:
        assert r.status == 200
    count("acme", ["fork-only"])
    async with session.post(f"{http}/streams/f/1/close", json={"status": "done"}) as r:
        assert r.status == 200
    return appended


async def usage(h: Running, session: aiohttp.ClientSession, **q: Any) -> dict[str, Any]:
    async with session.get(f"{h.http}/admin/usage", params=q, headers=h.admin_headers()) as r:
        assert r.status == 200, await r.text()
        out: dict[str, Any] = await r.json()
        return out


def by_value(body: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {g["value"]: g for g in body["groups"]}


async def test_scripted_session_metrics_usage_and_webhook(start_hub, session, connect, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    t_start = time.time()
    h = await start_hub(
        outbox_bytes=64 << 10,
        producer_lease_s=1.0,
        usage_webhook=receiver.url("?token=s3cret-in-url"),
        usage_webhook_secret=SECRET,
    )
    appended = await scripted_session(h, session, connect)

    # --- /metrics: the five named figures have counts, and sane values
    async with session.get(f"{h.http}/metrics", headers=h.admin_headers()) as r:
        assert r.status == 200
        m = metrics(await r.text())
    for name in (
        "rhub_delivery_lag_seconds",
        "rhub_resume_gap_seconds",
        "rhub_resume_missed_chunks",
        "rhub_time_to_first_chunk_seconds",
    ):
        assert total(m[name], "_count") > 0, name
    lag = m["rhub_delivery_lag_seconds"]
    assert 0 < total(lag, "_sum") / total(lag, "_count") < 2.0  # a mean lag under 2 s, on a loaded machine
    inf = [s for s in lag if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"][0].value
    assert inf == total(lag, "_count")
    missed = m["rhub_resume_missed_chunks"]
    assert total(missed, "_sum") >= 10  # the offline gap missed 10 chunks
    gaps = m["rhub_resume_gap_seconds"]
    transports = {s.labels["transport"] for s in gaps if s.name.endswith("_count")}
    assert {"ws", "sse"} <= transports
    assert 0 < total(gaps, "_sum") / total(gaps, "_count") < 60
    ttfc = m["rhub_time_to_first_chunk_seconds"]
    assert total(ttfc, "_count") == 6  # six answers with a first chunk: a/1-a/5 and the fork
    assert 0 < total(ttfc, "_sum") / 6 < 30
    outcomes = {s.labels["status"]: s.value for s in m["rhub_answer_outcomes"]}
    assert outcomes == {"done": 4, "error": 0, "cancelled": 1, "producer_lost": 1}
    assert total(m["rhub_replay_duration_seconds"], "_count") >= 3
    delivered = {(s.labels["transport"], s.labels["kind"]): s.value for s in m["rhub_delivered_bytes"]}
    assert delivered[("ws", "live")] > 0 and delivered[("ws", "replay")] > 0
    assert delivered[("sse", "live")] + delivered[("sse", "replay")] > 0
    assert total(m["rhub_generated_bytes"], "_total") == sum(appended.values())

    # --- /admin/usage: what the producers appended, per tenant, counted once
    body = await usage(h, session, label="tenant", since=t_start - 1)
    groups = by_value(body)
    assert {k: g["bytes"] for k, g in groups.items()} == appended
    assert groups["acme"]["answers"] == 3 and groups["acme"]["outcomes"] == {"done": 3}
    assert groups["initech"]["outcomes"] == {"producer_lost": 1}
    assert groups["globex"]["outcomes"] == {"done": 1, "cancelled": 1}
    assert body["total"]["bytes"] == sum(appended.values())
    assert body["total"]["chunks"] == 30 + 20 + 1500 + 6 + 4 + 1
    by_model = by_value(await usage(h, session, label="model"))
    assert set(by_model) == {"m1", "m2", None}
    assert (await usage(h, session, since=time.time() + 60))["total"]["bytes"] == 0

    # 10 more replays, over WebSocket and SSE: generated usage does not move, delivered does
    reader = await connect(h.ws_url)
    for i in range(10):
        if i % 2:
            async with session.get(f"{h.http}/streams/a/1/sse") as r:
                await sse_events(r)
        else:
            assert len(await read_all(reader, "a/1")) == 30
    again = await usage(h, session, label="tenant", since=t_start - 1)
    assert {g["value"]: g["bytes"] for g in again["groups"]} == appended
    assert again["total"]["chunks"] == body["total"]["chunks"]
    async with session.get(f"{h.http}/metrics", headers=h.admin_headers()) as r:
        m2 = metrics(await r.text())
    assert total(m2["rhub_generated_bytes"], "_total") == sum(appended.values())
    assert total(m2["rhub_delivered_bytes"], "_total") > total(m["rhub_delivered_bytes"], "_total")

    # --- the webhook: one record per ended answer, signed, retried past the receiver's first 503
    await wait_for(lambda: len(receiver.got) >= 6, timeout=20, what="six usage records")
    recs = receiver.records()
    assert set(recs) == {"a/1", "a/2", "a/3", "a/4", "a/5", "f/1"}
    a1 = recs["a/1"]
    assert a1["status"] == "done" and a1["chunks"] == 30 and a1["labels"]["tenant"] == "acme"
    assert a1["bytes"] == sum(len(c.encode()) for c in words("a1", 30))
    assert a1["resumes"] >= 2 and a1["delivered_bytes"]["ws"] > 0
    assert a1["time_to_first_chunk_s"] is not None and a1["time_to_first_chunk_s"] >= 0
    assert recs["a/4"]["status"] == "cancelled"
    assert recs["a/5"]["status"] == "producer_lost" and recs["a/5"]["error"] == "producer_lost"
    assert recs["f/1"]["chunks"] == 1  # the fork's shared chunks are not its usage
    for headers, raw in receiver.got:
        sig = hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
        assert headers["X-Rhub-Signature"] == f"sha256={sig}"
        assert headers["Idempotency-Key"] == msgspec.json.decode(raw)["id"]
    assert h.hub.usage.webhook is not None and h.hub.usage.webhook.retries >= 1
    hub_logs = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("hub"))
    assert "s3cret-in-url" not in hub_logs and SECRET not in hub_logs  # (the receiver's own log shows it)


async def test_stream_timeline_and_live_table(hub, session, connect):
    prod = await connect(hub.ws_url)
    await create(prod, "t/1", {"tenant": "acme"})
    reader = await connect(hub.ws_url)
    await reader.send(op="subscribe", stream="t/1")
    await reader.recv_op("subscribed")
    await produce(prod, "t/1", ["a", "b", "c"])
    for _ in range(3):
        await reader.recv_op("chunks")
    await reader.ws.close()
    await wait_for(lambda: hub.hub.fanout.count("t/1") == 0, what="the reader gone")
    reader = await connect(hub.ws_url)
    await reader.send(op="subscribe", stream="t/1", **{"from": 3})
    await reader.recv_op("subscribed")
    h = hub.admin_headers()
    async with session.get(f"{hub.http}/admin/live", headers=h) as r:
        rows = {row["stream"]: row for row in (await r.json())["streams"]}
    assert rows["t/1"]["subscribers"] == 1 and rows["t/1"]["chunks"] == 3
    assert rows["t/1"]["labels"] == {"tenant": "acme"}
    async with session.get(f"{hub.http}/admin/timeline/t/1", headers=h) as r:
        assert r.status == 200
        tl = await r.json()
    assert sum(tl["timeline"]["chunks"]) == 3
    assert [e["kind"] for e in tl["events"]] == ["join", "leave", "resume"]
    await close(prod, "t/1")
    await reader.collect("t/1")
    async with session.get(f"{hub.http}/admin/timeline/t/1", headers=h) as r:
        assert (await r.json())["status"] == "done"  # ended rows stay for the stream page
    async with session.get(f"{hub.http}/admin/timeline/nope", headers=h) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "stream_not_found"
    # the dashboard's pages and uPlot are served without --demo; their data needs the token
    for path in ("/admin", "/admin/stream?id=t/1", "/admin/static/vendor/uPlot.iife.min.js"):
        async with session.get(f"{hub.http}{path}") as r:
            assert r.status == 200, path
    for path in ("/admin/series", "/admin/usage", "/admin/live", "/admin/timeline/t/1"):
        async with session.get(f"{hub.http}{path}") as r:
            assert r.status == 401, path
    async with session.get(f"{hub.http}/admin/usage", params={"label": "bad label!"}, headers=h) as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
    async with session.get(f"{hub.http}/admin/usage", params={"since": "yesterday"}, headers=h) as r:
        assert r.status == 400
    async with session.get(f"{hub.http}/admin/series", headers=h) as r:
        s = await r.json()
    assert 1 <= len(s["series"]["t"]) <= 900 and s["distributions"]["resume_gap_s"]["counts"]


async def test_usage_survives_a_restart_even_mid_answer(start_hub, session, connect, tmp_path):
    data = tmp_path / "kept"
    h = await start_hub(data_dir=data)
    prod = await connect(h.ws_url)
    await create(prod, "r/1", {"tenant": "acme"})
    await produce(prod, "r/1", ["one", "two"])
    await close(prod, "r/1")
    await create(prod, "r/2", {"tenant": "acme"})
    await produce(prod, "r/2", ["three"])  # still open when the hub stops
    await prod.ws.close()
    before = await usage(h, session, label="tenant")
    assert by_value(before)["acme"]["bytes"] == 11 and by_value(before)["acme"]["open"] == 1
    await h.server.close()

    h2 = await start_hub(data_dir=data)
    assert h2.hub.usage.restored == 1
    after = await usage(h2, session, label="tenant")
    assert by_value(after)["acme"]["bytes"] == 11
    prod = await connect(h2.ws_url)
    await produce(prod, "r/2", ["four"])
    await close(prod, "r/2")
    done = by_value(await usage(h2, session, label="tenant"))["acme"]
    assert done["bytes"] == 15 and done["answers"] == 2 and done["open"] == 0 and done["chunks"] == 4


async def test_webhook_refused_record_is_not_retried_and_hub_keeps_serving(
    start_hub, session, connect, receiver, caplog
):
    receiver.fail_first, receiver.status = 0, 400
    h = await start_hub(usage_webhook=receiver.url("?key=s3cret"))
    prod = await connect(h.ws_url)
    for i in range(3):
        await create(prod, f"w/{i}", {})
        await produce(prod, f"w/{i}", ["x"])
        await close(prod, f"w/{i}")
    wh = h.hub.usage.webhook
    assert wh is not None
    await wait_for(lambda: wh.failed == 3, timeout=10, what="three refused records")
    assert receiver.calls == 3 and wh.retries == 0
    hub_logs = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("hub"))
    assert "not delivered (HTTP 400)" in hub_logs and "s3cret" not in hub_logs


async def test_webhook_down_never_blocks_appends(start_hub, connect):
    # nothing listens on the port: every POST fails at once and is retried in the background
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    h = await start_hub(usage_webhook=f"http://127.0.0.1:{port}/usage")
    prod = await connect(h.ws_url)
    t0 = time.monotonic()
    for i in range(20):
        await create(prod, f"d/{i}", {})
        await produce(prod, f"d/{i}", ["x"])
        await close(prod, f"d/{i}")
    assert time.monotonic() - t0 < 10
    wh = h.hub.usage.webhook
    assert wh is not None and wh.sent == 0
    await wait_for(lambda: h.hub.usage.written == 20, what="records stored while the webhook is down")


async def test_hub_serves_when_the_usage_database_cannot_be_opened(
    start_hub, session, connect, tmp_path, caplog
):
    data = tmp_path / "bad"
    (data / "usage.sqlite3").mkdir(parents=True)  # a directory where the database should be
    h = await start_hub(data_dir=data)
    prod = await connect(h.ws_url)
    await create(prod, "n/1", {"tenant": "acme"})
    await produce(prod, "n/1", ["abc"])
    assert by_value(await usage(h, session, label="tenant"))["acme"]["bytes"] == 3  # open: in memory
    await close(prod, "n/1")
    assert h.hub.usage.dropped == 1 and "cannot open" in caplog.text
