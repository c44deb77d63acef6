"""Analytics over HTTP (admin token): the dashboard's JSON, usage totals, the Prometheus families.

GET /admin/series?seconds=900   the charts: per-second appends, deliveries, connections, lag p50/p99
                                (ms), resumes, slow drops; the resume distributions; the live table
GET /admin/live                 the live streams table alone (``limit``, default 200)
GET /admin/timeline/{id}        one stream's page: its per-second chunks, subscribers joining,
                                leaving and resuming (while open, and for the last ended ones)
GET /admin/usage?label=L&since=T&until=T
                                usage totals per value of label L (docs/analytics.md)
GET /admin, /admin/stream?id=   the dashboard pages (static; their data needs the admin token)

The measuring is hub/core/analytics.py; this module only reads it and renders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from hub.core.analytics import Analytics, Histogram, Live
from hub.core.auth import bearer
from hub.core.errors import HubError
from hub.core.service import HUB, Hub

routes = web.RouteTableDef()
STATIC = Path(__file__).parent.parent / "demo" / "static"  # the pages and the vendored uPlot


def _admin(request: web.Request) -> Hub:
    hub = request.app[HUB]
    hub.auth.check_admin(bearer(request))
    return hub


def _json(data: Any) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def _number(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = float(raw)
    except ValueError:
        raise HubError("bad_request", f"{name} must be a number (unix seconds)") from None
    if not math.isfinite(v):
        raise HubError("bad_request", f"{name} must be a finite number")
    return v


def live_rows(hub: Hub, limit: int = 200) -> list[dict[str, Any]]:
    now = time.time()
    rows = sorted(hub.analytics.live.values(), key=lambda r: r.created, reverse=True)[:limit]
    return [r.summary(now, hub.fanout.count(r.id)) for r in rows]


@routes.get("/admin/series")
async def series(request: web.Request) -> web.Response:
    hub = _admin(request)
    seconds = int(_number(request, "seconds", 900))
    a = hub.analytics
    now = time.time()
    return _json(
        {
            "now": now,
            "series": a.series.window(now - 1, seconds),  # the second in progress is not closed yet
            "distributions": a.distributions(),
            "live": live_rows(hub),
            "outcomes": a.outcomes,
            "lag_ms": {"p50": _ms(a.lag, 0.5), "p99": _ms(a.lag, 0.99), "count": a.lag.count},
        }
    )


def _ms(h: Histogram, q: float) -> float | None:
    v = h.quantile(q)
    return None if v is None else round(v * 1e3, 3)


@routes.get("/admin/live")
async def live(request: web.Request) -> web.Response:
    hub = _admin(request)
    limit = int(_number(request, "limit", 200))
    return _json({"streams": live_rows(hub, max(1, min(limit, 10_000)))})


@routes.get("/admin/timeline/{id:.+}")
async def timeline(request: web.Request) -> web.Response:
    hub = _admin(request)
    sid = request.match_info["id"]
    row: Live | None = hub.analytics.live.get(sid) or hub.analytics.history.get(sid)
    if row is None:
        raise HubError(
            "stream_not_found", f"no analytics for {sid!r}: neither open here nor among the last ended", sid
        )
    return _json(row.detail(time.time(), hub.fanout.count(sid)))


@routes.get("/admin/usage")
async def usage(request: web.Request) -> web.Response:
    hub = _admin(request)
    label = request.query.get("label") or None
    since = _number(request, "since", 0.0)
    until = _number(request, "until", math.inf)
    return _json(await hub.usage.totals(label, since, until))


def _page(name: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return handler


def setup(app: web.Application) -> None:
    app.router.add_routes(routes)
    app.router.add_get("/admin", _page("admin.html"))
    app.router.add_get("/admin/stream", _page("admin-stream.html"))
    app.router.add_static("/admin/static/", STATIC, show_index=False)


# --- Prometheus ---------------------------------------------------------------------------------


def _hist(name: str, doc: str, h: Histogram) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, buckets=h.cumulative(), sum_value=h.sum)


def _by(name: str, doc: str, label: str, table: dict[str, Histogram]) -> HistogramMetricFamily:
    fam = HistogramMetricFamily(name, doc, labels=[label])
    for key, h in sorted(table.items()):
        fam.add_metric([key], h.cumulative(), h.sum)
    return fam


def metric_families(hub: Hub) -> Iterator[Metric]:
    """The analytics families for /metrics (names and buckets: docs/analytics.md)."""
    a: Analytics = hub.analytics
    yield _hist("rhub_delivery_lag_seconds", "append call to a live frame queued for a subscriber", a.lag)
    yield _by("rhub_resume_gap_seconds", "time away before a resume", "transport", a.resume_gap)
    yield _by(
        "rhub_resume_missed_chunks", "chunks appended while the reader was away", "transport", a.resume_missed
    )
    yield _by(
        "rhub_replay_duration_seconds", "a resume's replay until caught up", "transport", a.replay_duration
    )
    yield _hist("rhub_time_to_first_chunk_seconds", "stream created to first chunk appended", a.ttfc)
    yield _hist("rhub_answer_duration_seconds", "stream created to its end", a.answer_duration)
    yield _hist("rhub_answer_tokens_per_second", "chunks per second after the first chunk", a.tokens_per_s)
    yield _hist("rhub_answer_resumes", "resumed subscriptions per answer", a.answer_resumes)
    outcomes = CounterMetricFamily("rhub_answer_outcomes", "answers ended, by outcome", labels=["status"])
    for status, n in sorted(a.outcomes.items()):
        outcomes.add_metric([status], n)
    yield outcomes
    resumes = CounterMetricFamily("rhub_transport_resumes", "resumed subscriptions", labels=["transport"])
    for t, n in sorted(a.resumes.items()):
        resumes.add_metric([t], n)
    yield resumes
    chunks = CounterMetricFamily("rhub_delivered_chunks", "chunks delivered", labels=["transport", "kind"])
    nbytes = CounterMetricFamily(
        "rhub_delivered_bytes", "chunk bytes delivered", labels=["transport", "kind"]
    )
    for t, (lc, lb, rc, rb) in sorted(a.delivered.items()):
        chunks.add_metric([t, "live"], lc)
        chunks.add_metric([t, "replay"], rc)
        nbytes.add_metric([t, "live"], lb)
        nbytes.add_metric([t, "replay"], rb)
    yield chunks
    yield nbytes
    yield CounterMetricFamily(
        "rhub_generated_chunks", "chunks appended, counted once", value=a.generated_chunks
    )
    yield CounterMetricFamily(
        "rhub_generated_bytes", "chunk bytes appended, counted once", value=a.generated_bytes
    )
    yield GaugeMetricFamily("rhub_live_streams", "streams open here with analytics rows", value=len(a.live))
    book = hub.usage
    yield CounterMetricFamily("rhub_usage_records_written", "usage records stored", value=book.written)
    yield CounterMetricFamily("rhub_usage_records_dropped", "usage records not stored", value=book.dropped)
    wh = book.webhook
    if wh is not None:
        yield CounterMetricFamily("rhub_usage_webhook_sent", "usage records POSTed", value=wh.sent)
        yield CounterMetricFamily("rhub_usage_webhook_failed", "usage records given up on", value=wh.failed)
        yield CounterMetricFamily(
            "rhub_usage_webhook_dropped", "usage records dropped, queue full", value=wh.dropped
        )
        yield CounterMetricFamily("rhub_usage_webhook_retries", "usage POSTs retried", value=wh.retries)
        yield GaugeMetricFamily("rhub_usage_webhook_queued", "usage records waiting", value=wh.queued)
