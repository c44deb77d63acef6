"""One stream's log: appends, reads, close, recovery and sealing. Synchronous; no asyncio here.

Offsets are dense chunk numbers. Three marks move forward, in this order:

    durable_offset <= written_offset <= next_offset

``append`` encodes a record into an in-memory pending buffer (``next_offset``); ``flush`` writes the
buffer to the active segment (``written_offset``); ``begin_sync``/``end_sync`` fsync and publish
(``durable_offset``). Readers only ever see chunks below ``durable_offset``: a chunk is served, fanned
out or acknowledged only once it is durable under the store's fsync policy, so no reader can see a
chunk that a crash takes back. The async layer (store.py) decides when to flush and sync (group
commit); tests can drive the same calls directly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import threading
import time
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

import msgspec
import zstandard

from ..engine import CLOSE_STATUSES, PRODUCER_WINDOW, AppendResult, ProducerState, StreamInfo, StreamMeta
from ..errors import (
    ChunkTooLarge,
    CorruptData,
    OffsetOutOfRange,
    SequenceError,
    SequenceGap,
    StorageUnavailable,
    StreamClosed,
)
from . import record
from .index import SparseIndex
from .segment import (
    Checkpoint,
    CloseInfo,
    Segment,
    fsync_dir,
    idx_name,
    read_file,
    scan,
    seg_name,
    write_atomic,
)

STATUSES = CLOSE_STATUSES

# A Stream-Seq (the Durable Streams writer sequence, an opaque string compared byte-wise) travels in
# the same producer mark as the append it orders, after this separator: ``"{producer}\0{stream_seq}"``
# (producer "" when the append has none). It is therefore durable exactly when its data is, and
# recovery restores the last one from the marks (raw segments) or the checkpoint (sealed ones, under
# the key ``"\0{stream_seq}"``). Producer ids cannot contain NUL, so old marks read unchanged.
SEQ_SEP = "\0"

# Held while a stream directory's fan-out parents are made, and while the store removes empty ones
# (Store._prune), so a create never makes its directory inside a parent that is being removed.
FANOUT_LOCK = threading.Lock()


# A producer's retry window: (seq, first offset, count) of its last ``PRODUCER_WINDOW`` appends in
# its current epoch, oldest first. Rebuilt on recovery from the checkpoint's ``windows`` (sealed
# segments) and then the producer marks of the raw segments, in offset order, so a retry is
# recognised after any crash exactly as before it.
Window = list[tuple[int, int, int]]


def remember(
    producers: dict[str, ProducerState],
    windows: dict[str, Window],
    pid: str,
    epoch: int,
    seq: int,
    first: int,
    count: int,
) -> None:
    """Record that producer ``pid`` appended ``seq`` (a new epoch starts a new window)."""
    st = producers.get(pid)
    w = windows.get(pid)
    if st is None or st.epoch != epoch or w is None:
        w = windows[pid] = []
    # recovery may replay a mark the checkpoint already holds (a seal cut short): keep it once
    w[:] = [e for e in w if e[0] != seq]
    w.append((seq, first, count))
    del w[:-PRODUCER_WINDOW]
    producers[pid] = ProducerState(epoch, seq, first, count)


def check_producer(
    producers: dict[str, ProducerState], windows: dict[str, Window], pid: str, epoch: int, seq: int
) -> AppendResult | None:
    """The engine's producer rules (storage/engine.py): None to append, a duplicate to answer, or
    ``SequenceError`` / ``SequenceGap``. Pure: the caller makes sure the state is durable before it
    answers an error or a duplicate."""
    st = producers.get(pid)
    if st is None or epoch > st.epoch:
        return None  # a producer the stream does not know, or a new epoch: any seq starts it
    if epoch < st.epoch:
        raise SequenceError(f"producer {pid!r} epoch {epoch} is older than {st.epoch} (fenced)")
    if seq == st.seq + 1:
        return None
    if seq > st.seq:
        raise SequenceGap(f"producer {pid!r} seq {seq} skips seqs after its last seq {st.seq}")
    for s, first, count in windows.get(pid, [(st.seq, st.first_offset, st.count)]):
        if s == seq:
            return AppendResult(first, count, duplicate=True)
    raise SequenceError(
        f"producer {pid!r} seq {seq} is older than its last {PRODUCER_WINDOW} appends (last seq {st.seq})"
    )


def split_mark(mark_id: str) -> tuple[str | None, str | None]:
    """(producer id or None, Stream-Seq or None) of a producer mark or checkpoint key."""
    pid, sep, stream_seq = mark_id.partition(SEQ_SEP)
    if not sep:
        return pid, None
    return pid or None, stream_seq


class Prefix(Protocol):
    """Chunks 0 .. hi - 1 of a stream kept elsewhere (``archive.Blocks``: a parent's archive)."""

    hi: int

    def read(self, offset: int, max_chunks: int, budget: int) -> list[bytes]: ...


@dataclass(frozen=True, slots=True)
class LogOptions:
    segment_bytes: int = 8 << 20  # raw segments roll at this size
    block_bytes: int = 256 << 10  # raw chunk bytes per zstd block when sealing
    seal_level: int = 19
    max_chunk_bytes: int = 1 << 20
    max_append_bytes: int = 8 << 20
    max_read_bytes: int = 4 << 20
    # False under the store's ``never`` policy: creates and seals skip their fsyncs too (the OS
    # decides; a process crash still loses nothing, an OS crash may lose what was not written back)
    sync: bool = True


class SyncTicket(NamedTuple):  # one per stream per group commit: a tuple, not a frozen dataclass
    fds: tuple[int, ...]
    dirs: tuple[Path, ...]
    mark: int


class Log:
    def __init__(self, path: Path, meta: StreamMeta, opts: LogOptions) -> None:
        self.path = path
        self.meta = meta
        self.opts = opts
        self.segments: list[Segment] = []
        self.next_offset = self.written_offset = self.durable_offset = 0
        self.close_info: CloseInfo | None = None
        self.close_durable = False
        self.producers: dict[str, ProducerState] = {}
        self.windows: dict[str, Window] = {}  # retry windows, see ``remember``
        self.stream_seq: str | None = None  # last Stream-Seq accepted (see SEQ_SEP)
        self._undo_seq: str | None = None
        self.checkpoint = Checkpoint()
        self.raw_bytes = 0
        self.repairs = 0
        self.repair_notes: list[str] = []
        self.last_append: float | None = None
        self.failed: str | None = None
        self._pending = bytearray()
        self._pending_close = False
        self._undo: tuple[dict[str, ProducerState], dict[str, Window], int, int] = ({}, {}, 0, 0)
        self._fd: int | None = None  # active segment, read/write
        self._rfds: dict[Path, int] = {}
        self._unsynced_fds: list[int] = []
        self._unsynced_dirs: list[Path] = []
        self._cache: tuple[int, int, record.Body] | None = None  # (segment base, position, block)
        # Under the store's shared journal (journal.py) every write to a segment file is also
        # framed into the journal by the commit that follows: ``flush`` keeps (file, position,
        # bytes) here until the committer takes them, and syncs never fsync the segment files.
        self.journaled = False
        self._unjournaled: list[tuple[str, int, bytes]] = []  # (segment name under streams/, pos, bytes)
        self._jname: tuple[Segment | None, str] = (None, "")  # the active segment's journal name
        self._presync: tuple[Segment, int, tuple, bool, bool, str | None] | None = None
        # a fork of an archived answer: its first chunks are read from its parent's archived blocks
        # (offsets 0 .. prefix.hi - 1); its own segments start at prefix.hi. Set by the store.
        self.prefix: Prefix | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, meta: StreamMeta, opts: LogOptions) -> Log:
        new_dirs = _make_stream_dir(path, meta)
        log = cls(path, meta, opts)
        seg = Segment(0, path / seg_name(0, False), sealed=False)
        log._fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)  # empty: no data to fsync
        log.segments.append(seg)
        if opts.sync:
            fsync_dir(path)  # meta.json's rename and the segment's entry, in one fsync
            for made in new_dirs:
                fsync_dir(made.parent)
        return log

    @classmethod
    def fork(
        cls,
        path: Path,
        meta: StreamMeta,
        opts: LogOptions,
        shared: Sequence[Segment],
        prefix: tuple[int, int, bytes] | None = None,
    ) -> Log:
        """Create a stream that starts with ``shared``, a run of another stream's sealed segments
        from offset 0, hard-linked rather than copied: sealed segments never change, so two streams
        can share their bytes, and deleting either one only drops its own links. Blocking.

        The caller appends whatever else the fork starts with (the source's chunks after the shared
        run, up to the fork point) to the returned log's raw tail.
        """
        new_dirs = _make_stream_dir(path, meta)
        end = raw = 0
        if prefix is not None:
            # (chunks, raw bytes, reference) of a prefix kept elsewhere (an archived parent's
            # blocks): the segments start after it; the reference is kept as prefix.json
            end, raw, ref = prefix
            write_atomic(path / "prefix.json", ref, sync_dir=False)
        for seg in shared:
            if not seg.sealed or seg.base != end:
                raise ValueError("a fork shares only a contiguous run of sealed segments from offset 0")
            os.link(seg.path, path / seg_name(seg.base, True))
            write_atomic(path / idx_name(seg.base), seg.index.to_bytes(), durable=False)
            mv = memoryview(read_file(seg.path))
            for pos, h in record.iter_records(mv):
                if h.type == record.DATA:
                    body = record.decode_block(h, mv[pos + record.HEADER_SIZE : pos + h.size], 1 << 30)
                    raw += body.raw_size
            end = seg.end
        # the shared segments carry no producer marks any more; a fork starts with no producers
        write_atomic(
            path / "checkpoint.json", msgspec.json.encode(Checkpoint(upto=end, raw_bytes=raw)), sync_dir=False
        )
        fd = os.open(path / seg_name(end, False), os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        fsync_dir(path)
        for made in new_dirs:
            fsync_dir(made.parent)
        return cls.open(path, opts)

    @classmethod
    def open(cls, path: Path, opts: LogOptions, verify: bool = True) -> Log:
        """Open and recover a stream. ``verify=False`` trusts sealed segments that have a valid
        index (they were fsynced before they appeared, and every read checks its record's checksum
        anyway) and reads only their last block: reopening a long stream costs O(1), not O(size).
        The active tail is always verified."""
        meta = msgspec.json.decode(read_file(path / "meta.json"), type=StreamMeta)
        log = cls(path, meta, opts)
        log._recover(verify)
        return log

    def _repair(self, note: str) -> None:
        self.repairs += 1
        self.repair_notes.append(note)

    def _recover(self, verify: bool = True) -> None:
        for tmp in self.path.glob("*.tmp"):
            tmp.unlink()
        ck = self.path / "checkpoint.json"
        if ck.exists():
            try:
                self.checkpoint = msgspec.json.decode(read_file(ck), type=Checkpoint)
            except msgspec.DecodeError:
                self._repair("checkpoint.json unreadable; producer state rebuilt from raw segments")
        self.producers = {}
        self.windows = {}
        for k, v in self.checkpoint.producers.items():
            pid, stream_seq = split_mark(k)
            if pid is not None:
                self.producers[pid] = ProducerState(*v)
                # a checkpoint from before retry windows knows only the last append
                self.windows[pid] = [tuple(e) for e in self.checkpoint.windows.get(pid, [v[1:]])]  # type: ignore[misc]
            if stream_seq is not None:
                self.stream_seq = stream_seq
        self.raw_bytes = self.checkpoint.raw_bytes
        bases: dict[int, bool] = {}
        for p in self.path.iterdir():
            stem, _, ext = p.name.partition(".")
            if ext in ("log", "zlog") and stem.isdigit():
                bases[int(stem)] = bases.get(int(stem), False) or ext == "zlog"
        for base in sorted(bases):
            sealed = bases[base]
            if sealed:
                raw = self.path / seg_name(base, False)
                if raw.exists():
                    raw.unlink()  # leftover of an interrupted seal: the .zlog is complete
            last = base == max(bases)
            if sealed and not verify and self._reopen_sealed(base):
                continue
            self._recover_segment(base, sealed, last=last)
        if not self.segments or (self.segments[-1].sealed and self.close_info is None):
            # no segment at all, or a damaged sealed tail that lost its close record: appends go to a
            # fresh raw segment, never into a sealed file
            base = self.segments[-1].end if self.segments else 0
            seg = Segment(base, self.path / seg_name(base, False), sealed=False, end=base)
            self.segments.append(seg)
            self._fd = os.open(seg.path, os.O_RDWR | os.O_CREAT, 0o644)
        prev_end = self.segments[0].base
        for seg in self.segments:
            if seg.base > prev_end:
                seg.corrupt.insert(0, (prev_end, seg.base))
                self._repair(f"offsets {prev_end}..{seg.base} missing between segments")
            prev_end = seg.end
        self.next_offset = self.written_offset = self.durable_offset = self.segments[-1].end
        self.close_durable = self.close_info is not None
        # A failed first write after recovery rolls back to what was recovered, not to an empty log
        # (the initial ({}, 0, 0) would rewind next_offset to 0 and reuse every offset).
        self._save_undo()

    def _reopen_sealed(self, base: int) -> bool:
        """The fast path of ``open(verify=False)``: index from disk, scan only the last block."""
        path, idx_path = self.path / seg_name(base, True), self.path / idx_name(base)
        try:
            size = path.stat().st_size
            idx = SparseIndex.from_bytes(read_file(idx_path), size)
        except OSError:
            return False
        if idx is None or not idx or idx.offsets[0] != base or idx.positions[0] != 0:
            return False
        start = idx.positions[-1]
        with open(path, "rb") as f:
            f.seek(start)
            res = scan(f.read(), idx.offsets[-1])
        if res.dropped_bytes or res.corrupt or res.size == 0:
            return False  # something is off: take the verifying path
        self.segments.append(Segment(base, path, True, size=start + res.size, end=res.end, index=idx))
        if res.close is not None:
            self.close_info = res.close
        return True

    def _recover_segment(self, base: int, sealed: bool, last: bool) -> None:
        path = self.path / seg_name(base, sealed)
        buf = read_file(path)
        res = scan(buf, base, count_from=self.checkpoint.upto)
        seg = Segment(base, path, sealed, size=res.size, end=res.end, index=res.index, corrupt=res.corrupt)
        for first, end in res.corrupt:
            self._repair(f"{path.name}: checksum mismatch for offsets {first}..{end}; never served")
        if res.dropped_bytes and (sealed or not last):
            # Only the active tail can be torn by a crash: a sealed or rolled segment was complete and
            # fsynced, so damage there is corruption. Keep the file (for forensics) and serve nothing
            # past the valid prefix: the gap up to the next segment answers corrupt_data.
            self._repair(f"{path.name}: {res.dropped_bytes} bytes from byte {res.size} failed their checksum")
        elif res.dropped_bytes:
            self._repair(f"{path.name}: truncated {res.dropped_bytes} torn bytes at {res.size}")
            if res.dropped_records:
                # Complete records were lost with the tail: readers may hold offsets that now mean
                # something else, so the epoch changes and they are told to reset.
                self.meta.epoch = secrets.token_hex(8)
                write_atomic(self.path / "meta.json", msgspec.json.encode(self.meta))
            with open(path, "r+b") as f:
                f.truncate(res.size)
                os.fsync(f.fileno())
        if sealed:
            idx_path = self.path / idx_name(base)
            want = res.index.to_bytes()
            if not idx_path.exists() or read_file(idx_path) != want:
                self._repair(f"{idx_path.name}: missing or stale index rebuilt")
                write_atomic(idx_path, want)
        else:
            self.raw_bytes += res.raw_bytes
            for mark, first, count in res.marks:
                pid, stream_seq = split_mark(mark.producer_id)
                if pid is not None:
                    remember(self.producers, self.windows, pid, mark.epoch, mark.seq, first, count)
                if stream_seq is not None:
                    self.stream_seq = stream_seq
        if res.close is not None:
            self.close_info = res.close
        self.segments.append(seg)
        if last and not sealed:
            self._fd = os.open(path, os.O_RDWR)

    def release_files(self) -> bool:
        """Close file handles if idle (nothing pending or unsynced); state stays in memory."""
        if self._pending or self._unsynced_fds or self.written_offset != self.durable_offset:
            return False
        # A written close record moves no offset, so written == durable while its fsync still runs in
        # a worker thread: closing the fd then would let that fsync hit EBADF, or worse, a reused fd
        # number naming another stream's file, and the close would be acknowledged without an fsync.
        if self.close_info is not None and not self.close_durable:
            return False
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for fd in self._rfds.values():
            os.close(fd)
        self._rfds.clear()
        self._cache = None
        return True

    @property
    def open_files(self) -> int:
        return len(self._rfds) + (self._fd is not None) + len(self._unsynced_fds)

    def shutdown(self) -> None:
        for fd in self._unsynced_fds:
            os.close(fd)
        self._unsynced_fds.clear()
        self._pending.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for fd in self._rfds.values():
            os.close(fd)
        self._rfds.clear()

    def destroy(self) -> None:
        self.shutdown()
        shutil.rmtree(self.path, ignore_errors=True)

    # --- writing -----------------------------------------------------------------------------

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    @property
    def status(self) -> str:
        return "open" if self.close_info is None else self.close_info.status

    def _active_fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.active.path, os.O_RDWR)
        return self._fd

    def _check_writable(self) -> None:
        if self.failed:
            raise StorageUnavailable(f"stream is read-only until recovery: {self.failed}")
        if self.close_info is not None:
            raise StreamClosed(f"stream is closed ({self.close_info.status})")

    def append(
        self,
        chunks: Sequence[bytes],
        producer_id: str | None = None,
        seq: int | None = None,
        epoch: int = 0,
        stream_seq: str | None = None,
    ) -> AppendResult:
        """Append chunks as one record. For a producer (``producer_id`` + ``seq``) the rules of
        ``check_producer``: a retry within its window is answered with its original offsets and
        writes nothing. ``stream_seq``, when given, must be greater (byte-wise) than the last one
        accepted, and is checked after the producer retry."""
        if producer_id is not None and seq is not None:
            dup = check_producer(self.producers, self.windows, producer_id, epoch, seq)
            if dup is not None:
                return dup
        self._check_writable()
        if stream_seq is not None:
            if self.stream_seq is not None and stream_seq <= self.stream_seq:
                raise SequenceError(
                    f"Stream-Seq {stream_seq!r} is not after the last one, {self.stream_seq!r}"
                )
            if producer_id == "":
                raise SequenceError("a producer id sent with a Stream-Seq must not be empty")
        if producer_id is not None and SEQ_SEP in producer_id:
            raise SequenceError("a producer id must not contain NUL")
        if not chunks:
            raise ChunkTooLarge("an append needs at least one chunk")
        opts = self.opts
        total = 0
        for c in chunks:
            n = len(c)
            if n > opts.max_chunk_bytes:
                raise ChunkTooLarge(f"chunk of {n} bytes; the limit is {opts.max_chunk_bytes}")
            total += n
        if total > opts.max_append_bytes:
            raise ChunkTooLarge(f"append of {total} bytes; the limit is {opts.max_append_bytes}")
        seg = self.segments[-1]
        pos = seg.size + len(self._pending)
        if pos >= opts.segment_bytes:
            self._roll()
            seg = self.segments[-1]
            pos = seg.size + len(self._pending)
        first = self.next_offset
        mark = None
        if producer_id is not None and seq is not None:
            mark = record.ProducerMark(producer_id, epoch, seq)
            remember(self.producers, self.windows, producer_id, epoch, seq, first, len(chunks))
        if stream_seq is not None:
            pid = mark.producer_id if mark else ""
            mark = record.ProducerMark(
                pid + SEQ_SEP + stream_seq, mark.epoch if mark else 0, mark.seq if mark else 0
            )
            self.stream_seq = stream_seq
        index = seg.index
        if pos - (index.positions[-1] if index else -(1 << 30)) >= 4096:
            index.add(first, pos)
        self._pending += record.encode_data(first, chunks, mark)
        self.next_offset += len(chunks)
        self.raw_bytes += total
        self.last_append = time.time()
        return AppendResult(first, len(chunks))

    def close(
        self, status: str = "done", error: str | None = None, producer: tuple[str, int, int] | None = None
    ) -> None:
        """Close the stream. ``producer`` (id, epoch, seq) marks a close sent by an idempotent producer
        so that its retry is recognised; that mark lives in memory only (a CLOSE record has no producer
        block), so after a restart such a retry answers "closed" instead of "duplicate"."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        self._check_writable()
        if producer is not None:
            pid, epoch, seq = producer
            remember(self.producers, self.windows, pid, epoch, seq, self.next_offset, 0)
        info = CloseInfo(status, error, time.time())
        self._pending += record.encode(record.CLOSE, 0, self.next_offset, 0, msgspec.json.encode(info))
        self._pending_close = True
        self.close_info = info

    def _roll(self) -> None:
        self.flush()
        if self._fd is not None:
            self._unsynced_fds.append(self._fd)
            self._fd = None
        base = self.next_offset
        seg = Segment(base, self.path / seg_name(base, False), sealed=False, end=base)
        try:
            self._fd = os.open(seg.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:  # EMFILE, ENOSPC...: this append is refused, the next one tries again
            code = errno.errorcode.get(e.errno or 0, "EIO")
            raise StorageUnavailable(f"cannot start a new segment ({code}): {e.strerror}") from e
        self.segments.append(seg)
        self._unsynced_dirs.append(self.path)

    def flush(self) -> None:
        """Write pending records to the active segment. On failure nothing pending is kept."""
        if not self._pending:
            return
        seg = self.active
        data = bytes(self._pending)
        try:
            fd = self._active_fd()
            view, at = memoryview(data), seg.size
            while view:
                n = os.pwrite(fd, view, at)
                view, at = view[n:], at + n
        except OSError as e:
            self._rollback(seg)
            code = errno.errorcode.get(e.errno or 0, "EIO")
            raise StorageUnavailable(f"write failed ({code}): {e.strerror}") from e
        if self.journaled:
            if self._jname[0] is not seg:  # a journal name is built once per segment, not per commit
                p = seg.path.parts
                self._jname = (seg, "/".join(p[-4:]))
            self._unjournaled.append((self._jname[1], seg.size, data))
        seg.size += len(data)
        seg.end = self.next_offset
        self.written_offset = self.next_offset
        self._pending.clear()
        self._pending_close = False
        self._save_undo()

    def _save_undo(self) -> None:
        """Remember the written state: a failed write rolls back to exactly this."""
        self._undo = (
            {k: ProducerState(v.epoch, v.seq, v.first_offset, v.count) for k, v in self.producers.items()},
            {k: list(w) for k, w in self.windows.items()},
            self.next_offset,
            self.raw_bytes,
        )
        self._undo_seq = self.stream_seq

    def _rollback(self, seg: Segment) -> None:
        """Forget every pending append: they were never written, so never acknowledged."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, seg.size)
        producers, windows, offset, raw = self._undo
        self.producers = {
            k: ProducerState(v.epoch, v.seq, v.first_offset, v.count) for k, v in producers.items()
        }
        self.windows = {k: list(w) for k, w in windows.items()}
        self.next_offset, self.raw_bytes = offset, raw
        self.stream_seq = self._undo_seq
        seg.index.truncate_from(seg.size)
        if self._pending_close:
            self.close_info = None
        self._pending.clear()
        self._pending_close = False

    def begin_sync(self) -> SyncTicket:
        """Flush, then name what must be fsynced for everything written so far to be durable."""
        if self.journaled:  # what ``undo_flush`` returns to if the journal write fails
            seg = self.active
            self._presync = (
                seg,
                seg.size,
                self._undo,
                self._pending_close,
                bool(self._unjournaled),
                self._undo_seq,
            )
        self.flush()
        fds = [*self._unsynced_fds]
        if self._fd is not None:
            fds.append(self._fd)
        return SyncTicket(tuple(fds), tuple(self._unsynced_dirs), self.written_offset)

    def take_unjournaled(self) -> list[tuple[str, int, bytes]]:
        """The segment writes since the last call, (file name under ``streams/``, position, bytes),
        for the journal."""
        out, self._unjournaled = self._unjournaled, []
        return out

    def undo_flush(self) -> bool:
        """The journal write of this commit failed: forget the commit's flush as if its write had
        failed (segment truncated back, producer state rolled back, nothing acknowledged). False if
        that cannot be done exactly (a segment rolled since the last commit): the caller then marks
        the log failed, and the next access recovers it from its files."""
        snap, self._presync = self._presync, None
        if snap is None:
            return True
        seg, size, undo, closing, rolled, undo_seq = snap
        if rolled or seg is not self.active:
            return False
        self._unjournaled.clear()
        seg.size = size
        self._undo, self._undo_seq, self._pending_close = undo, undo_seq, closing
        self._rollback(seg)
        self.written_offset = seg.end = self.next_offset
        self._save_undo()
        return True

    @staticmethod
    def do_sync(ticket: SyncTicket) -> None:
        """The blocking part of a sync; safe to run in a worker thread."""
        for fd in ticket.fds:
            os.fsync(fd)
        for d in ticket.dirs:
            fsync_dir(d)

    def end_sync(self, ticket: SyncTicket) -> None:
        for fd in ticket.fds:
            if fd in self._unsynced_fds:
                self._unsynced_fds.remove(fd)
                os.close(fd)
        for d in ticket.dirs:
            if d in self._unsynced_dirs:
                self._unsynced_dirs.remove(d)
        self.durable_offset = max(self.durable_offset, ticket.mark)
        if self.close_info is not None and self.written_offset == self.next_offset and not self._pending:
            self.close_durable = True

    def fail(self, reason: str) -> None:
        """An fsync failed: the page cache may have dropped our data. Stop acknowledging."""
        self.failed = reason

    def commit(self) -> None:
        """Flush and fsync in the calling thread (tests, tools, the crash-test writer)."""
        t = self.begin_sync()
        self.do_sync(t)
        self.end_sync(t)

    # --- reading -----------------------------------------------------------------------------

    def _segment_for(self, offset: int) -> Segment:
        i = bisect_right([s.base for s in self.segments], offset) - 1
        return self.segments[max(i, 0)]

    def _read_fd(self, seg: Segment) -> int:
        if seg is self.active and not seg.sealed:
            return self._active_fd()
        fd = self._rfds.get(seg.path)
        if fd is None:
            fd = self._rfds[seg.path] = os.open(seg.path, os.O_RDONLY)
        return fd

    def read(self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None) -> list[bytes]:
        """Chunks from ``from_offset`` on, up to the durable end; [] when caught up."""
        limit = self.durable_offset
        if from_offset < 0 or from_offset > limit:
            raise OffsetOutOfRange(f"offset {from_offset} is outside 0..{limit}")
        max_bytes = max_bytes or self.opts.max_read_bytes
        if self.prefix is not None and from_offset < self.prefix.hi:
            return self.prefix.read(from_offset, max_chunks, max_bytes)  # a short read at its end
        out: list[bytes] = []
        size = 0
        offset = from_offset
        # Damaged ranges of every segment: a hole between two segments is listed on the later one
        # but ``_segment_for`` maps its offsets to the earlier one, which would answer [] ("caught
        # up") forever. A read serves the chunks before a damaged range and stops there; the next
        # read, starting inside it, raises.
        bad = [r for s in self.segments for r in s.corrupt]
        while offset < limit and len(out) < max_chunks and size < max_bytes:
            seg = self._segment_for(offset)
            stop = limit
            for first, end in bad:
                if first <= offset < end:
                    if out:
                        return out
                    raise CorruptData(f"offsets {first}..{end} failed their checksum and cannot be served")
                if offset < first < stop:
                    stop = first
            got = self._read_records(seg, offset, stop, max_chunks - len(out), max_bytes - size)
            if not got:
                break
            out += got
            size += sum(map(len, got))
            offset += len(got)
        return out

    def _read_records(self, seg: Segment, offset: int, limit: int, want: int, budget: int) -> list[bytes]:
        fd = self._read_fd(seg)
        pos = seg.index.lookup(offset)
        out: list[bytes] = []
        # ``offset < limit``: stop before parsing the next header, which may be a damaged one
        while pos < seg.size and offset < limit and len(out) < want and budget > 0:
            h = record.parse_header(os.pread(fd, record.HEADER_SIZE, pos))
            if h is None:
                raise CorruptData(f"{seg.path.name}: unreadable record header at byte {pos}")
            if h.first_offset >= limit or h.type != record.DATA:
                break
            if h.end_offset <= offset:
                pos += h.size
                continue
            block = self._decode_at(seg, fd, pos, h)
            a = offset - h.first_offset
            for c in block.slice(a, min(limit - h.first_offset, a + want - len(out))):
                if budget <= 0:
                    break
                out.append(c)
                budget -= len(c)
                offset += 1
            if offset < h.end_offset:
                break
            pos += h.size
        return out

    def _decode_at(self, seg: Segment, fd: int, pos: int, h: record.Header) -> record.Body:
        if self._cache is not None and self._cache[0] == seg.base and self._cache[1] == pos:
            return self._cache[2]
        buf = os.pread(fd, h.size, pos)
        if not record.check(buf, 0, h):
            raise CorruptData(
                f"{seg.path.name}: checksum mismatch for offsets {h.first_offset}..{h.end_offset}"
            )
        bound = self.opts.block_bytes + self.opts.max_append_bytes + 5 * h.count
        block = record.decode_block(h, memoryview(buf)[record.HEADER_SIZE :], bound)
        if h.flags & record.COMPRESSED:
            self._cache = (seg.base, pos, block)
        return block

    # --- sealing -----------------------------------------------------------------------------

    def seal_candidate(self) -> Segment | None:
        """The next raw segment to rewrite into zstd blocks, if it is complete and durable.

        Segments are sealed in order because each seal extends the checkpoint (producer state,
        raw byte count) that replaces the per-record producer marks the rewrite drops.
        """
        for seg in self.segments:
            if seg.sealed:
                continue
            if seg.corrupt or seg.end > self.durable_offset:
                return None
            if seg is self.active and not self.close_durable:
                return None
            return seg
        return None

    def build_seal(self, seg: Segment) -> tuple[Segment, Checkpoint]:
        """Rewrite a raw segment as large compressed blocks. Blocking; runs in a worker thread.

        The new file becomes visible only by an atomic rename after fsync, and the checkpoint that
        carries the segment's producer state is durable before that rename.
        """
        buf = read_file(seg.path)[: seg.size]
        cctx = zstandard.ZstdCompressor(level=self.opts.seal_level)
        ck = self.checkpoint
        producers = dict(ck.producers)
        states = {k: ProducerState(*v) for k, v in ck.producers.items() if SEQ_SEP not in k}
        windows: dict[str, Window] = {
            k: [tuple(e) for e in ck.windows.get(k, [v[1:]])]  # type: ignore[misc]
            for k, v in ck.producers.items()
            if SEQ_SEP not in k
        }
        # A crash after the checkpoint was written but before the rename leaves this segment (and
        # maybe later ones) raw under a checkpoint that already covers it (upto >= seg.end). Its
        # bytes and producer marks are already in the checkpoint: re-applying them would count the
        # bytes twice and rewind producers to older sequence numbers, and lowering ``upto`` would
        # make the next recovery skip the later segments' marks.
        covered = seg.end <= ck.upto
        raw = 0
        out = bytearray()
        new = Segment(seg.base, self.path / seg_name(seg.base, True), sealed=True, end=seg.end)
        block: list[bytes] = []
        block_first = seg.base
        block_size = 0

        def emit() -> None:
            nonlocal block, block_size
            if block:
                new.index.add(block_first, len(out))
                out.extend(record.encode_data(block_first, block, None, cctx, separate=True))
                block, block_size = [], 0

        mv = memoryview(buf)
        for pos, h in record.iter_records(mv):
            payload = mv[pos + record.HEADER_SIZE : pos + h.size]
            if h.type == record.CLOSE:
                emit()
                out.extend(mv[pos : pos + h.size])
                continue
            mark, _ = record.split_payload(h, payload)
            if mark is not None and not covered:
                pid, stream_seq = split_mark(mark.producer_id)
                if pid is not None:
                    producers[pid] = (mark.epoch, mark.seq, h.first_offset, h.count)
                    remember(states, windows, pid, mark.epoch, mark.seq, h.first_offset, h.count)
                if stream_seq is not None:  # one Stream-Seq key at a time: the last one
                    for k in [k for k in producers if k.startswith(SEQ_SEP)]:
                        del producers[k]
                    producers[SEQ_SEP + stream_seq] = (0, 0, h.first_offset, h.count)
            chunks = record.decode_data(h, payload, self.opts.max_append_bytes + 5 * h.count)
            for i, c in enumerate(chunks):
                if not block:
                    block_first = h.first_offset + i
                block.append(c)
                block_size += len(c)
                raw += len(c)
                if block_size >= self.opts.block_bytes:
                    emit()
        emit()
        new.size = len(out)
        tmp = new.path.with_name(new.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(bytes(out))
            while view:
                view = view[os.write(fd, view) :]
            if self.opts.sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        # the index is derived data, validated and rebuilt by recovery: no fsync of its own
        write_atomic(self.path / idx_name(seg.base), new.index.to_bytes(), durable=False)
        if covered:
            new_ck = Checkpoint(upto=ck.upto, raw_bytes=ck.raw_bytes, producers=producers, windows=windows)
        else:
            new_ck = Checkpoint(
                upto=seg.end, raw_bytes=ck.raw_bytes + raw, producers=producers, windows=windows
            )
        write_atomic(self.path / "checkpoint.json", msgspec.json.encode(new_ck), durable=self.opts.sync)
        os.replace(tmp, new.path)
        if self.opts.sync:
            fsync_dir(self.path)
        return new, new_ck

    def apply_seal(self, old: Segment, new: Segment, ck: Checkpoint) -> None:
        i = self.segments.index(old)
        self.segments[i] = new
        self.checkpoint = ck
        if old is not new and i == len(self.segments) - 1 and self._fd is not None:
            os.close(self._fd)
            self._fd = None
        fd = self._rfds.pop(old.path, None)
        if fd is not None:
            os.close(fd)
        self._cache = None
        with contextlib.suppress(FileNotFoundError):
            old.path.unlink()

    def seal_all(self) -> int:
        """Seal every eligible segment in the calling thread; returns how many."""
        n = 0
        while (seg := self.seal_candidate()) is not None:
            new, ck = self.build_seal(seg)
            self.apply_seal(seg, new, ck)
            n += 1
        return n

    # --- stats -------------------------------------------------------------------------------

    @property
    def stored_bytes(self) -> int:
        return sum(s.size + (16 * len(s.index) if s.sealed else 0) for s in self.segments)

    def info(self) -> StreamInfo:
        ci = self.close_info
        return StreamInfo(
            id=self.meta.id,
            epoch=self.meta.epoch,
            status=self.status,
            error=ci.error if ci else None,
            chunks=self.durable_offset,
            raw_bytes=self.raw_bytes,
            stored_bytes=self.stored_bytes,
            segments=len(self.segments),
            created=self.meta.created,
            closed=ci.at if ci else None,
            last_append=self.last_append,
            repairs=self.repairs,
            repair_notes=list(self.repair_notes),
            labels=dict(self.meta.labels),
        )


def _make_stream_dir(path: Path, meta: StreamMeta) -> list[Path]:
    """Make a stream's directory and its meta.json (not yet fsynced into their parents): returns
    every directory made, each of whose entries the caller must fsync in its parent."""
    new_dirs = []
    with FANOUT_LOCK:
        d = path
        while not d.exists():
            new_dirs.append(d)
            d = d.parent
        path.mkdir(parents=True, exist_ok=False)
    write_atomic(path / "meta.json", msgspec.json.encode(meta), sync_dir=False)
    return new_dirs
