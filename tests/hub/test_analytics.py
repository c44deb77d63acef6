"""The I/O-free analytics core: histograms, the per-second series, usage totals; and, on a real Hub over
a real file engine, usage counted once (duplicates, replays and forks add nothing) and bounded rows."""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from hub.core import analytics as an
from hub.core.analytics import Histogram, Series, UsageRecord, UsageTotals, outcome, quantile
from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.errors import HubError
from hub.core.outbox import Outbox
from hub.core.service import Hub
from hub.core.usage import UsageDB
from hub.protocols.native.http import SSE_FORMAT


def test_histogram_buckets_are_prometheus_le_and_quantiles_interpolate() -> None:
    h = Histogram((1, 2, 5))
    for v in (0.5, 1, 1.5, 2, 4, 10):
        h.observe(v)
    assert h.counts == [2, 2, 1, 1]  # <= 1, <= 2, <= 5, +Inf
    assert h.cumulative() == [("1", 2), ("2", 4), ("5", 5), ("+Inf", 6)]
    assert h.count == 6 and h.sum == pytest.approx(19.0)
    assert quantile((1.0, 2.0), [0, 0, 0], 0.5) is None
    assert quantile((1.0, 2.0), [0, 4, 0], 0.5) == pytest.approx(1.5)  # the middle of (1, 2]
    assert h.quantile(1.0) == 5.0  # past the last bound reads as the last bound
    h.observe(3, n=10)
    assert h.count == 16 and h.counts[2] == 11


def test_series_keeps_one_slot_a_second_and_reads_back_in_order() -> None:
    s = Series(slots=10)
    s.tick(1000.2, {"appends": 5}, {"connections": 1})  # the first tick sets the base: delta 0
    s.observe_lag(0.004, 3)
    s.tick(1001.1, {"appends": 12}, {"connections": 2})
    s.tick(1003.9, {"appends": 12}, {"connections": 0})  # 1002 had no tick
    w = s.window(1003.9, 10)
    assert w["t"] == [1000, 1001, 1002, 1003]  # starts at the first written second
    assert w["appends"] == [0, 7, None, 0]
    assert w["connections"] == [1, 2, None, 0]
    assert w["lag_p50"][1] is not None and 2.5 < w["lag_p50"][1] <= 5.0  # ms, in the (2.5, 5] bucket
    assert w["lag_p50"][0] is None and w["lag_p50"][3] is None
    s.tick(1013.0, {"appends": 20}, {})  # the ring wraps: 1003 is overwritten
    assert s.window(1013.0, 10)["t"][0] == 1013


def test_outcomes() -> None:
    assert outcome("done", None) == "done"
    assert outcome("cancelled", "stop") == "cancelled"
    assert outcome("error", "producer_lost") == "producer_lost"
    assert outcome("error", "open_ttl_expired") == "producer_lost"
    assert outcome("error", "model crashed") == "error"


def _rec(stream: str, status: str, tenant: str | None, nbytes: int, ws: int = 0) -> UsageRecord:
    labels = {"tenant": tenant} if tenant else {}
    return UsageRecord(
        id=stream, stream=stream, labels=labels, status=status, created=1.0, ended=2.0,
        duration_s=1.0, chunks=1, bytes=nbytes, delivered_bytes={"ws": ws} if ws else {},
    )  # fmt: skip


def test_usage_totals_merge_stored_groups_and_open_answers() -> None:
    t = UsageTotals("tenant")
    t.add("acme", "done", 2, 10, 100)  # what SQLite summed
    t.add_delivered("acme", "ws", 300)
    t.add(None, "error", 1, 1, 5)
    t.add_record(_rec("o/1", "open", "acme", 7, ws=9))
    t.add_record(_rec("o/2", "open", "globex", 3))
    out = t.result(0.0, math.inf)
    groups = {g["value"]: g for g in out["groups"]}
    assert groups["acme"] == {
        "value": "acme", "answers": 2, "open": 1, "chunks": 11, "bytes": 107,
        "delivered_bytes": {"ws": 309}, "outcomes": {"done": 2},
    }  # fmt: skip
    assert groups[None]["outcomes"] == {"error": 1} and groups["globex"]["open"] == 1
    assert out["total"]["bytes"] == 115 and out["total"]["answers"] == 3 and out["total"]["open"] == 2
    assert [g["value"] for g in out["groups"]] == ["acme", None, "globex"]  # by bytes
    assert out["until"] is None


def test_usage_db_sums_per_minute_and_label_set_whatever_the_number_of_answers(tmp_path: Path) -> None:
    """usage.sqlite3 keeps a row per (minute, label set, outcome), not per answer: 200 answers of one
    tenant in one minute are one row; the totals are exact; a window resolves to the minute."""
    db = UsageDB(tmp_path / "usage.sqlite3")
    db.open()
    try:
        recs = [_rec(f"a/{i}", "done", "acme", 10, ws=3) for i in range(200)]
        db.add(recs[:120])
        db.add(recs[120:])  # a second batch adds into the same row
        db.add([msgspec.structs.replace(_rec("b/1", "error", None, 5), ended=600.0)])  # minute 10
        rows = sqlite3.connect(tmp_path / "usage.sqlite3").execute("SELECT COUNT(*) FROM usage_minutes")
        assert rows.fetchone()[0] == 2
        assert db.count() == 201
        t = UsageTotals("tenant")
        db.totals("tenant", 0.0, 1e300, t)
        out = t.result(0.0, math.inf)
        groups = {g["value"]: g for g in out["groups"]}
        assert (groups["acme"]["answers"], groups["acme"]["bytes"]) == (200, 2000)
        assert groups["acme"]["delivered_bytes"] == {"ws": 600}
        assert groups[None]["outcomes"] == {"error": 1}
        late = UsageTotals(None)
        db.totals(None, 60.0, 1e300, late)  # minute 0 (ended at 2 s) ends at 60: outside
        assert late.result(60.0, math.inf)["total"]["answers"] == 1
    finally:
        db.close()


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(Config(data_dir=tmp_path / "data", fsync="never"), Auth(None, "admin"))
    await h.start()
    yield h
    await h.stop()


