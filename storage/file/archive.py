"""Archived answers: a finished stream whose sealed blocks live in the catalog database, not in files.

``load`` (blocking, a worker thread) reads a closed, fully sealed stream's segment files: its
chunks if it is short, its sealed records if not, and what its files said about it (chunk count,
raw bytes, close, producer state). ``pack`` turns a batch of them into the rows that replace the
files. Short answers (up to ``SMALL_ANSWER`` raw bytes, nearly all of them) are recoded: the
SEPARATED layout and the store's trained zstd dictionary (``codec.py``), and the short answers of
one chat archived together share one block (a *pack*: one frame, one row, one dictionary context);
until the store has a dictionary, a chat's later answers grow its last pack (``pack``).
A long answer keeps its sealed blocks byte for byte, so archiving never recompresses megabytes.
``ArchivedLog`` then serves the answer through the same ``Log`` interface (``Stream`` and the hub
cannot tell): a read seeks with one B-tree lookup on (archive key, first offset), checks the block's
checksum and decompresses it (the last one stays cached, as in ``Log``).

Dictionaries: trained (``train``) from the store's own short answers once ``DICT_TRAIN_AFTER`` have
been seen, retrained every ``DICT_RETRAIN_EVERY``; each is kept under its id for as long as the store
lives (blocks name the one they were coded with). Answers archived before the first dictionary are
recoded with it afterwards (``recode``).

A pack's blocks are freed when the last answer using them is deleted (``blocks.refs``): deleting
one answer of a chat frees its catalog row at once and its text with the chat's last answer.

Invariants: an archived answer is immutable (appends and closes answer ``stream_closed``, retries of
the producer's last append still answer ``duplicate``); a block that fails its checksum, does not
decompress, or is missing answers ``corrupt_data`` and is never served.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from ..engine import ProducerState
from ..errors import CorruptData, OffsetOutOfRange
from . import codec, record
from .catalog import OFFSET_MASK, ArchivedAnswer, Base, Catalog, Entry, Pack
from .log import SEQ_SEP, Log, LogOptions, split_mark
from .segment import read_file

SMALL_ANSWER = 64 << 10  # raw bytes up to which an answer is recoded (separated, dictionary)
PACK_BYTES = 32 << 10  # chunk bytes of one chat's short answers coded together as one block
DICT_BYTES = 110 << 10  # zstd's own default dictionary size
DICT_TRAIN_AFTER = 1000  # short answers seen before the first dictionary is trained
DICT_RETRAIN_EVERY = 100_000
DICT_SAMPLES = 4000  # the most recent short answers kept as training samples
ARCHIVE_LEVEL = 19

Dicts = dict[int, zstandard.ZstdCompressionDict]


def short(log: Log) -> bool:
    """Short enough to be recoded into one block: such an answer need not be sealed first."""
    return log.raw_bytes <= SMALL_ANSWER


def archivable(log: Log) -> bool:
    """Closed, durable, undamaged, and sealed unless short: nothing about it can change any more."""
    return (
        not isinstance(log, ArchivedLog)
        and log.close_durable
        and log.close_info is not None
        and not log.failed
        and bool(log.segments)
        and all(not s.corrupt for s in log.segments)
        and ((short(log) and len(log.segments) == 1) or all(s.sealed for s in log.segments))
        and log.durable_offset == log.next_offset
        and log.durable_offset <= OFFSET_MASK  # offsets must fit a block key's low 32 bits
    )


def compressor(d: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    return codec.compressor(ARCHIVE_LEVEL, d)


def chat_of(stream_id: str) -> str:
    """The answers packed together: those of one chat (the id up to its last ``/``)."""
    return stream_id.rpartition("/")[0]


@dataclass(slots=True)
class Loaded:
    """One archivable stream read from its files: its chunks if short, else its sealed records."""

    answer: ArchivedAnswer
    chunks: list[bytes] | None
    records: list[bytes]


def load(log: Log) -> Loaded | None:
    """Read a stream for which ``archivable`` held; None if a file turns out damaged (the files then
    stay). Blocking (a worker thread)."""
    assert log.close_info is not None
    records: list[tuple[record.Header, bytes]] = []
    first = expect = log.prefix.hi if log.prefix is not None else 0  # a fork reads those from its base
    for seg in log.segments:
        mv = memoryview(read_file(seg.path))[: seg.size]
        end = 0
        for pos, h in record.iter_records(mv):
            end = pos + h.size
            if h.type != record.DATA:
                continue
            if h.first_offset != expect:
                return None
            records.append((h, bytes(mv[pos:end])))
            expect = h.end_offset
        if end != seg.size:
            return None  # a record failed its checksum since the seal: keep the files for recovery
    if expect != log.durable_offset:
        return None
    chunks = None
    if short(log) and records:
        chunks = []
        for h, rec in records:
            chunks += record.decode_data(
                h, memoryview(rec)[record.HEADER_SIZE :], 2 * SMALL_ANSWER + 5 * h.count
            )
    answer = ArchivedAnswer(
        meta=log.meta,
        chunks=log.durable_offset,
        raw_bytes=log.raw_bytes,
        close=log.close_info,
        producers=_producers(log),
        windows={k: list(w) for k, w in log.windows.items()},
        first=first,
    )
    return Loaded(answer, chunks, [rec for _, rec in records])


Joinable = Callable[[str], tuple[int, bytes, int] | None]


@dataclass(slots=True)
class _Open:
    """A pack being filled: its answers, its chunks (those of the pack it grows first) and raw bytes."""

    members: list[ArchivedAnswer]
    chunks: list[bytes]
    joins: tuple[int, bytes] | None = None

    @property
    def raw(self) -> int:
        return sum(map(len, self.chunks))


def _grown(chat: str, size: int, joinable: Joinable | None, dicts: Dicts) -> _Open:
    """A new pack for ``chat``, or the chat's last pack if it has room for ``size`` more bytes."""
    got = joinable(chat) if joinable is not None else None
    if got is not None:
        key, blob, raw = got
        if raw + size <= PACK_BYTES:
            try:
                _, body = codec.decode(0, blob, codec.MAX_BARE, dicts)
            except CorruptData:
                pass  # left alone: it answers corrupt_data when read, and the answer starts a pack
            else:
                return _Open([], body.slice(0, len(body)), (key, blob))
    return _Open([], [])


