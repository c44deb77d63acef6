"""Stream analytics, without I/O: delivery lag, resume patterns, answer outcomes and usage.

The service (``hub/core/service.py``) and the fan-out call this with one-line calls; the admin layer
(``hub/protocols/analytics.py``) reads it; the thin I/O parts (the SQLite usage table, the webhook)
receive the ``UsageRecord`` of each answer that ends. Nothing here awaits, reads a file or a socket.

Invariants:

* Bounded memory, whatever the traffic: histograms have fixed buckets; the chart series is a ring of
  ``SERIES_SLOTS`` one-second slots; a stream has a ``Live`` row only while it is open here, with a
  per-second timeline and an event list both capped, and at most ``HISTORY`` ended rows are kept (for
  the per-stream page). Nothing is kept per stream ever seen.
* Usage is counted once, at append (a duplicate append is not an append): replays, resumes and forks
  deliver or share chunks and never add to a stream's generated chunks or bytes. Delivered bytes are
  counted separately, per transport, live and replayed apart.
* Times: durations that matter at the millisecond (lag, replay) use the monotonic clock; what a person
  reads as a date (created, ended, the series' seconds, time away) uses the wall clock.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from storage import AppendResult, StreamHandle

# Bucket upper bounds (Prometheus ``le``); docs/analytics.md lists them with the metric names.
LAG_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GAP_BOUNDS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
MISSED_BOUNDS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000)
REPLAY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
TTFC_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DURATION_BOUNDS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TOKENS_BOUNDS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000)
RESUMES_BOUNDS = (0, 1, 2, 3, 5, 10, 25, 50, 100)

TRANSPORTS = ("ws", "sse", "ds", "aisdk", "http")  # what ``Format.transport`` says; others are counted too
OUTCOMES = ("done", "error", "cancelled", "producer_lost")
SERIES_SLOTS = 900  # 15 minutes of one-second slots
TIMELINE_S = 900  # a live row's per-second append timeline keeps its last 15 minutes
EVENTS = 256  # a live row's subscriber events (join, resume, leave)
DEPARTURES = 64  # a live row's recent departures (offset -> when), to time the resume that follows
HISTORY = 100  # ended rows kept for the per-stream page


class Histogram:
    """Fixed buckets, like a Prometheus histogram: ``counts[i]`` holds values <= ``bounds[i]``
    (the last slot is +Inf); ``quantile`` interpolates inside a bucket."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, v)] += n
        self.sum += v * n
        self.count += n

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, cumulative count) pairs, +Inf last: what Prometheus' exposition wants."""
        out, acc = [], 0
        for b, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            acc += c
            out.append(("+Inf" if b == math.inf else f"{b:g}", acc))
        return out

    def quantile(self, q: float) -> float | None:
        return quantile(self.bounds, self.counts, q)


def quantile(bounds: tuple[float, ...], counts: list[int], q: float) -> float | None:
    """The ``q`` quantile of bucket counts, linear inside the bucket (as PromQL's histogram_quantile);
    values past the last bound read as the last bound. None when there is nothing."""
    total = sum(counts)
    if not total:
        return None
    rank, acc = q * total, 0
    for i, c in enumerate(counts):
        if c and acc + c >= rank:
            if i == len(bounds):
                return bounds[-1]
            lo = bounds[i - 1] if i else 0.0
            return lo + (bounds[i] - lo) * max(0.0, rank - acc) / c
        acc += c
    return bounds[-1]


