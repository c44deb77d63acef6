"""The catalog and the archive: one SQLite database per data dir (``store.db``). No asyncio here.

``streams`` has one row per stream that exists (live or archived): id, status, times, the meta
fields, and for an archived answer what its files used to say (chunk count, raw bytes, close,
producer state and retry windows). ``blocks`` holds archived answers: one row per block, keyed by
``arch << 32 | first offset`` (``arch`` numbers answers in archive order), so a seek is one B-tree
lookup (O(log n)), a long answer keeps its block structure, and appends fill whole pages (a pack
that grows in place, before the first dictionary, may split one: ``archive.pack``). A block
carries its own checksum (``codec.py``), so an archived byte is checked exactly as a segment byte
is, and a flipped bit answers ``corrupt_data``, never wrong text. ``dicts`` keeps every trained
zstd dictionary, ``settings`` the few counters that must survive a restart.

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
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from ..engine import CloseInfo, StreamMeta
from . import codec

SCHEMA_VERSION = 2  # 2: packs (streams.member_at) and shared keys (blocks.refs)
WAL_LIMIT = 1 << 20
PAGE_SIZE = 8192
OFFSET_MASK = (1 << 32) - 1  # a block's first offset in the low 32 bits of its key
JOIN_CHATS = 4096  # chats whose last pack is remembered, so that their next answers grow it
CLOSE_RECLAIM_PAGES = 4096  # free pages given back at a clean stop, at most (32 MiB: a quick stop)
STATUS_CODES = {"open": 0, "done": 1, "error": 2, "cancelled": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    id TEXT PRIMARY KEY NOT NULL, -- WITHOUT ROWID: the id is the B-tree key, no second index of it
    status INTEGER NOT NULL,      -- STATUS_CODES
    created REAL NOT NULL,
    closed REAL,
    deadline REAL,                -- min(expires_at, closed + ttl or the default ttl); NULL = never
    epoch NOT NULL,               -- 8 bytes when it is 16 hex digits (as the store makes them), else text
    ttl REAL,
    expires_at REAL,
    idle_ttl REAL,
    content_type TEXT,
    labels BLOB,                  -- msgpack map, NULL when empty
    arch INTEGER,                 -- archived: its blocks' key (in archive order); NULL: live, in files
    chunks INTEGER,               -- archived only, from here on
    raw_bytes INTEGER,
    error TEXT,
    producers BLOB,               -- msgpack [producer map, retry windows] as a checkpoint has them
    member_at INTEGER,            -- chunk index in the key's chunks of its offset 0 (NULL: 0)
    base BLOB                     -- a fork of an archived answer: msgpack [key, at, upto], the parent's
                                  -- blocks it reads its first upto chunks from (counted in their refs)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS streams_open ON streams(id) WHERE status = 0;
CREATE INDEX IF NOT EXISTS streams_live ON streams(id) WHERE arch IS NULL;
CREATE INDEX IF NOT EXISTS streams_deadline ON streams(deadline) WHERE deadline IS NOT NULL;
CREATE INDEX IF NOT EXISTS streams_idle ON streams(id) WHERE idle_ttl IS NOT NULL;
CREATE TABLE IF NOT EXISTS blocks (
    -- (streams.arch << 32) | first chunk offset of the block: one integer key, so the table is
    -- SQLite's rowid B-tree, and answers archived in order are appended to full pages
    pos INTEGER PRIMARY KEY,
    data BLOB NOT NULL,           -- one framed block (codec.py), checksum included
    refs INTEGER                  -- on a key's first row: the streams rows using the key (NULL: 1)
);
CREATE TABLE IF NOT EXISTS dicts (id INTEGER PRIMARY KEY, data BLOB NOT NULL, trained REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
"""

_COLS = (
    "id, status, created, closed, epoch, ttl, expires_at, idle_ttl, content_type, labels,"
    " arch, chunks, raw_bytes, error, producers, member_at, base"
)
# version 1 -> 2: the new columns are NULL in old rows, which is what they mean there (not packed,
# one user per key)
_MIGRATE_1 = (
    "ALTER TABLE streams ADD COLUMN member_at INTEGER",
    "ALTER TABLE blocks ADD COLUMN refs INTEGER",
    "ALTER TABLE streams ADD COLUMN base BLOB",
)