async def test_usage_is_counted_once_at_append(hub: Hub) -> None:
    records: list[UsageRecord] = []
    hub.analytics.on_record.append(records.append)
    await hub.create("u/1", labels={"tenant": "acme"})
    await hub.append("u/1", [b"ab", "\u00e9".encode()], "p", 0)
    await hub.append("u/1", [b"ab", "\u00e9".encode()], "p", 0)  # a retry: a duplicate, not usage
    await hub.append("u/1", [b"xyz"], "p", 1)
    await hub.fork("u/1", "u/2", labels={"tenant": "acme"})  # shares 3 chunks, generates none
    await hub.close("u/1")
    await hub.close("u/2")
    s = await hub.get("u/1")

    async def send(f: str) -> None:
        pass

    for _ in range(3):  # replays deliver, never generate
        box = Outbox(send)
        box.autostart()
        await hub.subscribe(s, box, 0).finished.wait()
    assert hub.analytics.delivered["ws"][3] == 3 * 7  # replayed bytes
    by = {r.stream: r for r in records}
    assert (by["u/1"].chunks, by["u/1"].bytes) == (3, 2 + 2 + 3)
    assert (by["u/2"].chunks, by["u/2"].bytes) == (0, 0)
    assert hub.analytics.generated_chunks == 3 and hub.analytics.generated_bytes == 7
    assert by["u/1"].id == f"u/1:{s.epoch}" and by["u/1"].labels == {"tenant": "acme"}
    assert not hub.analytics.live  # nothing kept for ended streams but the bounded history


async def test_an_append_that_ends_its_stream_is_counted_and_leaves_no_row(hub: Hub) -> None:
    """The end is published inside the append (before the service hears it succeeded): the record
    still has the last append's chunks, and no row of the ended stream is left behind."""
    records: list[UsageRecord] = []
    hub.analytics.on_record.append(records.append)
    await hub.create("c/1")
    await hub.append("c/1", [b"a"])
    await hub.append("c/1", [b"bb", b"c"], close=True)
    assert [(r.chunks, r.bytes) for r in records] == [(3, 4)]
    assert "c/1" not in hub.analytics.live and not hub.analytics.closing
    assert hub.analytics.generated_chunks == 3 and hub.analytics.generated_bytes == 4


async def test_a_duplicate_append_leaves_no_lag_start_behind(hub: Hub) -> None:
    await hub.create("d/1")
    await hub.append("d/1", [b"a"], "p", 0)
    await hub.append("d/1", [b"a"], "p", 0)  # a retry: a duplicate, never published
    assert hub.analytics.live["d/1"].pending_t0 is None
    with pytest.raises(HubError):
        await hub.append("d/1", [b"b"], "p", 5)  # a gap: refused
    assert hub.analytics.live["d/1"].pending_t0 is None


async def test_rows_are_bounded(hub: Hub) -> None:
    for i in range(an.HISTORY + 20):
        await hub.append(f"b/{i}", [b"x"], create=True)
        await hub.close(f"b/{i}")
    assert not hub.analytics.live and len(hub.analytics.history) == an.HISTORY
    assert f"b/{an.HISTORY + 19}" in hub.analytics.history and "b/0" not in hub.analytics.history
    await hub.append("d/1", [b"x"], create=True)
    row = hub.analytics.live["d/1"]
    s = await hub.get("d/1")
    for i in range(an.EVENTS + an.DEPARTURES + 10):
        hub.analytics.departed("d/1", i, "ws")
    assert len(row.events) == an.EVENTS and len(row.departures) == an.DEPARTURES
    await hub.delete(s.id)
    assert "d/1" not in hub.analytics.live


async def test_live_bytes_per_transport_one_and_mixed(hub: Hub) -> None:
    async def send(f: str) -> None:
        pass

    s = await hub.create("m/1")
    ws = [hub.subscribe(s, Outbox(send, 1 << 30), 0) for _ in range(3)]
    while any(sub.mode != "live" for sub in ws):
        await asyncio.sleep(0.001)
    await hub.append(s, [b"abcd"])  # one transport: counted once for the run
    d = hub.analytics.delivered
    assert d["ws"][:2] == [3, 12] and d["sse"][:2] == [0, 0]
    sse = hub.subscribe(s, Outbox(send, 1 << 30), 1, fmt=SSE_FORMAT)
    while sse.mode != "live":
        await asyncio.sleep(0.001)
    await hub.append(s, [b"xy", b"z"])  # mixed: counted per subscriber
    assert d["ws"][:2] == [3 + 6, 12 + 9] and d["sse"][:2] == [2, 3]
    assert hub.analytics.live["m/1"].delivered == {"ws": 21, "sse": 3}
    assert hub.analytics.lag.count == 3 + 4
    sse.stop()
    for sub in ws[1:]:
        sub.stop()
    await hub.append(s, [b"q"])
    assert d["ws"][:2] == [10, 22] and hub.fanout._kinds["m/1"] == {"ws": 1}
