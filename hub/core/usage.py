"""Usage that survives a restart: finished answers' ``UsageRecord``s in ``<data dir>/usage.sqlite3``,
the open answers' counts saved at a graceful stop (and every ``CHECKPOINT_S``) and taken up again at
start, and the totals ``GET /admin/usage`` reads. The webhook (``hub/core/usage_webhook.py``) gets
each record too.

Invariants: the hub's loop never touches SQLite: every statement runs on one worker thread (one
writer, so no lock contention inside the process), and records reach it through an in-memory list
written by a background task, so an answer's end never waits on a disk. Records are summed per
minute, label set and outcome (the schema's comment says why); each is submitted once, by the
analytics core when its answer's end is durable. WAL mode
lets /admin/usage read while the writer writes. ``synchronous=NORMAL``: a committed record survives
the hub crashing; an OS crash may lose the last ones (a meter, not the data: the streams themselves
keep the hub's durability policy). The pending list is bounded (``MAX_PENDING``); past it records are
dropped and counted, never blocking the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from hub.core.analytics import Analytics, UsageRecord, UsageTotals
from hub.core.config import Config
from hub.core.errors import HubError
from hub.core.usage_webhook import UsageWebhook
from storage import Engine

log = logging.getLogger("hub.usage")

FILE = "usage.sqlite3"
MAX_PENDING = 10_000
CHECKPOINT_S = 15.0
LABEL_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

# Finished answers' usage, summed per minute of their end, label set and outcome: what /admin/usage
# sums, on the same disk as the answers themselves (~300 B each, archived). A row per answer (~130 B
# even slimmed) grew with every answer ever written (bench.footprint's disk_ratio 2.15 -> 1.51); a row
# per (minute, label set, outcome) grows with time and the labels in use. The cost: /admin/usage
# resolves ``since``/``until`` to the minute (a minute that overlaps the window counts whole). Each
# answer's own record still goes to the webhook.
SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_minutes (
    minute INTEGER NOT NULL,
    labels TEXT NOT NULL,
    status TEXT NOT NULL,
    answers INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    delivered TEXT NOT NULL,
    PRIMARY KEY (minute, labels, status)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS open_usage (stream TEXT PRIMARY KEY, record TEXT NOT NULL);
"""
_labels = msgspec.json.Encoder(order="sorted")