Producers = dict[str, tuple[int, int, int, int]]
Base = tuple[int, int, int]  # (archive key, its ``member_at``, chunks shared): a fork's parent blocks
Windows = dict[str, list[tuple[int, int, int]]]
_labels_enc = msgspec.msgpack.Encoder()
_labels_dec = msgspec.msgpack.Decoder(dict[str, str])
_base_dec = msgspec.msgpack.Decoder(tuple[int, int, int])
_producers_dec = msgspec.msgpack.Decoder(
    tuple[dict[str, tuple[int, int, int, int]], dict[str, list[tuple[int, int, int]]]]
)


@dataclass(slots=True)
class Entry:
    """One row of ``streams``."""

    meta: StreamMeta
    status: str
    closed: float | None
    arch: int | None  # the archive key of its blocks; None while the stream lives in files
    chunks: int = 0
    raw_bytes: int = 0
    error: str | None = None
    producers: Producers | None = None
    windows: Windows | None = None
    member_at: int = 0  # archived: the index, among its key's chunks, of its offset 0
    base: Base | None = None  # a fork of an archived answer: where its first chunks are read from

    @property
    def archived(self) -> bool:
        return self.arch is not None

    @property
    def close_info(self) -> CloseInfo | None:
        if self.status == "open":
            return None
        return CloseInfo(self.status, self.error, self.closed or 0.0)


@dataclass(frozen=True, slots=True)
class ArchivedAnswer:
    """What moving one finished answer into the archive writes (its blocks: ``Pack``)."""

    meta: StreamMeta  # as the stream's files say now (recovery may have renewed the epoch)
    chunks: int
    raw_bytes: int
    close: CloseInfo
    producers: Producers
    windows: Windows
    member_at: int = 0  # the index, among its pack's chunks, of its offset 0
    first: int = 0  # its first own chunk (a fork of an archived answer reads the ones before from its base)


@dataclass(frozen=True, slots=True)
class Pack:
    """Blocks stored under one archive key, and the answers that read them: one long answer's
    sealed blocks, or one block holding the chunks of several short answers, one after the other."""

    blocks: Sequence[tuple[int, bytes]]  # (first offset, framed block: codec.py)
    answers: Sequence[ArchivedAnswer]
    chat: str | None = None  # a pack of this chat's short answers: its later ones may grow it
    raw: int = 0  # bytes of the chunks in it (what it holds of the pack it grows included)
    # grows that pack (archive key, its one block as read) instead of taking a new key: the new
    # block holds the old one's chunks first, so its answers' ``member_at`` stay right
    joins: tuple[int, bytes] | None = None


def deadline(meta: StreamMeta, closed: float | None, default_ttl: float | None) -> float | None:
    ttl = meta.ttl if meta.ttl is not None else default_ttl
    times = [meta.expires_at, closed + ttl if closed is not None and ttl is not None else None]
    known = [t for t in times if t is not None]
    return min(known) if known else None


def _connect(path: Path, new: bool = False) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; writes say BEGIN/COMMIT themselves
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=64)
    if new:
        # 8 KiB pages: an archived block (one answer or a chat's pack) is ~0.3-4 KB, and 4 KiB pages
        # left 17% of the blocks table unused (the next block does not fit) and spilled the bigger
        # packs to overflow pages; 8 KiB cut that to 8% (bench.footprint: 331 -> 311 B per answer),
        # 16 KiB gains 1 B more and costs a 16 KiB WAL frame per page a commit touches
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        # INCREMENTAL: pages freed by retention go back to the file system (Catalog.reclaim), not
        # only to SQLite's free list; it can be chosen only before the database has its first page
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    # WAL: readers (the event loop) never wait for the writer, and a commit is one append to -wal
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL: a commit survives a process crash; an OS crash may drop the last commits, which is
    # safe only for what the stream files can re-derive, so archive moves and deletes use FULL
    conn.execute("PRAGMA synchronous=NORMAL")
    # a reader may meet a checkpoint or WAL recovery in progress: wait for it rather than fail
    conn.execute("PRAGMA busy_timeout=10000")
    # after a checkpoint the WAL file shrinks back to this instead of staying at its high-water
    # mark (a VACUUM or a big archive batch writes megabytes to it)
    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
    return conn


