"""The shared journal: one fsync per group commit, whatever the number of live streams. No asyncio.

A group commit used to fsync every dirty stream's segment file (64 live streams: 64 fsyncs per
commit). Now each commit also appends the bytes it wrote to every segment file to one journal file
and fsyncs only that (BookKeeper's journal beside its entry logs; a database's WAL). The segment
files are written with plain write()s and fsynced lazily, at a *checkpoint*: when a journal file is
full or old it is closed, a new one started, every segment file it touched fsynced, and then it is
deleted. An OS crash may lose what the segment files had not written back; the journal has it.

Layout: ``<data dir>/journal/<n:016d>.wal``, numbered in the order they were started. A file is a
run of frames::

    u32 length | u32 crc32(rest) | u64 seq | f64 created | u64 position | u16 name length | name | data

``name`` is the segment file (relative to ``streams/``), ``created`` the creation time of the stream
that owns it (``meta.json``: a deleted and re-created id gets a new directory with another one),
``data`` the exact bytes written at byte ``position`` of that file: whole records, each with its own
header and checksum. ``seq`` goes up by one per frame across files; a frame whose checksum fails or
whose ``seq`` does not follow its predecessor's ends the journal (a torn tail, or leftovers of a
failed write beyond it).

Invariants:

* a frame is in the journal (written and fdatasync'ed) before the appends it holds are
  acknowledged; the segment write happened before the frame was written;
* a journal file is deleted only after every segment file it names was fsynced;
* replay (``replay``, on start, before any stream is opened) writes each frame's bytes at their
  position again: idempotent (the bytes are the ones the segment had or should have had), and it
  skips a frame whose stream directory is gone (deleted, archived), belongs to another incarnation
  (``created`` differs) or whose segment was sealed (a ``.zlog`` exists: it was fsynced whole before
  it appeared). Then the files it wrote are fsynced and the journal is emptied.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgspec

from ..engine import StreamMeta
from .segment import fsync_dir, read_file

JOURNAL_DIR = "journal"
_HEAD = struct.Struct("<II")  # length of the rest, crc32 of the rest
_TAIL = struct.Struct("<QdQH")  # seq, created, position, name length
# Zeros written ahead of the frames, so that a commit's frames land in blocks the file already has
# within its size: its fdatasync then has no metadata to commit, only data and a cache flush (about
# half the latency of one that grows the file; docs/storage.md, "The journal"). Scans stop at them.
PREALLOC = 256 << 10
MAX_FRAME = 1 << 30  # any length read from disk above this is damage, never an allocation
# a segment file's name under streams/: ab/cd/<32 hex>/<20 digits>.log (never a path outside it)
_NAME = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{32}/[0-9]{20}\.log")


class Entry(NamedTuple):  # not a frozen dataclass: one per stream per group commit, built 4x faster
    name: str  # segment file, relative to streams/
    created: float  # the owning stream's meta.created
    position: int
    data: bytes


def encode_frame(seq: int, e: Entry) -> bytes:
    name = e.name.encode()
    rest = _TAIL.pack(seq, e.created, e.position, len(name)) + name + e.data
    return _HEAD.pack(len(rest), zlib.crc32(rest)) + rest


def _pwrite_all(fd: int, data: bytes, at: int) -> None:
    view = memoryview(data)
    while view:
        k = os.pwrite(fd, view, at)
        view, at = view[k:], at + k


def zeros_only(buf: bytes, start: int) -> bool:
    """Whether ``buf`` holds only zeros from ``start`` on: the run written ahead of the frames,
    not a torn frame."""
    return not buf[start:].strip(b"\0")


def scan(buf: bytes, after: int | None = None) -> tuple[list[tuple[int, Entry]], int]:
    """The valid frames of a journal file image and the byte where they end. ``after`` is the seq
    of the previous file's last frame (the file's first frame must come after it)."""
    mv = memoryview(buf)
    out: list[tuple[int, Entry]] = []
    pos, prev = 0, after
    while pos + _HEAD.size <= len(buf):
        length, crc = _HEAD.unpack_from(mv, pos)
        end = pos + _HEAD.size + length
        if length < _TAIL.size or length > MAX_FRAME or end > len(buf):
            break
        rest = mv[pos + _HEAD.size : end]
        if zlib.crc32(rest) != crc:
            break
        seq, created, position, nlen = _TAIL.unpack_from(rest)
        # seqs rise by one within a file; a file's first one may jump past the previous file's
        # last (the seqs of a failed write, used up) but never go back
        if (prev is not None and (seq != prev + 1 if out else seq <= prev)) or _TAIL.size + nlen > length:
            break
        try:
            name = bytes(rest[_TAIL.size : _TAIL.size + nlen]).decode()
        except UnicodeDecodeError:
            break
        if not _NAME.fullmatch(name):
            break
        out.append((seq, Entry(name, created, position, bytes(rest[_TAIL.size + nlen :]))))
        prev, pos = seq, end
    return out, pos


def _files(d: Path) -> list[tuple[int, Path]]:
    out = []
    for p in d.glob("*.wal"):
        if p.stem.isdigit():
            out.append((int(p.stem), p))
    return sorted(out)


@dataclass(slots=True)
class ReplayResult:
    frames: int = 0  # frames found
    applied: int = 0  # frames written back into a segment file
    skipped: int = 0  # frames of streams gone, re-created, archived or sealed since
    torn_bytes: int = 0  # bytes cut from the journal's tail
    files: int = 0  # segment files written
    last_file: int = 0
    last_seq: int = 0


def replay(root: Path, sync: bool = True) -> ReplayResult:
    """Write every journaled frame back into its segment file, fsync those files, then delete the
    journal files. Blocking; runs before any stream is opened. A crash at any point leaves a
    journal that a second replay applies the same way."""
    jdir = root / JOURNAL_DIR
    res = ReplayResult()
    files = _files(jdir) if jdir.exists() else []
    if not files:
        return res
    streams = root / "streams"
    owners: dict[Path, float | None] = {}  # stream dir -> its meta.created (None: gone)
    fds: dict[Path, int] = {}
    prev: int | None = None
    try:
        for n, path in files:
            buf = read_file(path)
            frames, end = scan(buf, prev)
            res.last_file = n
            torn = end < len(buf) and not zeros_only(buf, end)
            if torn:
                # the tail of the last file is torn (a crash mid-write, or the leftovers of a
                # failed write); in an older file it is damage: either way nothing after it is used
                res.torn_bytes += len(buf) - end
            res.frames += len(frames)
            for seq, e in frames:
                prev = res.last_seq = seq
                seg = streams / e.name
                sdir = seg.parent
                if sdir not in owners:
                    try:
                        meta = msgspec.json.decode(read_file(sdir / "meta.json"), type=StreamMeta)
                        owners[sdir] = meta.created
                    except (OSError, msgspec.DecodeError):
                        owners[sdir] = None  # deleted, archived, or never fully created
                sealed = seg.with_suffix(".zlog")
                if owners[sdir] != e.created or sealed.exists():
                    res.skipped += 1
                    continue
                fd = fds.get(seg)
                if fd is None:
                    fd = fds[seg] = os.open(seg, os.O_RDWR | os.O_CREAT, 0o644)
                _pwrite_all(fd, e.data, e.position)
                res.applied += 1
            if torn:
                # an older file damaged in the middle (or left behind by a failed fsync, after
                # which the store moved to a new file): its successor starts a new run
                prev = None
        res.files = len(fds)
        if sync:
            for fd in fds.values():
                os.fsync(fd)
            for d in {p.parent for p in fds}:
                fsync_dir(d)
    finally:
        for fd in fds.values():
            os.close(fd)
    for _, path in files:
        path.unlink()
    if sync:
        fsync_dir(jdir)
    return res


@dataclass(slots=True)
class _File:
    n: int
    path: Path
    fd: int
    started: float
    size: int = 0  # where the frames end
    alloc: int = 0  # where the zeros written ahead of them end (``PREALLOC``)
    dirty: set[str] = field(default_factory=set)  # segment files (under streams/) in this file's frames
    dirs: set[Path] = field(default_factory=set)  # stream dirs with a segment file made since


class Journal:
    """The active journal file and the ones waiting for their checkpoint.

    Writes (``write``) happen on the event loop, and the fdatasync of the current file in the sync
    helper process (fsyncd.py); without a helper, both run on the store's commit thread (``sync``).
    ``rotate`` runs on the commit thread, ``checkpoint`` on a worker thread. ``write`` and ``rotate``
    are called only by the committer, one commit at a time.
    """

    def __init__(
        self, root: Path, max_bytes: int = 64 << 20, max_age_s: float = 30.0, first: int = 1, seq: int = 0
    ) -> None:
        self.root = root
        self.dir = root / JOURNAL_DIR
        self.max_bytes, self.max_age_s = max_bytes, max_age_s
        self.seq = seq  # the last frame's seq
        self._next = first
        self._lock = threading.Lock()  # an fdatasync and the close of that file's fd never overlap
        self.old: list[_File] = []  # full files whose checkpoint has not finished
        self.fsyncs = 0  # fsync/fdatasync calls made by commits (journal + its directory)
        self.checkpoint_fsyncs = 0
        self.checkpoints = 0
        # a write or an fsync failed (the file's pages may be gone): frames go to a new file
        self.broken = False
        self.dir.mkdir(exist_ok=True)
        self.cur = self._start()
        fsync_dir(self.dir)
        self.fsyncs += 1

    def _start(self) -> _File:
        path = self.dir / f"{self._next:016d}.wal"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        f = _File(self._next, path, fd, time.monotonic())
        self._next += 1
        return f

    def write(self, entries: Iterable[Entry], dirs: Iterable[Path] = ()) -> None:
        """Append one frame per entry (one pwrite for all). On failure the frames' seqs are used
        up, so leftovers of the failed write past the end can never pass for the next frames."""
        buf = bytearray()
        touched = []
        for e in entries:
            self.seq += 1
            buf += encode_frame(self.seq, e)
            touched.append(e.name)
        if not buf:
            return
        f = self.cur
        try:
            _pwrite_all(f.fd, bytes(buf), f.size)
        except OSError:
            # Its seqs stay used up and the next commit starts a new file (whose first seq may
            # jump, see ``scan``), and what it wrote is cut off: no leftover frame of this unacked
            # commit is replayed, and no later frame sits behind a gap in this file.
            cut = False
            with contextlib.suppress(OSError):
                os.ftruncate(f.fd, f.size)
                os.fdatasync(f.fd)  # or pages written back before the cut could outlive it
                cut = True
            f.alloc = f.size
            # an empty file cut back is as good as a new one: a disk that keeps failing must not
            # get a new file (and an open fd, until a checkpoint) per failed commit
            self.broken = not (cut and f.size == 0)
            raise
        f.size += len(buf)
        f.dirty.update(touched)
        f.dirs.update(dirs)
        if f.size > f.alloc:
            # the frames went past the zeros: write the next run of them (this commit's fdatasync
            # carries the new size). Not having them only makes fdatasyncs slower, so a disk too
            # full for them is no error, and the frames were written first.
            with contextlib.suppress(OSError):
                _pwrite_all(f.fd, bytes(PREALLOC), f.size)
                f.alloc = f.size + PREALLOC

    @property
    def empty(self) -> bool:
        return self.cur.size == 0

    def sync(self) -> None:
        """Make every frame written so far durable: one fdatasync (the frames' blocks and the
        file's size; a file's times are not needed to read it). Worker thread."""
        with self._lock:
            self.fsyncs += 1
            try:
                os.fdatasync(self.cur.fd)
            except OSError:
                self.broken = True  # set here, so that it holds even if nobody hears this commit
                raise

    def due(self) -> bool:
        f = self.cur
        return f.size >= self.max_bytes or (f.size > 0 and time.monotonic() - f.started >= self.max_age_s)

    def rotate(self) -> None:
        """Start the next file (its directory entry fsynced: the commit's second fsync at most);
        the full one waits for ``checkpoint``. Worker thread, inside a commit."""
        new = self._start()
        self.fsyncs += 1
        fsync_dir(self.dir)
        with self._lock:
            self.old.append(self.cur)
        self.cur = new
        self.broken = False

    def checkpoint(self) -> int:
        """fsync every segment file the full journal files name, then delete those files. Worker
        thread; one at a time (the store runs it on its background pool, serialised)."""
        with self._lock:
            done = list(self.old)
        if not done:
            return 0
        streams = self.root / "streams"
        paths = [streams / n for n in set().union(*(f.dirty for f in done))]
        dirs = set().union(*(f.dirs for f in done))
        for p in paths:
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue  # sealed (the .zlog was fsynced), deleted or archived since
            try:
                os.fsync(fd)
                self.checkpoint_fsyncs += 1
            finally:
                os.close(fd)
        for d in dirs:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(d)
                self.checkpoint_fsyncs += 1
        for f in done:
            with self._lock:
                os.close(f.fd)
            with contextlib.suppress(FileNotFoundError):
                f.path.unlink()
        # the unlinks are durable before a later file can be checkpointed and deleted
        fsync_dir(self.dir)
        self.checkpoint_fsyncs += 1
        self.checkpoints += 1
        with self._lock:
            del self.old[: len(done)]
        return len(done)

    def close(self, checkpoint: bool = True) -> None:
        """Clean shutdown: checkpoint everything, including the active file, and delete it all."""
        if checkpoint:
            self.old.append(self.cur)
            self.checkpoint()
        else:
            for f in [*self.old, self.cur]:
                os.close(f.fd)