def _group_key(r: UsageRecord) -> tuple[int, str, str]:
    return int(r.ended // 60), _labels.encode(r.labels).decode(), r.status


class UsageDB:
    """The SQLite file; every method runs on the book's one worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")  # readers (/admin/usage) never block the one writer
        db.execute("PRAGMA synchronous=NORMAL")  # durable across a hub crash; see the module docstring
        db.execute("PRAGMA busy_timeout=5000")  # hubs side by side may share the file
        db.executescript(SCHEMA)
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def add(self, recs: list[UsageRecord]) -> None:
        assert self.db is not None
        sums: dict[tuple[int, str, str], list[Any]] = {}
        for r in recs:
            g = sums.setdefault(_group_key(r), [0, 0, 0, {}])
            g[0] += 1
            g[1] += r.chunks
            g[2] += r.bytes
            for t, n in r.delivered_bytes.items():
                g[3][t] = g[3].get(t, 0) + n
        with self.db:
            self.db.execute("BEGIN")
            for key, (answers, chunks, nbytes, delivered) in sums.items():
                row = self.db.execute(
                    "SELECT answers, chunks, bytes, delivered FROM usage_minutes"
                    " WHERE minute = ? AND labels = ? AND status = ?",
                    key,
                ).fetchone()
                if row is not None:
                    answers, chunks, nbytes = answers + row[0], chunks + row[1], nbytes + row[2]
                    for t, n in msgspec.json.decode(row[3]).items():
                        delivered[t] = delivered.get(t, 0) + n
                self.db.execute(
                    "INSERT OR REPLACE INTO usage_minutes VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (*key, answers, chunks, nbytes, _labels.encode(delivered).decode()),
                )

    def save_open(self, recs: list[UsageRecord]) -> None:
        assert self.db is not None
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM open_usage")
            self.db.executemany(
                "INSERT INTO open_usage VALUES (?, ?)",
                [(r.stream, msgspec.json.encode(r).decode()) for r in recs],
            )

    def take_open(self) -> list[UsageRecord]:
        assert self.db is not None
        rows = self.db.execute("SELECT record FROM open_usage").fetchall()
        return [msgspec.json.decode(r[0], type=UsageRecord) for r in rows]

    def totals(self, label: str | None, since: float, until: float, into: UsageTotals) -> None:
        assert self.db is not None
        path = f'$."{label}"' if label else "$.__none__"
        for value, status, n, chunks, nbytes in self.db.execute(
            "SELECT json_extract(labels, ?) AS v, status, SUM(answers), SUM(chunks), SUM(bytes)"
            " FROM usage_minutes WHERE (minute + 1) * 60 > ? AND minute * 60 < ? GROUP BY v, status",
            (path, since, until),
        ):
            into.add(value, status, n, chunks or 0, nbytes or 0)
        for value, transport, nbytes in self.db.execute(
            "SELECT json_extract(labels, ?) AS v, d.key, SUM(d.value)"
            " FROM usage_minutes u, json_each(u.delivered) d"
            " WHERE (minute + 1) * 60 > ? AND minute * 60 < ? GROUP BY v, d.key",
            (path, since, until),
        ):
            into.add_delivered(value, transport, nbytes or 0)

    def count(self) -> int:
        assert self.db is not None
        return int(self.db.execute("SELECT COALESCE(SUM(answers), 0) FROM usage_minutes").fetchone()[0])


class UsageBook:
    """The hub's usage: analytics' records to SQLite and the webhook, totals out."""

    def __init__(self, config: Config, analytics: Analytics, keep_open: bool = True) -> None:
        self.analytics = analytics
        self.db = UsageDB(Path(config.data_dir) / FILE)
        # A shared engine's hubs would take each other's open counts: they keep only finished ones.
        self.keep_open = keep_open
        self.webhook = (
            UsageWebhook(config.usage_webhook, config.usage_webhook_secret) if config.usage_webhook else None
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="rhub-usage")
        self._pending: list[UsageRecord] = []
        self._writer: asyncio.Task[None] | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.restored = 0
        self._started = False
        self._failed = False  # the database could not be opened: records are not kept
        analytics.on_record.append(self.submit)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def start(self, store: Engine) -> None:
        try:
            await self._run(self.db.open)
        except (sqlite3.Error, OSError) as e:
            # the hub serves without it: usage is then in memory only (/admin/usage shows open answers)
            log.error("usage: cannot open %s (%s): finished answers' usage will not be kept", self.db.path, e)
        else:
            self._started = True
        self._failed = not self._started
        if self.webhook is not None:
            await self.webhook.start()
        if not self._started:
            return
        if self.keep_open:
            saved = await self._run(self.db.take_open)
            if saved:
                open_ids = set(await store.open_stream_ids())
                self.restored = self.analytics.restore(saved, open_ids)
            self._checkpoint = asyncio.create_task(self._checkpoints())
        if self._pending and self._writer is None:  # ended while the store started
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def stop(self) -> None:
        if self._checkpoint is not None:
            self._checkpoint.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoint
        if self.webhook is not None:
            await self.webhook.stop()
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer
        if self._started:
            await self._flush()
            if self.keep_open:
                await self._run(self.db.save_open, self.analytics.open_usage())
            await self._run(self.db.close)
        self._pool.shutdown(wait=True)

    def submit(self, rec: UsageRecord) -> None:
        """An answer ended (called from the service's hook, on the loop: never waits)."""
        if self.webhook is not None:
            self.webhook.submit(rec)
        if self._failed or len(self._pending) >= MAX_PENDING:
            self.dropped += 1
            return
        self._pending.append(rec)
        if self._writer is None and self._started:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            await self._flush()
        finally:
            self._writer = None

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._run(self.db.add, batch)
                self.written += len(batch)
            except sqlite3.Error as e:
                self.dropped += len(batch)
                log.error("usage: %d records not written to %s: %s", len(batch), self.db.path, e)

    async def _checkpoints(self) -> None:
        last = -1
        while True:
            await asyncio.sleep(CHECKPOINT_S)
            if self.analytics.generated_chunks != last:  # something changed since the last save
                last = self.analytics.generated_chunks
                with contextlib.suppress(sqlite3.Error):
                    await self._run(self.db.save_open, self.analytics.open_usage())

    async def totals(self, label: str | None, since: float, until: float) -> dict[str, Any]:
        if label is not None and not LABEL_NAME.fullmatch(label):
            raise HubError("bad_request", "label must be 1-64 letters, digits, _ . : or -")
        totals = UsageTotals(label)
        if self._started:
            await self._flush()  # the records of answers that just ended are in the totals
            await self._run(self.db.totals, label, since, min(until, 1e300), totals)
        for rec in self.analytics.open_usage():
            if since <= rec.created < until:
                totals.add_record(rec)
        return totals.result(since, until)