def pack(
    loaded: Sequence[Loaded],
    cctx: zstandard.ZstdCompressor,
    dict_id: int | None,
    joinable: Joinable | None = None,
    dicts: Dicts | None = None,
) -> tuple[list[Pack], list[bytes]]:
    """The packs that archive ``loaded`` (in order), and the short answers' training samples.

    Short answers of one chat go into one block, up to ``PACK_BYTES`` of chunks: one frame and one
    row for the lot, and the second answer of a chat compresses against the first. A chat's answers
    end minutes apart and are archived in different batches, so a batch's first short answer of a
    chat grows the chat's last pack (``joinable``: key, block and raw bytes of it, or None) when it
    has room: the pack is coded again with its old chunks first (their offsets in it unchanged) and
    the catalog swaps the block in place if it is still the one read here. A long answer keeps its
    sealed blocks under a key of its own."""
    packs: list[Pack] = []
    samples: list[bytes] = []
    open_packs: dict[str, _Open] = {}
    dicts = dicts if dicts is not None else {}
    if dict_id is not None:
        # With a dictionary, the chat's earlier answers add little context (12% fewer block bytes)
        # and a pack that grows in place splits B-tree pages in the middle of ``blocks`` (72% full
        # instead of 89%): a loss. Without one they are the only context (25% fewer bytes), and the
        # first dictionary's recoding is followed by a VACUUM that packs the pages again.
        joinable = None

    def emit(chat: str, p: _Open) -> None:
        block = codec.encode(0, p.chunks, cctx, dict_id)
        packs.append(Pack([(0, block)], p.members, chat=chat, raw=p.raw, joins=p.joins))

    for item in loaded:
        a = item.answer
        if item.chunks is None:
            packs.append(Pack([codec.from_record(rec) for rec in item.records], [a]))
            continue
        if item.chunks:
            samples.append(codec.sample(item.chunks))
        chat = chat_of(a.meta.id)
        size = sum(map(len, item.chunks))
        p = open_packs.get(chat)
        if p is None:
            p = _grown(chat, size, joinable, dicts)
        elif p.members and p.raw + size > PACK_BYTES:
            emit(chat, p)
            p = _Open([], [])
        p.members.append(dataclasses.replace(a, member_at=len(p.chunks) - a.first))
        p.chunks += item.chunks
        open_packs[chat] = p
    for chat, p in open_packs.items():
        emit(chat, p)
    return packs, samples


def _producers(log: Log) -> dict[str, tuple[int, int, int, int]]:
    """The producer state to keep, as a checkpoint keeps it (raw records carry it in their marks,
    which the archive drops; the log in memory has it whole)."""
    out = {pid: (p.epoch, p.seq, p.first_offset, p.count) for pid, p in log.producers.items()}
    if log.stream_seq is not None:
        out[SEQ_SEP + log.stream_seq] = (0, 0, 0, 0)
    return out


def train(samples: Sequence[bytes]) -> bytes:
    return zstandard.train_dictionary(DICT_BYTES, list(samples), level=ARCHIVE_LEVEL).as_bytes()


