"""Archived answers: a finished stream whose sealed blocks live in the catalog database, not in files.

``pack`` (blocking, a worker thread) reads a closed, fully sealed stream's segment files and returns
the rows that replace them: each sealed block as the framed record it already is, plus what the
stream's files said about it (chunk count, raw bytes, close, producer state). ``ArchivedLog`` then
serves the answer through the same ``Log`` interface (``Stream`` and the hub cannot tell): a read
seeks with one B-tree lookup on (stream key, first offset), checks the record's checksum, and
decompresses one block (the last one stays cached, as in ``Log``).

Invariants: an archived answer is immutable (appends and closes answer ``stream_closed``, retries of
the producer's last append still answer ``duplicate``); a block that fails its checksum, does not
decompress, or is missing answers ``corrupt_data`` and is never served.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..engine import ProducerState
from ..errors import CorruptData, OffsetOutOfRange
from . import record
from .catalog import ArchivedAnswer, Catalog, Entry
from .log import Log, LogOptions, split_mark
from .segment import read_file


def archivable(log: Log) -> bool:
    """Closed, durable, every segment sealed and undamaged: nothing about it can change any more."""
    return (
        not isinstance(log, ArchivedLog)
        and log.close_durable
        and log.close_info is not None
        and not log.failed
        and bool(log.segments)
        and all(s.sealed and not s.corrupt for s in log.segments)
        and log.durable_offset == log.next_offset
    )


def pack(log: Log) -> ArchivedAnswer | None:
    """The archive rows of a stream for which ``archivable`` held (None if a file turns out damaged)."""
    assert log.close_info is not None
    blocks: list[tuple[int, bytes]] = []
    expect = log.segments[0].base
    if expect != 0:
        return None
    for seg in log.segments:
        mv = memoryview(read_file(seg.path))[: seg.size]
        end = 0
        for pos, h in record.iter_records(mv):
            end = pos + h.size
            if h.type != record.DATA:
                continue
            if h.first_offset != expect:
                return None
            blocks.append((h.first_offset, bytes(mv[pos:end])))
            expect = h.end_offset
        if end != seg.size:
            return None  # a record failed its checksum since the seal: keep the files for recovery
    if expect != log.durable_offset:
        return None
    return ArchivedAnswer(
        meta=log.meta,
        blocks=blocks,
        chunks=log.durable_offset,
        raw_bytes=log.raw_bytes,
        close=log.close_info,
        producers=dict(log.checkpoint.producers),
    )


class ArchivedLog(Log):
    """A finished answer served from the archive; read-only."""

    def __init__(self, path: Path, entry: Entry, opts: LogOptions, catalog: Catalog) -> None:
        super().__init__(path, entry.meta, opts)
        self.catalog = catalog
        self.key = entry.key
        self.next_offset = self.written_offset = self.durable_offset = entry.chunks
        self.close_info = entry.close_info
        self.close_durable = True
        self.raw_bytes = entry.raw_bytes
        self._stored = entry.stored_bytes
        self._block: tuple[int, record.Header, record.Body] | None = None
        for k, v in (entry.producers or {}).items():
            pid, stream_seq = split_mark(k)
            if pid is not None:
                self.producers[pid] = ProducerState(*v)
            if stream_seq is not None:
                self.stream_seq = stream_seq
        self._save_undo()

    @property
    def stored_bytes(self) -> int:
        return self._stored

    def release_files(self) -> bool:
        return True  # holds no file

    def destroy(self) -> None:
        pass  # its rows go with the catalog row (Catalog.remove)

    def read(self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None) -> list[bytes]:
        limit = self.durable_offset
        if from_offset < 0 or from_offset > limit:
            raise OffsetOutOfRange(f"offset {from_offset} is outside 0..{limit}")
        budget = max_bytes or self.opts.max_read_bytes
        out: list[bytes] = []
        offset = from_offset
        try:
            while offset < limit and len(out) < max_chunks and budget > 0:
                h, body = self._block_at(offset)
                a = offset - h.first_offset
                for c in body.slice(a, a + max_chunks - len(out)):
                    if budget <= 0:
                        break
                    out.append(c)
                    budget -= len(c)
                    offset += 1
        except CorruptData:
            if out:
                return out  # serve what is good up to the damage; the next read raises
            raise
        return out

    def _block_at(self, offset: int) -> tuple[record.Header, record.Body]:
        b = self._block
        if b is not None and b[1].first_offset <= offset < b[1].end_offset:
            return b[1], b[2]
        try:
            got = self.catalog.block_at(self.key, offset)
        except sqlite3.DatabaseError as e:
            raise CorruptData(f"archive read failed: {e}") from None
        if got is None:
            raise CorruptData(f"archived block for offset {offset} is missing")
        first, data = got
        h = record.parse_header(data)
        if h is None or h.type != record.DATA or not record.check(data, 0, h) or h.first_offset != first:
            raise CorruptData(f"archived block at offset {first} failed its checksum")
        if not h.first_offset <= offset < h.end_offset:
            raise CorruptData(f"archived blocks for offsets {h.end_offset}..{offset + 1} are missing")
        bound = self.opts.block_bytes + self.opts.max_append_bytes + 5 * h.count
        body = record.decode_block(h, memoryview(data)[record.HEADER_SIZE :], bound)
        self._block = (first, h, body)
        return h, body