class Series:
    """The last ``SERIES_SLOTS`` seconds, one slot each: counter deltas and gauges written by
    ``tick`` once a second, and the lag histogram of the frames delivered in that second."""

    FIELDS = (
        "appends",
        "deliveries",
        "appended_bytes",
        "resumes",
        "slow_drops",
        "connections",
        "subscribers",
    )

    def __init__(self, slots: int = SERIES_SLOTS) -> None:
        self.slots = slots
        self.t = [0] * slots  # the wall-clock second a slot holds (0: never written)
        self.values = {f: [0] * slots for f in self.FIELDS}
        self.lag = [[0] * (len(LAG_BOUNDS) + 1) for _ in range(slots)]
        self._last: dict[str, int] = {}
        self._lag_now = [0] * (len(LAG_BOUNDS) + 1)

    def observe_lag(self, v: float, n: int) -> None:
        self._lag_now[bisect_left(LAG_BOUNDS, v)] += n

    def tick(self, now: float, counters: Mapping[str, int], gauges: Mapping[str, int]) -> None:
        """Close the second ``now`` falls in: counters become deltas since the last tick."""
        sec = int(now)
        i = sec % self.slots
        self.t[i] = sec
        for k, v in counters.items():
            self.values[k][i] = max(0, v - self._last.get(k, v))
            self._last[k] = v
        for k, v in gauges.items():
            self.values[k][i] = v
        self.lag[i] = self._lag_now
        self._lag_now = [0] * (len(LAG_BOUNDS) + 1)

    def window(self, now: float, seconds: int) -> dict[str, list[Any]]:
        """The last ``seconds`` seconds in order, from the first one a tick wrote (a hub up for a
        minute shows a minute); a second no tick wrote after that reads as null."""
        seconds = max(1, min(seconds, self.slots))
        end = int(now)
        start = end - seconds + 1
        while start < end and self.t[start % self.slots] != start:
            start += 1
        out: dict[str, list[Any]] = {"t": [], "lag_p50": [], "lag_p99": []}
        for f in self.FIELDS:
            out[f] = []
        for sec in range(start, end + 1):
            i = sec % self.slots
            ok = self.t[i] == sec
            out["t"].append(sec)
            for f in self.FIELDS:
                out[f].append(self.values[f][i] if ok else None)
            p50 = quantile(LAG_BOUNDS, self.lag[i], 0.5) if ok else None
            p99 = quantile(LAG_BOUNDS, self.lag[i], 0.99) if ok else None
            out["lag_p50"].append(None if p50 is None else round(p50 * 1e3, 3))  # ms
            out["lag_p99"].append(None if p99 is None else round(p99 * 1e3, 3))
        return out


class UsageRecord(msgspec.Struct, kw_only=True):
    """One answer's usage, made when it ends: the SQLite row, the webhook body, /admin/usage's unit."""

    # "<stream>:<epoch>", one per stream incarnation, so a receiver can drop a retried POST; hubs side
    # by side on a shared store each record what they counted, as "<stream>:<epoch>@<hub>"
    id: str
    stream: str
    labels: dict[str, str]
    status: str  # done, error, cancelled or producer_lost
    error: str | None = None
    created: float  # unix seconds
    ended: float
    duration_s: float
    time_to_first_chunk_s: float | None = None
    tokens_per_s: float | None = None
    chunks: int  # generated: counted at append, once
    bytes: int
    delivered_bytes: dict[str, int] = {}  # per transport, live and replayed, while the answer was open
    replayed_bytes: dict[str, int] = {}  # the replayed part of delivered_bytes
    resumes: int = 0
    hub: str | None = None  # which hub counted it (hubs side by side on one store)