def recode(
    rows: Sequence[tuple[int, int, bytes]], dicts: Dicts, dict_id: int
) -> list[tuple[int, int, bytes, bytes]]:
    """Blocks coded without a dictionary, coded again with ``dict_id`` (others are left alone):
    (key, first, new block, the block it replaces)."""
    cctx = compressor(dicts[dict_id])
    out = []
    for key, first, blob in rows:
        if len(blob) < 5 or blob[4] & (codec.DICT | codec.ZSTD | codec.BARE) != codec.ZSTD | codec.BARE:
            continue
        try:
            _, body = codec.decode(first, blob, codec.MAX_BARE, dicts)
        except CorruptData:
            continue  # left as it is: it answers corrupt_data when read
        new = codec.encode(first, body.slice(0, len(body)), cctx, dict_id)
        if len(new) < len(blob):
            out.append((key, first, new, blob))
    return out


class Blocks:
    """Offsets ``lo`` .. ``hi - 1`` of an answer, read from the blocks of one archive key: offset o
    is chunk ``o + at`` of the key's chunks. Keeps the last block decoded (a replay reads on)."""

    def __init__(
        self, catalog: Catalog, dicts: Dicts, key: int, at: int, lo: int, hi: int, bound: int
    ) -> None:
        self.catalog, self.dicts, self.key, self.at = catalog, dicts, key, at
        self.lo, self.hi, self.bound = lo, hi, bound
        self._block: tuple[int, int, record.Body] | None = None  # (first, count, chunks)

    def read(self, offset: int, max_chunks: int, budget: int) -> list[bytes]:
        """Chunks from ``offset`` (lo <= offset < hi) on, up to ``hi``; a short read stops at damage
        (the next read, starting there, raises ``CorruptData``)."""
        out: list[bytes] = []
        limit = self.hi
        try:
            while offset < limit and len(out) < max_chunks and budget > 0:
                first, body = self._block_at(offset)
                a = offset - first
                # never past this range's end: a pack's next answer follows in the same block
                for c in body.slice(a, min(a + max_chunks - len(out), limit - first)):
                    if budget <= 0:
                        break
                    out.append(c)
                    budget -= len(c)
                    offset += 1
        except CorruptData:
            if out:
                return out
            raise
        return out

    def _block_at(self, offset: int) -> tuple[int, record.Body]:
        b = self._block
        if b is not None and b[0] <= offset < b[0] + b[1]:
            return b[0], b[2]
        try:
            got = self.catalog.block_at(self.key, self.at + offset)
        except sqlite3.DatabaseError as e:
            raise CorruptData(f"archive read failed: {e}") from None
        if got is None:
            raise CorruptData(f"archived block for offset {offset} is missing")
        key_first, blob = got
        count, body = codec.decode(key_first, blob, self.bound, self.dicts)
        first = key_first - self.at  # in the answer's offsets (negative in a pack's later answers)
        if len(body) != count or not first <= offset < first + count:
            raise CorruptData(f"archived blocks for offsets {first + count}..{offset + 1} are missing")
        self._block = (first, count, body)
        return first, body


def base_blocks(catalog: Catalog, dicts: Dicts, base: Base, opts: LogOptions) -> Blocks:
    """What a fork of an archived answer reads its first chunks from: its parent's blocks."""
    key, at, upto = base
    return Blocks(catalog, dicts, key, at, 0, upto, _bound(opts))


def _bound(opts: LogOptions) -> int:
    return max(opts.block_bytes, 2 * SMALL_ANSWER) + opts.max_append_bytes


class ArchivedLog(Log):
    """A finished answer served from the archive; read-only."""

    def __init__(self, path: Path, entry: Entry, opts: LogOptions, catalog: Catalog, dicts: Dicts) -> None:
        super().__init__(path, entry.meta, opts)
        assert entry.arch is not None
        self.catalog = catalog
        self.dicts = dicts
        self.key = entry.arch
        self.next_offset = self.written_offset = self.durable_offset = entry.chunks
        self.close_info = entry.close_info
        self.close_durable = True
        self.raw_bytes = entry.raw_bytes
        self._stored: int | None = None
        first = 0
        if entry.base is not None:  # a fork: its first chunks are its parent's
            self.prefix = base_blocks(catalog, dicts, entry.base, opts)
            first = self.prefix.hi
        # offset 0 is chunk ``member_at`` of the key's (a pack's later answers start further in)
        self._own = Blocks(catalog, dicts, self.key, entry.member_at, first, entry.chunks, _bound(opts))
        windows = entry.windows or {}
        for k, v in (entry.producers or {}).items():
            pid, stream_seq = split_mark(k)
            if pid is not None:
                self.producers[pid] = ProducerState(*v)
                self.windows[pid] = [tuple(e) for e in windows.get(pid, [v[1:]])]  # type: ignore[misc]
            if stream_seq is not None:
                self.stream_seq = stream_seq
        self._save_undo()

    @property
    def stored_bytes(self) -> int:
        if self._stored is None:
            try:
                self._stored = self.catalog.stored_bytes(self.key)
            except sqlite3.Error:
                return 0
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
        if self.prefix is not None and from_offset < self.prefix.hi:
            return self.prefix.read(from_offset, max_chunks, budget)  # a short read at its end
        return self._own.read(from_offset, max_chunks, budget)
