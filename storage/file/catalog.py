"""The catalog and the archive: one SQLite database per data dir (``store.db``). No asyncio here.

``streams`` has one row per stream that exists (live or archived): id, status, times, the meta
fields, and for an archived answer what its files used to say (chunk count, raw bytes, close,
producer state). ``blocks`` holds archived answers: one row per sealed block, keyed by (stream key,
first offset), so a seek is one B-tree lookup (O(log n)) and a long answer keeps its block
structure. A block is a whole framed record (``record.py``: length, CRC32, first offset, count,
payload), so an archived byte is checked exactly as a segment byte is, and a flipped bit answers
``corrupt_data``, never wrong text.

Invariants:

* One writer: every write method runs on the store's single database thread (``Store._db``); reads
  use their own connection on the event loop (WAL lets them run beside the writer).
* A live stream's files are the truth about it; its row is an index that recovery re-derives (the
  store reconciles rows with stream directories after an unclean shutdown, and on first start
  over a data dir of the old layout). An archived answer's row and blocks are the truth: they are
  committed with ``synchronous=FULL`` (fsynced) before its directory is removed.
* A chat listing is a range query on the primary key, open streams and deadlines have partial
  indexes: nothing here reads every row, so start-up and memory follow the live streams.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..engine import CloseInfo, StreamMeta

SCHEMA_VERSION = 1
STATUS_CODES = {"open": 0, "done": 1, "error": 2, "cancelled": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    key INTEGER PRIMARY KEY,      -- what blocks refer to (an integer is 1-8 bytes, an id up to 512)
    id TEXT NOT NULL UNIQUE,
    status INTEGER NOT NULL,      -- STATUS_CODES
    created REAL NOT NULL,
    closed REAL,
    deadline REAL,                -- min(expires_at, closed + ttl or the default ttl); NULL = never
    epoch TEXT NOT NULL,
    ttl REAL,
    expires_at REAL,
    idle_ttl REAL,
    content_type TEXT,
    labels BLOB,                  -- msgpack map, NULL when empty
    archived INTEGER NOT NULL DEFAULT 0,
    chunks INTEGER,               -- archived only, from here on
    raw_bytes INTEGER,
    stored_bytes INTEGER,
    error TEXT,
    producers BLOB                -- msgpack of the checkpoint's producer map, NULL when empty
);
CREATE INDEX IF NOT EXISTS streams_open ON streams(id) WHERE status = 0;
CREATE INDEX IF NOT EXISTS streams_live ON streams(id) WHERE archived = 0;
CREATE INDEX IF NOT EXISTS streams_deadline ON streams(deadline) WHERE deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS streams_idle ON streams(id) WHERE idle_ttl IS NOT NULL;
CREATE TABLE IF NOT EXISTS blocks (
    key INTEGER NOT NULL,
    first INTEGER NOT NULL,       -- first chunk offset of the block
    data BLOB NOT NULL,           -- one framed record, checksum included
    PRIMARY KEY (key, first)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""

_COLS = (
    "key, id, status, created, closed, epoch, ttl, expires_at, idle_ttl, content_type, labels,"
    " archived, chunks, raw_bytes, stored_bytes, error, producers"
)

Producers = dict[str, tuple[int, int, int, int]]
_labels_enc = msgspec.msgpack.Encoder()
_labels_dec = msgspec.msgpack.Decoder(dict[str, str])
_producers_dec = msgspec.msgpack.Decoder(dict[str, tuple[int, int, int, int]])


@dataclass(slots=True)
class Entry:
    """One row of ``streams``."""

    key: int
    meta: StreamMeta
    status: str
    closed: float | None
    archived: bool
    chunks: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    error: str | None = None
    producers: Producers | None = None

    @property
    def close_info(self) -> CloseInfo | None:
        if self.status == "open":
            return None
        return CloseInfo(self.status, self.error, self.closed or 0.0)


@dataclass(frozen=True, slots=True)
class ArchivedAnswer:
    """What moving one finished answer into the archive writes."""

    meta: StreamMeta  # as the stream's files say now (recovery may have renewed the epoch)
    blocks: Sequence[tuple[int, bytes]]  # (first offset, framed record)
    chunks: int
    raw_bytes: int
    close: CloseInfo
    producers: Producers


def deadline(meta: StreamMeta, closed: float | None, default_ttl: float | None) -> float | None:
    ttl = meta.ttl if meta.ttl is not None else default_ttl
    times = [meta.expires_at, closed + ttl if closed is not None and ttl is not None else None]
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; writes say BEGIN/COMMIT themselves
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=64)
    # WAL: readers (the event loop) never wait for the writer, and a commit is one append to -wal
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives a process crash; an OS crash may drop the last commits, which is
    # safe only for what the stream files can re-derive, so archive moves and deletes use FULL
    conn.execute("PRAGMA synchronous=NORMAL")
    # a reader may meet a checkpoint or WAL recovery in progress: wait for it rather than fail
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


class Catalog:
    def __init__(self, path: Path, default_ttl: float | None = None) -> None:
        self.path = path
        self.created = not path.exists()
        self.default_ttl = default_ttl
        self._w = _connect(path)
        self._w.executescript(_SCHEMA)
        version = self._w.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            self._w.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: catalog schema {version}, this code knows {SCHEMA_VERSION}")
        self._apply_default_ttl(default_ttl)
        self._r = _connect(path)
        self.count = self._r.execute("SELECT count(*) FROM streams").fetchone()[0]

    def _apply_default_ttl(self, ttl: float | None) -> None:
        """Deadlines include the store's default TTL; when it changes, recompute the ones it sets
        (one pass, only on the start that changes the setting)."""
        row = self._w.execute("SELECT value FROM settings WHERE name = 'default_ttl'").fetchone()
        if row is not None and row[0] == ttl:
            return
        with self._txn():
            self._w.execute(
                "UPDATE streams SET deadline = CASE"
                " WHEN closed IS NULL OR ?1 IS NULL THEN expires_at"
                " WHEN expires_at IS NULL THEN closed + ?1 ELSE min(expires_at, closed + ?1) END"
                " WHERE ttl IS NULL",
                (ttl,),
            )
            self._w.execute("INSERT OR REPLACE INTO settings VALUES ('default_ttl', ?)", (ttl,))

    def close(self) -> None:
        self._r.close()
        self._w.close()

    # --- reads (event loop) --------------------------------------------------------------------

    def get(self, stream_id: str) -> Entry | None:
        row = self._r.execute(f"SELECT {_COLS} FROM streams WHERE id = ?", (stream_id,)).fetchone()
        return None if row is None else _entry(row)

    def exists(self, stream_id: str) -> bool:
        return self._r.execute("SELECT 1 FROM streams WHERE id = ?", (stream_id,)).fetchone() is not None

    def list_ids(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """Ids starting with ``prefix``, sorted: a range scan of the primary key, O(log n + k)."""
        out: list[str] = []
        cur = self._r.execute("SELECT id FROM streams WHERE id >= ? ORDER BY id", (prefix,))
        for (sid,) in cur:
            if not sid.startswith(prefix) or (limit is not None and len(out) >= limit):
                break
            out.append(sid)
        cur.close()
        return out

    def open_ids(self) -> list[str]:
        return [r[0] for r in self._r.execute("SELECT id FROM streams WHERE status = 0 ORDER BY id")]

    def live_ids(self) -> list[tuple[str, str, float | None]]:
        """(id, status, closed) of every stream that still has files (not archived)."""
        rows = self._r.execute("SELECT id, status, closed FROM streams WHERE archived = 0 ORDER BY id")
        return [(sid, STATUS_NAMES[st], closed) for sid, st, closed in rows]

    def due(self, now: float, limit: int = 4096) -> list[str]:
        """Ids whose deadline has passed, earliest first."""
        rows = self._r.execute(
            "SELECT id FROM streams WHERE deadline <= ? ORDER BY deadline LIMIT ?", (now, limit)
        )
        return [r[0] for r in rows]

    def idle_ttls(self) -> list[tuple[str, float]]:
        return list(self._r.execute("SELECT id, idle_ttl FROM streams WHERE idle_ttl IS NOT NULL"))

    def block_at(self, key: int, offset: int) -> tuple[int, bytes] | None:
        """The block holding ``offset``: the last one starting at or before it."""
        row = self._r.execute(
            "SELECT first, data FROM blocks WHERE key = ? AND first <= ? ORDER BY first DESC LIMIT 1",
            (key, offset),
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def blocks_after(self, key: int, first: int, limit: int = 16) -> Iterator[tuple[int, bytes]]:
        rows = self._r.execute(
            "SELECT first, data FROM blocks WHERE key = ? AND first > ? ORDER BY first LIMIT ?",
            (key, first, limit),
        )
        for f, data in rows:
            yield f, bytes(data)

    # --- writes (the database thread only) -----------------------------------------------------

    def _txn(self, full: bool = False) -> _Txn:
        return _Txn(self._w, full)

    def add(self, meta: StreamMeta, status: str = "open", closed: float | None = None) -> None:
        with self._txn():
            self._insert(meta, status, closed)

    def add_many(self, rows: Sequence[tuple[StreamMeta, str, float | None]]) -> None:
        with self._txn():
            for meta, status, closed in rows:
                self._insert(meta, status, closed)

    def _insert(self, meta: StreamMeta, status: str, closed: float | None) -> None:
        """A new row, or (reconciling after a crash) the files' word over an existing live row."""
        known = self._w.execute("SELECT 1 FROM streams WHERE id = ?", (meta.id,)).fetchone()
        self._w.execute(
            "INSERT INTO streams (id, status, created, closed, deadline, epoch, ttl, expires_at,"
            " idle_ttl, content_type, labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
            " ON CONFLICT (id) DO UPDATE SET status = ?2, created = ?3, closed = ?4, deadline = ?5,"
            " epoch = ?6, ttl = ?7, expires_at = ?8, idle_ttl = ?9, content_type = ?10, labels = ?11"
            " WHERE archived = 0",
            (
                meta.id,
                STATUS_CODES[status],
                meta.created,
                closed,
                deadline(meta, closed, self.default_ttl),
                meta.epoch,
                meta.ttl,
                meta.expires_at,
                meta.idle_ttl,
                meta.content_type,
                _labels_enc.encode(meta.labels) if meta.labels else None,
            ),
        )
        if known is None:
            self.count += 1

    def set_status(self, meta: StreamMeta, status: str, closed: float | None) -> None:
        with self._txn():
            self._w.execute(
                "UPDATE streams SET status = ?, closed = ?, deadline = ?, epoch = ? WHERE id = ?",
                (
                    STATUS_CODES[status],
                    closed,
                    deadline(meta, closed, self.default_ttl),
                    meta.epoch,
                    meta.id,
                ),
            )

    def set_labels(self, stream_id: str, labels: dict[str, str]) -> None:
        with self._txn():
            self._w.execute(
                "UPDATE streams SET labels = ? WHERE id = ?",
                (_labels_enc.encode(labels) if labels else None, stream_id),
            )

    def remove(self, stream_ids: Sequence[str], durable: bool) -> None:
        """Forget streams (and their archived blocks). ``durable``: fsynced before returning."""
        with self._txn(full=durable):
            for sid in stream_ids:
                row = self._w.execute("SELECT key FROM streams WHERE id = ?", (sid,)).fetchone()
                if row is None:
                    continue
                self._w.execute("DELETE FROM blocks WHERE key = ?", (row[0],))
                self._w.execute("DELETE FROM streams WHERE key = ?", (row[0],))
                self.count -= 1

    def archive(self, answers: Sequence[ArchivedAnswer]) -> list[str]:
        """Move finished answers into ``blocks`` in one fsynced transaction; returns the ids moved
        (a stream deleted meanwhile has no row any more and is skipped)."""
        moved = []
        with self._txn(full=True):
            for a in answers:
                row = self._w.execute(
                    "SELECT key FROM streams WHERE id = ? AND archived = 0", (a.meta.id,)
                ).fetchone()
                if row is None:
                    continue
                key = row[0]
                stored = sum(len(d) for _, d in a.blocks)
                self._w.executemany(
                    "INSERT OR REPLACE INTO blocks (key, first, data) VALUES (?, ?, ?)",
                    [(key, first, data) for first, data in a.blocks],
                )
                self._w.execute(
                    "UPDATE streams SET archived = 1, status = ?, closed = ?, deadline = ?, epoch = ?,"
                    " chunks = ?, raw_bytes = ?, stored_bytes = ?, error = ?, producers = ? WHERE key = ?",
                    (
                        STATUS_CODES[a.close.status],
                        a.close.at,
                        deadline(a.meta, a.close.at, self.default_ttl),
                        a.meta.epoch,
                        a.chunks,
                        a.raw_bytes,
                        stored,
                        a.close.error,
                        _labels_enc.encode(a.producers) if a.producers else None,
                        key,
                    ),
                )
                moved.append(a.meta.id)
        return moved


class _Txn:
    """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error); ``full`` fsyncs the commit."""

    def __init__(self, conn: sqlite3.Connection, full: bool = False) -> None:
        self.conn, self.full = conn, full

    def __enter__(self) -> None:
        if self.full:
            self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            if self.full:
                self.conn.execute("PRAGMA synchronous=NORMAL")


def _entry(row: tuple[Any, ...]) -> Entry:
    (key, sid, status, created, closed, epoch, ttl, expires_at, idle_ttl, ctype, labels, archived) = row[:12]
    chunks, raw, stored, error, producers = row[12:]
    meta = StreamMeta(
        id=sid,
        created=created,
        epoch=epoch,
        ttl=ttl,
        expires_at=expires_at,
        content_type=ctype,
        labels=_labels_dec.decode(labels) if labels else {},
        idle_ttl=idle_ttl,
    )
    return Entry(
        key=key,
        meta=meta,
        status=STATUS_NAMES[status],
        closed=closed,
        archived=bool(archived),
        chunks=chunks or 0,
        raw_bytes=raw or 0,
        stored_bytes=stored or 0,
        error=error,
        producers=_producers_dec.decode(producers) if producers else None,
    )