@dataclass(slots=True)
class Live:
    """An open stream's figures, kept only while it is open here (then moved to history)."""

    id: str
    labels: dict[str, str]
    created: float  # wall
    first_chunk: float | None = None  # wall time of the first generated chunk
    last_append: float | None = None
    chunks: int = 0
    bytes: int = 0
    resumes: int = 0
    lag_ms: float | None = None  # the last live frame's lag
    pending_t0: float | None = None  # monotonic start of the oldest append not yet published
    delivered: dict[str, int] = field(default_factory=dict)
    replayed: dict[str, int] = field(default_factory=dict)
    # per second with appends: [wall second, chunks, end offset after them, first append's wall time]
    timeline: deque[list[float]] = field(default_factory=lambda: deque(maxlen=TIMELINE_S))
    events: deque[tuple[float, str, int, str]] = field(default_factory=lambda: deque(maxlen=EVENTS))
    departures: dict[int, float] = field(default_factory=dict)
    end_offset: int = 0
    status: str = "open"
    ended: float | None = None
    error: str | None = None

    def rate(self, now: float, window: int = 5) -> float:
        """Chunks per second over the last ``window`` full seconds."""
        sec = int(now)
        n = 0.0
        for e in reversed(self.timeline):  # newest first: only the last few entries are read
            if e[0] < sec - window:
                break
            if e[0] < sec:
                n += e[1]
        return n / window

    def appended_at(self, offset: int) -> float | None:
        """When chunk ``offset`` was appended (to the second: the first append of its second), if kept."""
        for e in self.timeline:
            if offset < e[2]:
                return e[3]
        return None

    def summary(self, now: float, subscribers: int) -> dict[str, Any]:
        return {
            "stream": self.id,
            "labels": self.labels,
            "status": self.status,
            "age_s": round((self.ended or now) - self.created, 3),
            "subscribers": subscribers,
            "chunks": self.chunks,
            "bytes": self.bytes,
            "rate": round(self.rate(now), 2),
            "lag_ms": self.lag_ms,
            "resumes": self.resumes,
            "delivered_bytes": dict(self.delivered),
        }

    def detail(self, now: float, subscribers: int) -> dict[str, Any]:
        out = self.summary(now, subscribers)
        out.update(
            created=self.created,
            ended=self.ended,
            error=self.error,
            first_chunk=self.first_chunk,
            timeline={"t": [int(e[0]) for e in self.timeline], "chunks": [int(e[1]) for e in self.timeline]},
            events=[{"t": t, "kind": k, "offset": o, "transport": tr} for t, k, o, tr in self.events],
        )
        return out


def outcome(status: str, error: str | None) -> str:
    """The answer's outcome: a lease that ran out (the producer never came back) is ``producer_lost``."""
    if status == "error" and error in ("producer_lost", "open_ttl_expired"):
        return "producer_lost"
    return status if status in OUTCOMES else "error"


