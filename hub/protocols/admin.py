"""Admin endpoints (bearer admin token): hub stats, per-stream stats, Prometheus metrics (the analytics
families come from hub/protocols/analytics.py, which also serves the dashboard)."""

from __future__ import annotations

import asyncio
import os
import resource
import time
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hub.core.auth import bearer
from hub.core.service import HUB, Hub
from hub.protocols.analytics import metric_families

routes = web.RouteTableDef()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


STORAGE_FOOTPRINT = frozenset({
    "allocated_bytes", "catalog_allocated_bytes", "catalog_wal_allocated_bytes", "catalog_free_bytes",
    "catalog_rows_allocated_bytes", "archive_allocated_bytes", "streams_allocated_bytes",
    "archived_bytes", "archived", "footprint_age_s",
})  # fmt: skip


def hub_stats(hub: Hub) -> dict[str, Any]:
    st = hub.storage_stats()
    fo = hub.fanout.stats
    c = hub.counters
    rss = _rss_bytes()
    return {
        "uptime_s": round(time.time() - hub.started, 3),
        "streams": st["streams"],
        "streams_open": st["streams_open"],
        "streams_closed": st["streams_closed"],
        "streams_loaded": st["streams_loaded"],
        "subscribers": hub.fanout.count(),
        "connections": len(hub.connections),
        "connections_total": c.connections_total,
        "appends": c.appends,
        "appended_chunks": c.appended_chunks,
        "appends_per_s": round(hub.append_rate.per_s, 2),
        "deliveries": fo.deliveries,
        "deliveries_per_s": round(hub.delivery_rate.per_s, 2),
        "frames": fo.frames,
        "replayed_chunks": fo.replayed,
        "bytes_raw": st["raw_bytes"],
        "bytes_stored": st["stored_bytes"],
        "resumes": fo.resumes,
        "reconnects": c.reconnects,
        "slow_consumer_drops": fo.slow_drops,
        "cancels": c.cancels,
        "producer_lost": c.producer_lost,
        "errors": c.errors,
        "repairs": st["repairs"],
        "fsyncs": st["fsyncs"],  # group commits
        # fsync calls: by commits (one per commit under the journal) and by journal checkpoints
        "commit_fsyncs": st.get("commit_fsyncs", 0),
        "checkpoint_fsyncs": st.get("checkpoint_fsyncs", 0),
        "write_errors": st["write_errors"],
        # group commits that ran over storage.file.store.COMMIT_STALL_S (a hung disk or sync helper)
        "commit_stalls": st.get("commit_stalls", 0),
        "expired": st["expired"],
        "open_files": st["open_files"],
        "rss_bytes": rss,
        # the kernel's high-water mark lags the live counters (they are synced per thread, lazily),
        # so it can read below the current RSS: a peak is never lower than now
        "max_rss_bytes": max(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "open_fds": _open_fds(),
        "tasks": len(asyncio.all_tasks()),
        "fsync_policy": hub.config.fsync,
        **(hub.gc.stats() if hub.gc is not None else {}),
        # the file engine's disk figures (allocated and logical), as it reports them
        **{k: v for k, v in st.items() if k in STORAGE_FOOTPRINT},
    }


def _admin(request: web.Request) -> Hub:
    hub = request.app[HUB]
    hub.auth.check_admin(bearer(request))
    return hub


@routes.get("/admin/stats")
async def stats(request: web.Request) -> web.Response:
    return web.json_response(hub_stats(_admin(request)))


@routes.get("/admin/streams/{id:.+}")
async def stream_stats(request: web.Request) -> web.Response:
    hub = _admin(request)
    sid = request.match_info["id"]
    s = await hub.get(sid)
    info = msgspec.to_builtins(s.info())
    info["subscribers"] = hub.fanout.count(sid)
    info["resumes"] = hub.resume_counts.get(sid, 0)
    info["cancel_requested"] = sid in hub.cancel_requested
    return web.json_response(info)


class _Collector:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Any:
        s = hub_stats(self.hub)
        gauges = [
            "streams",
            "streams_open",
            "streams_closed",
            "subscribers",
            "connections",
            "bytes_raw",
            "bytes_stored",
            "open_files",
            "appends_per_s",
            "deliveries_per_s",
        ]
        counters = [
            "appends",
            "appended_chunks",
            "deliveries",
            "frames",
            "replayed_chunks",
            "resumes",
            "reconnects",
            "slow_consumer_drops",
            "cancels",
            "producer_lost",
            "errors",
            "repairs",
            "fsyncs",
            "commit_fsyncs",
            "checkpoint_fsyncs",
            "write_errors",
            "commit_stalls",
            "expired",
            "connections_total",
        ]
        for k in gauges:
            yield GaugeMetricFamily(f"rhub_{k}", k.replace("_", " "), value=s[k])
        for k in counters:
            yield CounterMetricFamily(f"rhub_{k}", k.replace("_", " "), value=s[k])
        yield from metric_families(self.hub)  # histograms, outcomes, usage (hub/protocols/analytics.py)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    hub = _admin(request)
    reg = CollectorRegistry()
    reg.register(_Collector(hub))
    return web.Response(body=generate_latest(reg), content_type="text/plain", charset="utf-8")