class Catalog:
    def __init__(self, path: Path, default_ttl: float | None = None) -> None:
        self.path = path
        self.created = not path.exists()
        self.default_ttl = default_ttl
        self._w = _connect(path, new=self.created)
        self._w.executescript(_SCHEMA)
        version = self._w.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            with self._txn():
                for stmt in _MIGRATE_1:
                    self._w.execute(stmt)
                self._w.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version == 0:
            self._w.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise RuntimeError(f"{path}: catalog schema {version}, this code knows {SCHEMA_VERSION}")
        self._apply_default_ttl(default_ttl)
        row = self._w.execute("SELECT value FROM settings WHERE name = 'next_arch'").fetchone()
        self._next_arch = row[0] if row is not None else 1
        row = self._w.execute("SELECT value FROM settings WHERE name = 'archived_bytes'").fetchone()
        self.archived_bytes = row[0] if row is not None else 0  # blob bytes of every archived block
        self._r = _connect(path)
        # the number of rows, kept in ``settings`` by the transactions that add and delete rows:
        # count(*) reads the whole table (0.6 s at 1M answers), so only a catalog that predates
        # the setting counts them, once
        row = self._w.execute("SELECT value FROM settings WHERE name = 'streams_count'").fetchone()
        if row is not None:
            self.count = int(row[0])
        else:
            self.count = self._w.execute("SELECT count(*) FROM streams").fetchone()[0]
            with self._txn():
                self._save_count()
        # chat -> (archive key, raw bytes) of its last pack made since start (``joinable``); written
        # on the database thread after a commit, read by the archive's packing thread
        self._packs: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._side: sqlite3.Connection | None = None  # the packing thread's reads (``joinable``)
        self._side_lock = threading.Lock()

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
        """A clean stop: free pages go back to the file system (a grown pack leaves some), and the
        last connection's close checkpoints the WAL into the database and deletes it."""
        try:
            if self._w.execute("PRAGMA freelist_count").fetchone()[0]:
                self.reclaim(CLOSE_RECLAIM_PAGES)
        except sqlite3.Error:
            pass  # the pages stay free inside the file, reused by the next writes
        with self._side_lock:
            if self._side is not None:
                self._side.close()
                self._side = None
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
        rows = self._r.execute("SELECT id, status, closed FROM streams WHERE arch IS NULL ORDER BY id")
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
            "SELECT pos, data FROM blocks WHERE pos BETWEEN ? AND ? ORDER BY pos DESC LIMIT 1",
            (key << 32, (key << 32) | offset),
        ).fetchone()
        return None if row is None else (row[0] & OFFSET_MASK, bytes(row[1]))

    def blocks_in(self, key: int, lo: int, hi: int) -> int:
        """How many of ``key``'s blocks hold its chunks ``lo`` .. ``hi - 1``."""
        k = key << 32
        start = self._r.execute(
            "SELECT max(pos) FROM blocks WHERE pos BETWEEN ? AND ?", (k, k | lo)
        ).fetchone()[0]
        if start is None or hi <= lo:
            return 0
        row = self._r.execute(
            "SELECT count(*) FROM blocks WHERE pos BETWEEN ? AND ?", (start, k | (hi - 1))
        ).fetchone()
        return int(row[0])

    def stored_bytes(self, key: int) -> int:
        """Bytes of ``key``'s blocks, divided among the rows that share them (a pack's answers)."""
        k = key << 32
        size = self._r.execute(
            "SELECT sum(length(data)) FROM blocks WHERE pos BETWEEN ? AND ?", (k, k | OFFSET_MASK)
        ).fetchone()[0]
        refs = self._r.execute("SELECT refs FROM blocks WHERE pos = ?", (k,)).fetchone()
        return int(size or 0) // ((refs[0] if refs is not None else None) or 1)

    def joinable(self, chat: str) -> tuple[int, bytes, int] | None:
        """(archive key, block, raw bytes) of ``chat``'s last pack archived since start, if it is
        still there: the next answers of the chat grow it (``archive.pack``). Any thread."""
        with self._side_lock:
            got = self._packs.get(chat)
            if got is None:
                return None
            if self._side is None:
                self._side = _connect(self.path)
            row = self._side.execute("SELECT data FROM blocks WHERE pos = ?", (got[0] << 32,)).fetchone()
        return None if row is None else (got[0], bytes(row[0]), got[1])

    def dicts(self) -> dict[int, bytes]:
        """Every trained dictionary (a few: one per retraining), kept as long as the store lives."""
        return {i: bytes(d) for i, d in self._r.execute("SELECT id, data FROM dicts")}

    # --- writes (the database thread only) -----------------------------------------------------

    def _txn(self, full: bool = False) -> _Txn:
        return _Txn(self._w, full, self._reload_totals)

    def _reload_totals(self) -> None:
        """After a rollback: the in-memory totals a transaction moved go back to what is committed."""
        row = self._w.execute("SELECT value FROM settings WHERE name = 'archived_bytes'").fetchone()
        self.archived_bytes = row[0] if row is not None else 0
        row = self._w.execute("SELECT value FROM settings WHERE name = 'streams_count'").fetchone()
        self.count = (
            int(row[0]) if row is not None else self._w.execute("SELECT count(*) FROM streams").fetchone()[0]
        )

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
            " WHERE arch IS NULL",
            (
                meta.id,
                STATUS_CODES[status],
                meta.created,
                closed,
                deadline(meta, closed, self.default_ttl),
                _epoch(meta.epoch),
                meta.ttl,
                meta.expires_at,
                meta.idle_ttl,
                meta.content_type,
                _labels_enc.encode(meta.labels) if meta.labels else None,
            ),
        )
        if known is None:
            self.count += 1
            self._save_count()

    def add_fork(self, meta: StreamMeta, base: Base) -> bool:
        """A fork's row, reading its first chunks from ``base``: one more user of those blocks, in
        the same fsynced transaction. False if the parent's blocks are gone (deleted meanwhile)."""
        k = base[0] << 32
        with self._txn(full=True):
            row = self._w.execute("SELECT refs FROM blocks WHERE pos = ?", (k,)).fetchone()
            if row is None:
                return False
            self._insert(meta, "open", None)
            self._w.execute("UPDATE blocks SET refs = ? WHERE pos = ?", ((row[0] or 1) + 1, k))
            self._w.execute(
                "UPDATE streams SET base = ? WHERE id = ?", (_labels_enc.encode(list(base)), meta.id)
            )
        return True

    def set_status(self, meta: StreamMeta, status: str, closed: float | None) -> None:
        with self._txn():
            self._w.execute(
                "UPDATE streams SET status = ?, closed = ?, deadline = ?, epoch = ? WHERE id = ?",
                (
                    STATUS_CODES[status],
                    closed,
                    deadline(meta, closed, self.default_ttl),
                    _epoch(meta.epoch),
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
        """Forget streams (and the archived blocks no other row uses). ``durable``: fsynced
        before returning."""
        with self._txn(full=durable):
            for sid in stream_ids:
                row = self._w.execute("SELECT arch, base FROM streams WHERE id = ?", (sid,)).fetchone()
                if row is None:
                    continue
                if row[0] is not None:
                    self._unref(row[0])
                if row[1] is not None:
                    self._unref(_base_dec.decode(row[1])[0])
                self._w.execute("DELETE FROM streams WHERE id = ?", (sid,))
                self.count -= 1
            self._save_count()
            self._save_archived_bytes()

    def _unref(self, key: int) -> None:
        """One row fewer uses ``key``'s blocks; the last one frees them."""
        k = key << 32
        row = self._w.execute("SELECT refs FROM blocks WHERE pos = ?", (k,)).fetchone()
        if row is not None and (row[0] or 1) > 1:
            self._w.execute(
                "UPDATE blocks SET refs = ? WHERE pos = ?", (row[0] - 1 if row[0] > 2 else None, k)
            )
            return
        size = self._w.execute(
            "SELECT sum(length(data)) FROM blocks WHERE pos BETWEEN ? AND ?", (k, k | OFFSET_MASK)
        ).fetchone()[0]
        self.archived_bytes -= size or 0
        self._w.execute("DELETE FROM blocks WHERE pos BETWEEN ? AND ?", (k, k | OFFSET_MASK))

    def archive(self, packs: Sequence[Pack], durable: bool = True) -> list[str]:
        """Move finished answers into ``blocks`` in one transaction (fsynced if ``durable``: always,
        unless the store's policy is ``never``); returns the ids moved (a stream deleted meanwhile
        has no row any more and is skipped; a pack none of whose answers is left is not written)."""
        moved = []
        made: dict[str, tuple[int, int]] = {}
        stale: list[str] = []
        with self._txn(full=durable):
            for pack in packs:
                live = [
                    a
                    for a in pack.answers
                    if self._w.execute(
                        "SELECT 1 FROM streams WHERE id = ? AND arch IS NULL", (a.meta.id,)
                    ).fetchone()
                    is not None
                ]
                if not live:
                    continue
                if pack.joins is not None:
                    key = self._grow(pack, pack.joins, len(live))
                    if key is None:  # deleted or recoded meanwhile: these answers stay in files
                        if pack.chat is not None:
                            stale.append(pack.chat)
                        continue
                else:
                    key = self._next_arch
                    self._next_arch += 1
                    self.archived_bytes += sum(len(d) for _, d in pack.blocks)
                    refs = len(live) if len(live) > 1 else None
                    self._w.executemany(
                        "INSERT OR REPLACE INTO blocks (pos, data, refs) VALUES (?, ?, ?)",
                        [
                            ((key << 32) | first, data, refs if first == 0 else None)
                            for first, data in pack.blocks
                        ],
                    )
                if pack.chat is not None:
                    made[pack.chat] = (key, pack.raw)
                for a in live:
                    self._w.execute(
                        "UPDATE streams SET arch = ?, status = ?, closed = ?, deadline = ?, epoch = ?,"
                        " chunks = ?, raw_bytes = ?, error = ?, producers = ?, member_at = ? WHERE id = ?",
                        (
                            key,
                            STATUS_CODES[a.close.status],
                            a.close.at,
                            deadline(a.meta, a.close.at, self.default_ttl),
                            _epoch(a.meta.epoch),
                            a.chunks,
                            a.raw_bytes,
                            a.close.error,
                            _labels_enc.encode((a.producers, a.windows)) if a.producers else None,
                            a.member_at or None,
                            a.meta.id,
                        ),
                    )
                    moved.append(a.meta.id)
            self._w.execute("INSERT OR REPLACE INTO settings VALUES ('next_arch', ?)", (self._next_arch,))
            self._save_archived_bytes()
        with self._side_lock:  # committed: what the next batches may grow
            for chat in stale:
                self._packs.pop(chat, None)  # the next try starts a pack of its own
            for chat, got in made.items():
                self._packs[chat] = got
                self._packs.move_to_end(chat)
            while len(self._packs) > JOIN_CHATS:
                self._packs.popitem(last=False)
        return moved

    def _grow(self, pack: Pack, joins: tuple[int, bytes], users: int) -> int | None:
        """Swap a pack's block for ``pack``'s (the old chunks and ``users`` more answers' after them)
        if it is still the block ``archive.pack`` read; its key, or None."""
        key, old = joins
        row = self._w.execute("SELECT data, refs FROM blocks WHERE pos = ?", (key << 32,)).fetchone()
        if row is None or bytes(row[0]) != old or len(pack.blocks) != 1 or pack.blocks[0][0] != 0:
            return None
        if len(old) > 4 and old[4] & codec.DICT:
            # recoded with the first dictionary since it was read (a batch packed before training):
            # growing it would code it again without one, behind the recoding pass
            return None
        new = pack.blocks[0][1]
        self._w.execute(
            "UPDATE blocks SET data = ?, refs = ? WHERE pos = ?", (new, (row[1] or 1) + users, key << 32)
        )
        self.archived_bytes += len(new) - len(old)
        return key

    def blocks_between(self, lo: int, hi: int) -> list[tuple[int, int, bytes]]:
        """(key, first, data) of the blocks of archive keys lo..hi-1 (the recoding pass)."""
        rows = self._r.execute(
            "SELECT pos, data FROM blocks WHERE pos >= ? AND pos < ?", (lo << 32, hi << 32)
        )
        return [(p >> 32, p & OFFSET_MASK, bytes(d)) for p, d in rows]

    @property
    def next_arch(self) -> int:
        return self._next_arch

    def replace_blocks(self, rows: Sequence[tuple[int, int, bytes, bytes]]) -> None:
        """Swap blocks for equivalent ones (recoded): (key, first, new, the block it recodes). The
        old bytes stay valid until the commit; a block that changed since it was read (a pack grown
        meanwhile) is left as it is now."""
        with self._txn():
            for k, f, d, was in rows:
                pos = (k << 32) | f
                old = self._w.execute("SELECT data FROM blocks WHERE pos = ?", (pos,)).fetchone()
                if old is not None and bytes(old[0]) == was:
                    self._w.execute("UPDATE blocks SET data = ? WHERE pos = ?", (d, pos))
                    self.archived_bytes += len(d) - len(was)
            self._save_archived_bytes()

    def _save_count(self) -> None:
        self._w.execute("INSERT OR REPLACE INTO settings VALUES ('streams_count', ?)", (self.count,))

    def _save_archived_bytes(self) -> None:
        self._w.execute(
            "INSERT OR REPLACE INTO settings VALUES ('archived_bytes', ?)", (self.archived_bytes,)
        )

    def ensure_arch_index(self) -> None:
        """An index of archived answers in archive order, for a total-bytes cap (made only when a
        cap is set: other stores need not pay its bytes per answer)."""
        self._w.execute("CREATE INDEX IF NOT EXISTS streams_arch ON streams(arch) WHERE arch IS NOT NULL")

    def oldest_archived(self, limit: int) -> list[tuple[str, int]]:
        """(id, stored bytes) of the first archived answers, oldest first (needs ensure_arch_index)."""
        rows = self._r.execute(
            "SELECT id, arch FROM streams WHERE arch IS NOT NULL ORDER BY arch LIMIT ?", (limit,)
        ).fetchall()
        return [(sid, self.stored_bytes(arch)) for sid, arch in rows]

    def page_bytes(self) -> tuple[int, int]:
        """(bytes of the database's pages in use, bytes of its free pages). Two pragmas: cheap."""
        pages = self._r.execute("PRAGMA page_count").fetchone()[0]
        free = self._r.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._r.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size), int(free * size)

    def table_bytes(self) -> dict[str, int] | None:
        """Page bytes of each table and index (SQLite's dbstat), None where dbstat is not built in.
        Reads every page: O(database), for an occasional look (``Store.footprint``), never per call."""
        # its own connection: one connection runs one statement at a time, so a scan on the loop's
        # reader (``_r``) would hold up every catalog read the event loop makes meanwhile
        conn = _connect(self.path)
        try:
            rows = conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
        except sqlite3.OperationalError:
            return None
        finally:
            conn.close()
        return {name: int(size) for name, size in rows}

    def reclaim(self, pages: int = 0) -> None:
        """Give free pages back to the file system (after retention removed answers): all of
        them, or up to ``pages``."""
        # executescript steps the pragma to its end (execute would free one page: one step)
        self._w.executescript(f"PRAGMA incremental_vacuum({int(pages)});")

    def vacuum(self) -> None:
        """Rewrite the database compactly (after the first recoding pass, while it is still small)."""
        self._w.execute("VACUUM")

    def add_dict(self, data: bytes, trained: float) -> int:
        with self._txn(full=True):
            cur = self._w.execute("INSERT INTO dicts (data, trained) VALUES (?, ?)", (data, trained))
            return int(cur.lastrowid or 0)


class _Txn:
    """BEGIN IMMEDIATE .. COMMIT (ROLLBACK on error); ``full`` fsyncs the commit."""

    def __init__(
        self, conn: sqlite3.Connection, full: bool = False, rolled_back: Callable[[], None] | None = None
    ) -> None:
        self.conn, self.full, self.rolled_back = conn, full, rolled_back

    def __enter__(self) -> None:
        if self.full:
            self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
            if exc_type is not None and self.rolled_back is not None:
                self.rolled_back()
        finally:
            if self.full:
                self.conn.execute("PRAGMA synchronous=NORMAL")


def _epoch(epoch: str) -> bytes | str:
    if len(epoch) == 16 and epoch == epoch.lower():
        try:
            return bytes.fromhex(epoch)
        except ValueError:
            pass
    return epoch


def _entry(row: tuple[Any, ...]) -> Entry:
    (sid, status, created, closed, epoch, ttl, expires_at, idle_ttl, ctype, labels, arch) = row[:11]
    chunks, raw, error, producers, member_at, base = row[11:]
    states, windows = _producers_dec.decode(producers) if producers else (None, None)
    meta = StreamMeta(
        id=sid,
        created=created,
        epoch=epoch.hex() if isinstance(epoch, bytes) else epoch,
        ttl=ttl,
        expires_at=expires_at,
        content_type=ctype,
        labels=_labels_dec.decode(labels) if labels else {},
        idle_ttl=idle_ttl,
    )
    return Entry(
        meta=meta,
        status=STATUS_NAMES[status],
        closed=closed,
        arch=arch,
        chunks=chunks or 0,
        raw_bytes=raw or 0,
        error=error,
        producers=states,
        windows=windows,
        member_at=member_at or 0,
        base=_base_dec.decode(base) if base else None,
    )
