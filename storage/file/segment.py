"""Segments: the files of one stream's log, and the scan that recovers them. No asyncio.

A stream directory holds::

    meta.json                 id, creation time, epoch, options (written once, atomically)
    checkpoint.json           producer state and raw byte count up to the end of the sealed segments
    <base>.log                raw segment: one record per append, the last one is the active tail
    <base>.zlog + <base>.idx  sealed segment: large zstd blocks, immutable, with its sparse index

``<base>`` is the first chunk offset, zero-padded to 20 digits so names sort like offsets.
A ``.zlog`` only ever appears by an atomic rename after fsync, so when both a ``.log`` and a
``.zlog`` share a base, the ``.log`` is the leftover of an interrupted seal and is removed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ..engine import CloseInfo
from . import record
from .index import SparseIndex

INDEX_EVERY = 4096  # bytes of raw segment between seek points


def seg_name(base: int, sealed: bool) -> str:
    return f"{base:020d}.{'zlog' if sealed else 'log'}"


def idx_name(base: int) -> str:
    return f"{base:020d}.idx"


class Checkpoint(msgspec.Struct):
    upto: int = 0
    raw_bytes: int = 0
    producers: dict[str, tuple[int, int, int, int]] = {}
    # each producer's retry window, (seq, first offset, count) oldest first (see log.remember)
    windows: dict[str, list[tuple[int, int, int]]] = {}


@dataclass(slots=True)
class Segment:
    base: int
    path: Path
    sealed: bool
    size: int = 0  # bytes of valid records
    end: int = 0  # offset after the last chunk
    index: SparseIndex = field(default_factory=SparseIndex)
    corrupt: list[tuple[int, int]] = field(default_factory=list)  # [first, end) offset ranges


@dataclass(slots=True)
class ScanResult:
    size: int  # bytes of the valid prefix
    end: int
    index: SparseIndex
    raw_bytes: int  # chunk bytes in records at or after ``count_from``
    marks: list[tuple[record.ProducerMark, int, int]]  # (mark, first_offset, count) in file order
    close: CloseInfo | None
    corrupt: list[tuple[int, int]]
    dropped_bytes: int  # torn or corrupt tail bytes after ``size``
    dropped_records: int  # complete, checksummed records lost with the tail (data someone may have seen)


def _raw_len(h: record.Header, payload: memoryview) -> int:
    if h.flags & record.COMPRESSED:
        _, body = record.split_payload(h, payload)
        n = record.zstandard.frame_content_size(body)
        return max(n, 0)
    _, body = record.split_payload(h, payload)
    lengths, _ = record._get_uvarints(body, 0, h.count)
    return sum(lengths)


def scan(buf: bytes, base: int, count_from: int = 0, index_every: int = INDEX_EVERY) -> ScanResult:
    """Verify every record of a segment image and describe its valid prefix.

    A record that fails its checksum but is followed by a valid record that starts exactly where it
    ends is a mid-file corruption: its offsets are reported in ``corrupt`` and never served, and
    the scan goes on. Anything else invalid is a torn tail: the valid prefix ends there.
    """
    mv = memoryview(buf)
    pos, expect = 0, base
    idx = SparseIndex()
    last_indexed = -index_every
    raw = 0
    marks: list[tuple[record.ProducerMark, int, int]] = []
    close: CloseInfo | None = None
    corrupt: list[tuple[int, int]] = []
    while pos < len(buf):
        h = record.parse_header(mv, pos)
        if close is not None:
            break
        if h is None or h.first_offset != expect or not record.check(mv, pos, h):
            # The damage may be in the header itself (length, type, offsets), so the next record is
            # found by searching for it, not by trusting this record's length. An all-zero header is
            # what a crash leaves where blocks were never written: a torn tail, not a bit flip.
            nxt = None if not any(mv[pos : pos + record.HEADER_SIZE]) else _resync(mv, pos + 1, expect)
            if nxt is None:
                break
            pos, first = nxt
            corrupt.append((expect, first))
            expect = first
            last_indexed = pos - index_every  # seek past the damage: reads must not walk through it
            continue
        payload = mv[pos + record.HEADER_SIZE : pos + h.size]
        if h.type == record.DATA:
            if pos - last_indexed >= index_every or h.flags & record.COMPRESSED:
                idx.add(h.first_offset, pos)
                last_indexed = pos
            if h.first_offset >= count_from:
                raw += _raw_len(h, payload)
                mark, _ = record.split_payload(h, payload)
                if mark is not None:
                    marks.append((mark, h.first_offset, h.count))
        else:
            try:
                close = msgspec.json.decode(payload, type=CloseInfo)
            except msgspec.DecodeError:
                break
        pos += h.size
        expect = h.end_offset
    # Complete, checksummed records beyond the cut mean data someone may have seen is gone.
    dropped_records = 0
    q = _next_valid(mv, pos)
    if q is not None:
        dropped_records = sum(1 for _ in record.iter_records(mv, q))
    return ScanResult(pos, expect, idx, raw, marks, close, corrupt, len(buf) - pos, dropped_records)


# What parse_header accepts, as a byte pattern (little-endian u32 length <= MAX_PAYLOAD, u32 crc, a
# known type, flags, u64 first offset, u32 count <= MAX_COUNT). The C regex engine skips damaged or
# torn bytes with it; parsing every byte position in Python would cost seconds per MiB.
_HEADER_LIKE = re.compile(
    rb"(?=(?:...[\x00-\x03]|\x00\x00\x00\x04)....[\x01\x02]........."
    rb"(?:...\x00|\x00\x00\x00\x01))",
    re.DOTALL,
)
assert (record.MAX_PAYLOAD, record.MAX_COUNT, record.RECORD_TYPES) == (64 << 20, 1 << 24, (1, 2))


def _next_valid(mv: memoryview, start: int) -> int | None:
    """Position of the first checksummed record at or after ``start``."""
    while (m := _HEADER_LIKE.search(mv, start)) is not None:
        q = m.start()
        h = record.parse_header(mv, q)
        if h is not None and record.check(mv, q, h):
            return q
        start = q + 1
    return None


def _resync(mv: memoryview, start: int, expect: int) -> tuple[int, int] | None:
    """Where valid records resume after a damaged one: (position, first offset), or None (torn tail).

    The first checksummed record after ``start`` that holds offsets past ``expect``. So one damaged
    record loses only its own offsets (reported as corrupt), never every acknowledged record after
    it; the cost is one parse attempt per damaged byte.
    """
    q = _next_valid(mv, start)
    while q is not None:
        h = record.parse_header(mv, q)
        if h is not None and h.first_offset > expect:
            return q, h.first_offset
        q = _next_valid(mv, q + 1)
    return None


def read_file(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, durable: bool = True, sync_dir: bool = True) -> None:
    """Write a whole file so that a crash leaves either the old file or the new one, never a mix.

    ``durable=False`` is for derived data (an index) that recovery validates and rebuilds anyway;
    ``sync_dir=False`` lets the caller fsync the directory once after several renames.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable and sync_dir:
        fsync_dir(path.parent)