class Analytics:
    """The measurements. ``clock`` (monotonic) and ``wall`` are injectable for tests."""

    def __init__(
        self,
        hub_name: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.hub_name = hub_name
        self.clock, self.wall = clock, wall
        self.live: dict[str, Live] = {}
        # an append that also ends its stream, on its way to storage: (chunks, bytes, t0). Its end is
        # published (``finish``) inside the append, before the service hears the append succeeded.
        self.closing: dict[str, tuple[int, int, float]] = {}
        self.history: dict[str, Live] = {}  # insertion-ordered: the oldest ended row goes first
        self.series = Series()
        self.lag = Histogram(LAG_BOUNDS)
        self.resume_gap: dict[str, Histogram] = {}
        self.resume_missed: dict[str, Histogram] = {}
        self.replay_duration: dict[str, Histogram] = {}
        self.ttfc = Histogram(TTFC_BOUNDS)
        self.answer_duration = Histogram(DURATION_BOUNDS)
        self.tokens_per_s = Histogram(TOKENS_BOUNDS)
        self.answer_resumes = Histogram(RESUMES_BOUNDS)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.resumes: dict[str, int] = {}  # per transport
        self.generated_chunks = 0
        self.generated_bytes = 0
        # per transport: [live chunks, live bytes, replayed chunks, replayed bytes]
        self.delivered: dict[str, list[int]] = {t: [0, 0, 0, 0] for t in TRANSPORTS}
        self.on_record: list[Callable[[UsageRecord], None]] = []

    # --- the stream's lifecycle ---------------------------------------------------------------

    def _row(self, s: StreamHandle) -> Live:
        row = self.live.get(s.id)
        if row is None:
            row = self.live[s.id] = Live(s.id, dict(s.meta.labels), self.wall(), end_offset=s.next_offset)
        return row

    def created(self, s: StreamHandle) -> None:
        if not s.ended:
            self._row(s)

    def relabel(self, stream_id: str, labels: Mapping[str, str]) -> None:
        row = self.live.get(stream_id)
        if row is not None:
            row.labels = dict(labels)

    def append_started(self, stream_id: str, t0: float) -> None:
        """An append is on its way to storage: the lag of the frame that carries it starts now."""
        row = self.live.get(stream_id)
        if row is not None and row.pending_t0 is None:
            row.pending_t0 = t0

    def append_failed(self, stream_id: str, t0: float) -> None:
        """The append that ``append_started`` timed was refused or a duplicate: nothing to time."""
        row = self.live.get(stream_id)
        if row is not None and row.pending_t0 == t0:
            row.pending_t0 = None

    def appended(self, s: StreamHandle, res: AppendResult, nbytes: int, t0: float) -> None:
        """A durable, non-duplicate append: the one place generated usage is counted (an append that
        ended its stream was counted by ``finish``, which ran first)."""
        if s.ended and s.id not in self.live:
            return
        self._count(self._row(s), res.count, res.offset + res.count, nbytes, t0)

    def _count(self, row: Live, count: int, end_offset: int, nbytes: int, t0: float) -> None:
        if row.pending_t0 is not None and row.pending_t0 <= t0:
            row.pending_t0 = None  # published: what the fan-out needed it for is done
        now = self.wall()
        res_count = count
        row.chunks += res_count
        row.bytes += nbytes
        row.end_offset = max(row.end_offset, end_offset)
        if row.first_chunk is None and res_count:
            row.first_chunk = now
            self.ttfc.observe(now - row.created)
        row.last_append = now
        sec = int(now)
        tl = row.timeline
        if tl and tl[-1][0] == sec:
            tl[-1][1] += res_count
            tl[-1][2] = row.end_offset
        else:
            tl.append([sec, res_count, row.end_offset, now])
        self.generated_chunks += res_count
        self.generated_bytes += nbytes

    def ended(self, s: StreamHandle) -> None:
        """The stream's end is durable (the service's ``ended`` hook)."""
        self.finish(s)

    def finish(self, s: StreamHandle) -> UsageRecord | None:
        """The ended stream's usage record, handed to ``on_record`` (None if it was not open here)."""
        closing = self.closing.pop(s.id, None)
        if closing is not None:  # the append that carried the end: durable with it, so counted here
            count, nbytes, t0 = closing
            self._count(self._row(s), count, s.next_offset, nbytes, t0)
        row = self.live.pop(s.id, None)
        if row is None:
            return None
        info = s.close_info
        now = self.wall()
        row.status = outcome(s.status, info.error if info else None)
        row.error = info.error if info else None
        row.ended = now
        row.labels = dict(s.meta.labels)
        self.outcomes[row.status] = self.outcomes.get(row.status, 0) + 1
        duration = now - row.created
        self.answer_duration.observe(duration)
        self.answer_resumes.observe(row.resumes)
        tps = None
        if row.first_chunk is not None and row.chunks > 1 and now > row.first_chunk:
            tps = (row.chunks - 1) / (now - row.first_chunk)  # the chunks after the first
            self.tokens_per_s.observe(tps)
        self._keep(row)
        rec = UsageRecord(
            id=f"{s.id}:{s.epoch}" + (f"@{self.hub_name}" if self.hub_name else ""),
            stream=s.id,
            labels=row.labels,
            status=row.status,
            error=row.error,
            created=round(row.created, 6),
            ended=round(now, 6),
            duration_s=round(duration, 6),
            time_to_first_chunk_s=None
            if row.first_chunk is None
            else round(row.first_chunk - row.created, 6),
            tokens_per_s=None if tps is None else round(tps, 3),
            chunks=row.chunks,
            bytes=row.bytes,
            delivered_bytes=dict(row.delivered),
            replayed_bytes=dict(row.replayed),
            resumes=row.resumes,
            hub=self.hub_name,
        )
        if self.hub_name and not row.chunks and not row.delivered and not row.replayed:
            # hubs side by side all hear every end: one that neither generated nor delivered any of
            # the answer adds no record (else answers are counted once per hub, webhooks sent N times)
            return rec
        for cb in list(self.on_record):
            cb(rec)
        return rec

    def deleted(self, stream_id: str) -> None:
        """Deleted while open: no answer ended, no record. Its history row goes too."""
        self.live.pop(stream_id, None)
        self.history.pop(stream_id, None)

    def _keep(self, row: Live) -> None:
        self.history.pop(row.id, None)
        self.history[row.id] = row
        while len(self.history) > HISTORY:
            del self.history[next(iter(self.history))]

    # --- subscribers --------------------------------------------------------------------------

    def subscribed(self, s: StreamHandle, offset: int, transport: str) -> float:
        """A subscription starts; a resume (offset > 0) is timed and counted. Returns the monotonic
        start, which the fan-out hands back to ``replay_done``."""
        row = self.live.get(s.id) or self.history.get(s.id)
        now = self.wall()
        if offset <= 0:
            if row is not None:
                row.events.append((now, "join", 0, transport))
            return 0.0
        self.resumes[transport] = self.resumes.get(transport, 0) + 1
        missed = max(0, s.next_offset - offset)
        self._hist(self.resume_missed, transport, MISSED_BOUNDS).observe(missed)
        if row is not None:
            row.resumes += 1
            row.events.append((now, "resume", offset, transport))
            left = row.departures.pop(offset, None)
            first_missed = row.appended_at(offset) if missed else None
            known = [t for t in (left, first_missed) if t is not None]
            if not known and row.timeline:  # missed nothing, left unseen: since it had its last chunk
                last = row.appended_at(offset - 1)
                known = [last] if last is not None else []
            if known:
                self._hist(self.resume_gap, transport, GAP_BOUNDS).observe(max(0.0, now - min(known)))
        return self.clock()

    def replay_done(self, transport: str, started: float) -> None:
        self._hist(self.replay_duration, transport, REPLAY_BOUNDS).observe(max(0.0, self.clock() - started))

    def departed(self, stream_id: str, offset: int, transport: str) -> None:
        """A subscription stopped before the end (the reader went away): its resume is timed from now."""
        row = self.live.get(stream_id) or self.history.get(stream_id)
        if row is None:
            return
        now = self.wall()
        row.events.append((now, "leave", offset, transport))
        row.departures[offset] = now
        if len(row.departures) > DEPARTURES:
            del row.departures[next(iter(row.departures))]

    def _hist(self, table: dict[str, Histogram], transport: str, bounds: tuple[float, ...]) -> Histogram:
        h = table.get(transport)
        if h is None:
            h = table[transport] = Histogram(bounds)
        return h

    # --- deliveries (the fan-out's hot path: keep these cheap) -----------------------------------

    def run_t0(self, stream_id: str) -> float | None:
        """The monotonic start of the oldest append in the run the fan-out is delivering."""
        row = self.live.get(stream_id)
        if row is None:
            return None
        t0, row.pending_t0 = row.pending_t0, None
        return t0

    def lagged(self, stream_id: str, t0: float, frames: int) -> None:
        """``frames`` subscriber frames of one run went out, all with the lag of its oldest append."""
        lag = max(0.0, self.clock() - t0)
        self.lag.observe(lag, frames)
        self.series.observe_lag(lag, frames)
        row = self.live.get(stream_id)
        if row is not None:
            row.lag_ms = round(lag * 1e3, 3)

    def delivered_bytes(self, stream_id: str, transport: str, chunks: int, nbytes: int, replay: bool) -> None:
        tally = self.delivered.get(transport)
        if tally is None:
            tally = self.delivered[transport] = [0, 0, 0, 0]
        if replay:
            tally[2] += chunks
            tally[3] += nbytes
        else:
            tally[0] += chunks
            tally[1] += nbytes
        row = self.live.get(stream_id)
        if row is not None:
            row.delivered[transport] = row.delivered.get(transport, 0) + nbytes
            if replay:
                row.replayed[transport] = row.replayed.get(transport, 0) + nbytes

    # --- reads --------------------------------------------------------------------------------

    def open_usage(self) -> list[UsageRecord]:
        """The answers still open, as partial records (status ``open``): /admin/usage adds them in,
        and a graceful stop saves them so a restart goes on counting where it left off."""
        now = self.wall()
        return [
            UsageRecord(
                id=row.id,
                stream=row.id,
                labels=row.labels,
                status="open",
                created=row.created,
                ended=now,
                duration_s=round(now - row.created, 6),
                time_to_first_chunk_s=None if row.first_chunk is None else row.first_chunk - row.created,
                chunks=row.chunks,
                bytes=row.bytes,
                delivered_bytes=dict(row.delivered),
                replayed_bytes=dict(row.replayed),
                resumes=row.resumes,
                hub=self.hub_name,
            )
            for row in self.live.values()
        ]

    def restore(self, records: Iterable[UsageRecord], open_ids: set[str]) -> int:
        """Take up the counts a graceful stop saved, for the streams still open now."""
        n = 0
        for rec in records:
            if rec.stream not in open_ids or rec.stream in self.live:
                continue
            row = self.live[rec.stream] = Live(rec.stream, dict(rec.labels), rec.created)
            if rec.time_to_first_chunk_s is not None:
                row.first_chunk = rec.created + rec.time_to_first_chunk_s
            row.chunks, row.bytes, row.resumes = rec.chunks, rec.bytes, rec.resumes
            row.delivered, row.replayed = dict(rec.delivered_bytes), dict(rec.replayed_bytes)
            n += 1
        return n

    def distributions(self) -> dict[str, Any]:
        """The resume histograms summed over transports, for the dashboard's bar charts."""

        def total(table: dict[str, Histogram], bounds: tuple[float, ...]) -> dict[str, Any]:
            counts = [0] * (len(bounds) + 1)
            for h in table.values():
                counts = [a + b for a, b in zip(counts, h.counts, strict=True)]
            return {"bounds": list(bounds), "counts": counts}

        return {
            "resume_gap_s": total(self.resume_gap, GAP_BOUNDS),
            "resume_missed_chunks": total(self.resume_missed, MISSED_BOUNDS),
        }


class UsageTotals:
    """/admin/usage's answer: totals per value of one label (or one group when no label), from the
    SQLite aggregates of finished answers plus the open answers' partial records."""

    def __init__(self, label: str | None) -> None:
        self.label = label
        self.groups: dict[str | None, dict[str, Any]] = {}

    def _group(self, value: Any) -> dict[str, Any]:
        key = None if value is None else str(value)
        g = self.groups.get(key)
        if g is None:
            g = self.groups[key] = {
                "value": key,
                "answers": 0,
                "open": 0,
                "chunks": 0,
                "bytes": 0,
                "delivered_bytes": {},
                "outcomes": {},
            }
        return g

    def add(self, value: Any, status: str, answers: int, chunks: int, nbytes: int) -> None:
        g = self._group(value)
        g["answers"] += answers
        g["chunks"] += chunks
        g["bytes"] += nbytes
        g["outcomes"][status] = g["outcomes"].get(status, 0) + answers

    def add_delivered(self, value: Any, transport: str, nbytes: int) -> None:
        d = self._group(value)["delivered_bytes"]
        d[transport] = d.get(transport, 0) + nbytes

    def add_record(self, rec: UsageRecord) -> None:
        value = rec.labels.get(self.label) if self.label else None
        g = self._group(value)
        if rec.status == "open":
            g["open"] += 1
        else:
            g["answers"] += 1
            g["outcomes"][rec.status] = g["outcomes"].get(rec.status, 0) + 1
        g["chunks"] += rec.chunks
        g["bytes"] += rec.bytes
        for t, n in rec.delivered_bytes.items():
            self.add_delivered(value, t, n)

    def result(self, since: float, until: float) -> dict[str, Any]:
        groups = sorted(self.groups.values(), key=lambda g: (-g["bytes"], g["value"] or ""))
        total = UsageTotals(None)
        for g in groups:
            t = total._group(None)
            for k in ("answers", "open", "chunks", "bytes"):
                t[k] += g[k]
            for k in ("delivered_bytes", "outcomes"):
                for kk, n in g[k].items():
                    t[k][kk] = t[k].get(kk, 0) + n
        tot = total._group(None)
        tot.pop("value")
        return {
            "label": self.label,
            "since": since,
            "until": None if math.isinf(until) else until,
            "groups": groups if self.label else [],
            "total": tot,
        }
