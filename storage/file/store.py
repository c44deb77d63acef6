"""The embedded file store: many streams under one data dir, group commit, retention, file-handle LRU.

This is the asyncio layer over ``Log``. It owns *when* bytes move: appends land in a log's pending
buffer at once, and one committer task writes every dirty log's buffer to its segment file, frames
the same bytes into the shared journal (``journal.py``) and fsyncs only the journal, so a thousand
concurrent appends on as many streams share one fsync (group commit). The segment files are fsynced
later, at journal checkpoints, and replayed from the journal on start. ``append`` returns only after
its chunks are durable under the policy:

* ``always`` and ``interval`` (leader/follower): a commit starts at once when none is running; the
  appends that arrive while its fsync runs share the next one. No fixed wait on an idle disk.
* ``never``: the write() reached the OS (no journal); a process crash loses nothing, an OS crash may.

Only durable chunks are published to readers (listeners, ``wait``), so a crash never takes back a
chunk that someone has seen.

Which streams exist is the catalog's business (``catalog.py``, SQLite): a listing is a range query,
expiry an indexed deadline, and nothing at start reads every stream. A finished answer, once sealed
and ``archive_delay_s`` after its close, moves into the archive (rows of the same database) and its
directory goes: a live stream is a directory, a finished one a few rows (``archive.py``).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import errno
import functools
import heapq
import itertools
import logging
import os
import queue
import secrets
import shutil
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

import msgspec
import zstandard

from .. import ids
from ..engine import (
    AppendResult,
    CloseInfo,
    Engine,
    Listener,
    ProducerState,
    StreamHandle,
    StreamInfo,
    StreamMeta,
)
from ..errors import (
    InvalidStreamId,
    OffsetOutOfRange,
    SequenceError,
    StorageUnavailable,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)
from . import archive
from .archive import ArchivedLog, archivable
from .catalog import Catalog
from .fsyncd import SyncHelper, SyncHelperGone
from .journal import Entry, Journal, replay
from .log import FANOUT_LOCK, Log, LogOptions, SyncTicket
from .segment import Segment, read_file, write_atomic

log = logging.getLogger(__name__)

POLICIES = ("always", "interval", "never")
FOOTPRINT_EVERY = 60.0  # seconds between two background looks at what the data dir takes on disk
FSYNC_THREADS = 16
SEAL_THREADS = 2
# A group commit still running after this long is logged (once per commit), with who is syncing:
# a hung disk, or a sync helper stopped or stuck, would otherwise stop every ack in silence
COMMIT_STALL_S = 10.0


@dataclass(frozen=True, slots=True)
class StoreOptions:
    fsync: str = "interval"
    interval_ms: float = 5.0  # accepted for compatibility; commits no longer wait (docs/storage.md)
    log: LogOptions = field(default_factory=LogOptions)
    max_open_logs: int = 1024  # streams whose file handles stay open (LRU)
    default_ttl: float | None = None  # seconds a closed stream is kept; None = forever
    max_total_bytes: int | None = None  # stored bytes cap; oldest closed streams go first
    tombstone_ttl: float = 24 * 3600.0  # how long a deleted id answers "gone"
    retention_every: float = 1.0
    seal_delay_s: float = 2.0  # a closed stream's last segment is compressed this long after the close
    # a finished answer moves into the archive this long after its close (None: never); until then a
    # client that just saw the end and comes back reads the files it was reading
    archive_delay_s: float | None = 10.0
    # the shared journal (journal.py; under always and interval): a file is checkpointed (its
    # segment files fsynced, then deleted) once it holds this many bytes or is this old
    journal_bytes: int = 64 << 20
    journal_age_s: float = 30.0
    # the journal's fdatasync in a helper process (fsyncd.py), not on a thread of this one: no commit
    # waits for the GIL. False: on the commit thread (what the store falls back to if the helper dies)
    sync_helper: bool = True

    def __post_init__(self) -> None:
        if self.fsync not in POLICIES:
            raise ValueError(f"fsync policy must be one of {', '.join(POLICIES)}, not {self.fsync!r}")
        if self.fsync == "never" and self.log.sync:
            object.__setattr__(self, "log", dataclasses.replace(self.log, sync=False))


class Durable:
    """What ``append_nowait`` hands back: the subset of a future its callers use (``done``,
    ``cancelled``, ``exception``, ``add_done_callback``), settled by the commit that makes the
    append durable, whose callbacks run right there, once the stream's waiters are settled (one
    added to a settled promise runs at once). An asyncio future would schedule each callback for
    a later turn of the loop: a future, a handle and a loop turn per append, which the task-free
    path exists to save. The callbacks run before the commit publishes the streams after this
    one, so they must be quick (an ack, a count). One that raises is reported to the loop's
    exception handler, as a future's is; the commit goes on."""

    __slots__ = ("_done", "_exc", "_callbacks")

    def __init__(self) -> None:
        self._done = False
        self._exc: BaseException | None = None
        self._callbacks: builtins.list[Callable[[Durable], object]] = []

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False  # nothing cancels a commit's promise

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("the append is not settled yet")
        return self._exc

    def add_done_callback(self, fn: Callable[[Durable], object]) -> None:
        if self._done:
            self._call(fn)
        else:
            self._callbacks.append(fn)

    def set_result(self, _: None) -> None:
        self._settle(None)

    def set_exception(self, exc: BaseException) -> None:
        self._settle(exc)

    def _settle(self, exc: BaseException | None) -> None:
        if self._done:
            return
        self._done, self._exc = True, exc
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            self._call(fn)

    def _call(self, fn: Callable[[Durable], object]) -> None:
        try:
            fn(self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:  # noqa: BLE001 - one append's ack must not stop the commit's others
            asyncio.get_running_loop().call_exception_handler(
                {"message": "exception in a durability callback", "exception": e}
            )


def _settle_waiters(
    waiters: builtins.list[tuple[int, Durable | asyncio.Future[None]]], exc: BaseException | None
) -> None:
    """Settle waiters already taken off a stream's list (so a callback that queues a new waiter
    on the same stream cannot have it dropped by the list being replaced under it)."""
    for _, w in waiters:
        if w.done():  # settled meanwhile (an awaiting task cancelled by an earlier callback)
            continue
        if exc is None:
            w.set_result(None)
        else:
            w.set_exception(exc)


class Tombstone(msgspec.Struct):
    id: str
    at: float
    reason: str


class Stream:
    """One stream as the hub sees it: append (durable), read, wait, close, listen."""

    def __init__(self, store: Store, log: Log) -> None:
        self.store = store
        self.log = log
        self.id = log.meta.id
        self.listeners: set[Listener] = set()
        # (offset mark, future), or a ``Durable`` for ``append_nowait``
        self._waiters: list[tuple[int, asyncio.Future[None] | Durable]] = []
        self._unpublished: deque[tuple[int, Sequence[bytes]]] = deque()
        self._end_published = log.close_durable
        self._changed = asyncio.Event()
        self.deleted = False
        self.sealing = False
        # last read or write (appends, closes, reads, ``touch``): the clock of ``meta.idle_ttl``.
        # In memory only: after a restart every stream starts a fresh window.
        self.last_access = time.time()
        self._waiting = 0  # coroutines inside wait(): they hold this object, so it must stay loaded

    @property
    def idle(self) -> bool:
        """Nothing refers to this object but the store: it may be dropped and reloaded from disk."""
        return not (
            self.listeners
            or self._waiters
            or self._unpublished
            or self._waiting
            or self.sealing
            or self.deleted
            or self in self.store._dirty
        )

    # durable, visible end of the stream
    @property
    def next_offset(self) -> int:
        return self.log.durable_offset

    @property
    def status(self) -> str:
        return self.log.status if self._end_published else "open"

    @property
    def ended(self) -> bool:
        return self._end_published

    @property
    def close_info(self) -> CloseInfo | None:
        return self.log.close_info if self._end_published else None

    @property
    def meta(self) -> StreamMeta:
        return self.log.meta

    @property
    def epoch(self) -> str:
        return self.log.meta.epoch

    def _check_live(self) -> None:
        if self.deleted:
            raise StreamGone(f"stream {self.id!r} was deleted")

    async def append(
        self,
        chunks: Sequence[bytes],
        producer_id: str | None = None,
        seq: int | None = None,
        epoch: int = 0,
        *,
        stream_seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """Append durably. ``close`` closes the stream ("done") in the same step, so no reader can
        see the stream end without these chunks; a retried append-and-close whose data landed but
        whose close did not (a crash between the two records) closes it now."""
        try:
            res = self._assign(chunks, producer_id, seq, epoch, stream_seq)
        except (SequenceError, StreamClosed):
            await self._settle()
            raise
        if close and self.log.close_info is None:
            self.log.close()
            await self.store._durable(self, self.log.next_offset, close=True)
        else:
            await self.store._durable(self, res.offset + res.count)
        return res

    def append_nowait(
        self, chunks: Sequence[bytes], producer_id: str | None = None, seq: int | None = None
    ) -> tuple[AppendResult, Durable | None] | None:
        """``append``'s synchronous part, for a caller that would rather not run a task per append
        (the WebSocket path): the offset assigned now, and the future that resolves once the append
        is durable (None: it is already, e.g. a retry of a durable one). Raises as ``append`` does;
        None (nothing done) when only ``append`` can answer: a refusal it must make durable first
        (sequence errors, a closed stream), the ``never`` policy (its append yields) or a stopped
        store."""
        store = self.store
        if store.opts.fsync == "never" or not store._started:
            return None
        try:
            res = self._assign(chunks, producer_id, seq)
        except (SequenceError, StreamClosed):
            return None  # nothing written: ``append`` settles, then refuses
        return res, store._durable_future(self, res.offset + res.count, promise=Durable)

    def _assign(
        self,
        chunks: Sequence[bytes],
        producer_id: str | None,
        seq: int | None,
        epoch: int = 0,
        stream_seq: str | None = None,
    ) -> AppendResult:
        """The offsets: the record pending in the log, to be published once durable."""
        self._check_live()
        self.store._touch(self)
        res = self.log.append(chunks, producer_id, seq, epoch, stream_seq=stream_seq)
        self.last_access = time.time()
        if not res.duplicate:
            self._unpublished.append((res.offset, chunks))
        return res

    async def close(
        self, status: str = "done", error: str | None = None, producer: tuple[str, int, int] | None = None
    ) -> None:
        self._check_live()
        self.store._touch(self)
        try:
            self.log.close(status, error, producer)
        except StreamClosed:
            await self._settle()
            raise
        self.last_access = time.time()
        await self.store._durable(self, self.log.next_offset, close=True)

    async def _settle(self) -> None:
        """Before a refusal is answered, make durable every write it was decided from: a producer's
        last appends (``sequence_error``, ``sequence_gap``, fenced) or a close (``stream_closed``).
        Otherwise a crash could undo the state while the client acts on the refusal (issue 11)."""
        log = self.log
        if log.close_info is not None and not log.close_durable:
            await self.store._durable(self, log.next_offset, close=True)
        elif log.next_offset > log.durable_offset or log._pending:
            await self.store._durable(self, log.next_offset)

    def read(self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None) -> list[bytes]:
        self._check_live()
        self.store._touch(self)
        self.last_access = time.time()
        return self.log.read(from_offset, max_chunks, max_bytes)

    async def read_chunks(
        self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None
    ) -> list[bytes]:
        # Reads of local files are short and bounded (``max_read_bytes``): done on the loop.
        return self.read(from_offset, max_chunks, max_bytes)

    async def producer_state(self, producer_id: str) -> ProducerState | None:
        return self.log.producers.get(producer_id)

    def listen(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def unlisten(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    def touch(self) -> None:
        """Count an access that reads nothing (a read at the tail) for ``meta.idle_ttl``."""
        self.last_access = time.time()

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """Wait until a chunk at ``offset`` is readable or the stream ended; False on timeout."""
        self._waiting += 1
        try:
            while self.next_offset <= offset and not self._end_published and not self.deleted:
                self._changed.clear()
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: see _sealer
                        await self._changed.wait()
                except TimeoutError:
                    return False
            return True
        finally:
            self._waiting -= 1

    def info(self) -> StreamInfo:
        info = self.log.info()
        fork_point = self.log.meta.labels.get("fork_offset")
        if fork_point is not None and fork_point.isdigit():  # sealed segments below it are hard links
            info.shared_segments = sum(1 for g in self.log.segments if g.sealed and g.end <= int(fork_point))
        if isinstance(self.log.prefix, archive.Blocks):  # or the archived parent's blocks it reads
            p = self.log.prefix
            with contextlib.suppress(sqlite3.Error):
                info.shared_segments += self.store.catalog.blocks_in(p.key, p.at, p.at + p.hi)
        if not self._end_published:
            info.status, info.error, info.closed = "open", None, None
        return info

    def _publish(self) -> None:
        durable = self.log.durable_offset
        # Everything one commit made durable goes out as one run: one frame per subscriber per
        # commit, not one per append (at 200 appends/s x 1,000 subscribers that is the difference
        # between keeping up and falling behind).
        unpublished = self._unpublished
        if not self.listeners:  # nobody to tell: what is durable is only forgotten
            while unpublished and unpublished[0][0] < durable:
                unpublished.popleft()
        runs: list[tuple[int, list[bytes]]] = []
        while unpublished and unpublished[0][0] < durable:
            off, chunks = unpublished.popleft()
            if runs and runs[-1][0] + len(runs[-1][1]) == off:
                runs[-1][1].extend(chunks)
            else:
                runs.append((off, list(chunks)))
        for first, run in runs:
            for listener in list(self.listeners):
                listener.on_chunks(self, first, run)
        if self.log.close_durable and not self._end_published and self.log.close_info is not None:
            self._end_published = True
            for listener in list(self.listeners):
                listener.on_end(self, self.log.close_info)
            self.store._schedule(self)
            self.store._ended(self)
            for cb in self.store.on_end:
                cb(self)
        keep, ready = [], []
        for mark, fut in self._waiters:
            if fut.done():
                continue
            if mark <= durable or self._end_published:
                ready.append((mark, fut))
            else:
                keep.append((mark, fut))
        self._waiters = keep
        self._changed.set()
        _settle_waiters(ready, None)

    def _fail(self, exc: BaseException, above: int) -> None:
        self._unpublished = deque((o, c) for o, c in self._unpublished if o < above)
        keep, failed = [], []
        for mark, fut in self._waiters:
            if mark > above and not fut.done():
                failed.append((mark, fut))
            elif not fut.done():
                keep.append((mark, fut))
        self._waiters = keep
        _settle_waiters(failed, exc)


class Store:
    shared = False  # one hub per data dir (hub/core/datadir.py locks it)

    def __init__(self, root: str | Path, opts: StoreOptions | None = None) -> None:
        self.root = Path(root)
        self.opts = opts or StoreOptions()
        self._streams: dict[str, Stream] = {}
        self._catalog: Catalog | None = None  # every stream that exists, live or archived (start())
        self._deleting: set[str] = set()  # deleted, their catalog rows not gone yet
        self._deadlines: list[tuple[float, str]] = []  # (when to check for expiry, id): a heap
        self._archive_due: list[tuple[float, str]] = []  # (when, id): a heap
        self._archive_queued: set[str] = set()
        self._archive_wake = asyncio.Event()
        self._db_pool: ThreadPoolExecutor | None = None  # the catalog's one writer
        self._dicts: archive.Dicts = {}  # every trained dictionary, by id (they are small and few)
        self._dict_id: int | None = None  # the one new answers are coded with
        self._samples: deque[bytes] = deque(maxlen=archive.DICT_SAMPLES)
        self._since_train = 0
        self._training = False
        self._last_sweep = 0.0
        self._seal_due: list[tuple[float, int, str]] = []  # (when, tie-break, id): a heap
        self._seal_queued: set[str] = set()
        self._seal_seq = itertools.count()
        self._seal_wake = asyncio.Event()
        self._creating: dict[str, asyncio.Future[None]] = {}
        # Foreground file work (fsyncs, creates, tombstones) never queues behind background work
        # (sealing, removing deleted trees): two pools, both living from start() to stop().
        self._fsync_pool: ThreadPoolExecutor | None = None
        self._bg_pool: ThreadPoolExecutor | None = None
        self._open: OrderedDict[str, Stream] = OrderedDict()  # streams holding file handles
        self._dirty: set[Stream] = set()
        self._kick = asyncio.Event()
        self._stopping = False  # stop(): the committer ends after the commit it is in
        self._commit_since: float | None = None  # when the running group commit started
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self.on_create: list[Callable[[StreamHandle], None]] = []
        self.on_delete: list[Callable[[str], None]] = []
        self.on_end: list[Callable[[StreamHandle], None]] = []  # any stream's end became durable
        self.on_cancel: list[Callable[[str], object]] = []  # never fired: one hub per data dir
        self._footprint: dict[str, int] = {}  # Store.footprint's last look
        self._footprint_at = 0.0
        self._footprint_busy = False
        # "fsyncs" counts group commits (the name predates the journal); "commit_fsyncs" the
        # fsync calls those commits made, "checkpoint_fsyncs" the ones checkpoints made
        self.counters = {
            "fsyncs": 0,
            "repairs": 0,
            "expired": 0,
            "write_errors": 0,
            "archived": 0,
            "commit_fsyncs": 0,
            "checkpoint_fsyncs": 0,
            "checkpoints": 0,
            "journal_replayed": 0,
            "commit_stalls": 0,  # group commits that ran longer than COMMIT_STALL_S
        }
        self._journal: Journal | None = None
        self._checkpointing = False
        # after an unclean stop: live streams whose raw segments were fsynced since this start
        self._unclean = False
        self._tail_synced: set[str] = set()
        self._started = False
        # the running loop while started: ``asyncio.get_running_loop()`` costs a getpid() syscall
        # on Python 3.11, and the append path asks for a future on every append
        self._loop: asyncio.AbstractEventLoop | None = None
        self._committing: CommitThread | None = None  # the journal's commit thread, from the first commit
        self._sync_helper: SyncHelper | None = None  # the journal's fdatasync (start(), if sync_helper)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise RuntimeError("the store is not started")
        return self._catalog

    async def start(self) -> None:
        for sub in ("streams", "tombstones", "trash"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._fsync_pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="storage-fsync")
        self._bg_pool = ThreadPoolExecutor(SEAL_THREADS + 1, thread_name_prefix="storage-bg")
        self._db_pool = ThreadPoolExecutor(1, thread_name_prefix="storage-db")
        clean = self.root / "CLEAN_SHUTDOWN"
        was_clean = clean.exists()
        if was_clean:
            clean.unlink()
        self._unclean = not was_clean
        loop = asyncio.get_running_loop()
        # Before any stream is opened: what the journal holds goes back into the segment files
        # (after an OS crash they may have lost it), which are then fsynced and the journal emptied.
        sync = self.opts.fsync != "never"
        res = await loop.run_in_executor(self._fsync_pool, replay, self.root, sync)
        self.counters["journal_replayed"] = res.applied
        if res.torn_bytes:
            self.counters["repairs"] += 1
        if sync:
            self._journal = await loop.run_in_executor(
                self._fsync_pool,
                functools.partial(
                    Journal,
                    self.root,
                    self.opts.journal_bytes,
                    self.opts.journal_age_s,
                    first=res.last_file + 1,
                    seq=res.last_seq,
                ),
            )
        self._catalog = await loop.run_in_executor(
            self._db_pool, Catalog, self.root / "store.db", self.opts.default_ttl
        )
        # After a crash, or on the first start over a data dir of the old layout (no store.db), the
        # stream directories are matched with the catalog (O(live streams): finished answers have
        # no directory). After a clean shutdown the catalog is trusted as it is.
        reconcile = not was_clean or self.catalog.created
        await loop.run_in_executor(self._db_pool, self._start_catalog, reconcile)
        self._dicts = {i: zstandard.ZstdCompressionDict(d) for i, d in self.catalog.dicts().items()}
        self._dict_id = max(self._dicts, default=None)
        if self.opts.max_total_bytes is not None:
            await loop.run_in_executor(self._db_pool, self.catalog.ensure_arch_index)
        live = self.catalog.live_ids()
        for sid, status, closed in live:
            if status != "open":
                self._queue_archive(sid, closed or 0.0)
        for sid, idle_ttl in self.catalog.idle_ttls():  # a fresh idle window after every start
            heapq.heappush(self._deadlines, (time.time() + idle_ttl, sid))
        if self._journal is not None and self.opts.sync_helper:
            # last, so that a start failing earlier leaves no process behind
            try:
                self._sync_helper = SyncHelper(loop)
                self._sync_helper.adopt(self._journal.cur)  # before any frame is written to it
            except OSError as e:  # cannot start a process (EAGAIN, ENOMEM): the commit thread syncs
                log.warning("no sync helper (%s): the journal is fsynced on the commit thread", e)
                self._drop_sync_helper()
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._committer()),
            asyncio.create_task(self._retention()),
            asyncio.create_task(self._sealer()),
            asyncio.create_task(self._archiver()),
            asyncio.create_task(self._watch_commits()),
        ]
        if reconcile:
            # Verify every live stream now (torn tails truncated, repairs counted in the stats right
            # away) rather than on first touch; loading one also corrects its catalog row.
            self._tasks.append(asyncio.create_task(self._walk([sid for sid, _, _ in live], verify=True)))
        self._loop = asyncio.get_running_loop()
        self._started = True

    async def _walk(self, sids: builtins.list[str], verify: bool) -> None:
        for i, sid in enumerate(sids):
            with contextlib.suppress(Exception):
                self._load(sid, verify)
            if i % 16 == 15:
                await asyncio.sleep(0)  # stay responsive while walking many streams

    def _start_catalog(self, reconcile: bool) -> None:
        """On the database thread, before anything else runs: empty the trash and, if asked, make
        the catalog agree with the stream directories (the files are the truth about live streams)."""
        shutil.rmtree(self.root / "trash", ignore_errors=True)
        (self.root / "trash").mkdir(exist_ok=True)
        if not reconcile:
            return
        cat = self.catalog
        on_disk: dict[str, Path] = {}
        for p in (self.root / "streams").glob("*/*/*"):
            meta = p / "meta.json"
            if not p.is_dir():
                continue
            if not meta.exists():
                shutil.rmtree(p, ignore_errors=True)  # a create that crashed before its meta.json
                continue
            try:
                m = msgspec.json.decode(read_file(meta), type=StreamMeta)
            except (OSError, msgspec.DecodeError):
                # meta.json is written atomically before anything else, so this is damage, not a
                # crashed create: keep the files for a person to look at, and count it.
                self.counters["repairs"] += 1
                continue
            on_disk[m.id] = p
        new = []
        for sid, p in on_disk.items():
            entry = cat.get(sid)
            if (entry is not None and entry.archived) or (entry is None and self.gone(sid)):
                # archived (its rows were fsynced before the directory was to go) or deleted (the
                # tombstone was durable before the row went): what is left here is garbage
                self._remove_dir(p)
            elif entry is None and (p / "prefix.json").exists():
                # a fork of an archived answer whose row (and reference to the parent's blocks) was
                # never committed: the fork was never acknowledged, and it cannot read its prefix
                self._remove_dir(p)
            elif entry is None:
                # its row was lost (an OS crash after an unsynced commit) or this is the old layout:
                # the row starts "open"; loading the stream (the walk) sets its status from the files
                new.append((msgspec.json.decode(read_file(p / "meta.json"), type=StreamMeta), "open", None))
        cat.add_many(new)
        lost = [sid for sid, _, _ in cat.live_ids() if sid not in on_disk]
        cat.remove(lost, durable=False)  # rows whose create never became durable

    def _to_trash(self, path: Path) -> Path:
        """Move a stream directory to the trash (one rename): its path is free for a new stream."""
        trash = self.root / "trash" / f"{path.name}.{secrets.token_hex(4)}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, trash)
        return trash

    def _empty_trash(self, trash: Path, path: Path) -> None:
        """Remove a trashed stream directory, then prune the empty fan-out dirs it left."""
        shutil.rmtree(trash, ignore_errors=True)
        self._prune(path.parent)

    def _remove_dir(self, path: Path, epoch: str | None = None) -> None:
        """Remove a stream directory that no row names as live any more (its answer is archived),
        then prune empty fan-out dirs. A crash half-way leaves a directory that the next start's
        reconcile removes. With ``epoch``, only the directory of that incarnation goes: the id may
        have been deleted and created again since (a new directory at the same path, whose meta.json
        names another epoch or is not written yet), and that one must stay. Deletes go through the
        trash instead (``_to_trash``), for the same reason."""
        if epoch is not None:
            with FANOUT_LOCK:
                try:
                    meta = msgspec.json.decode(read_file(path / "meta.json"), type=StreamMeta)
                except (OSError, msgspec.DecodeError):
                    return  # gone already, or a create in progress: not ours to remove
                if meta.epoch != epoch:
                    return
                trash = self._to_trash(path)
            self._empty_trash(trash, path)
            return
        shutil.rmtree(path, ignore_errors=True)
        self._prune(path.parent)

    def _prune(self, fan: Path) -> None:
        """Remove the two fan-out levels above a removed stream if they are empty: a million finished
        answers must not leave 65,536 empty directories (inodes) behind. The lock keeps a create
        from making its directory in a parent that is being removed."""
        with FANOUT_LOCK:
            for d in (fan, fan.parent):
                try:
                    d.rmdir()
                except OSError:
                    return  # not empty (or gone): the level above is not empty either

    async def stop(self) -> None:
        """Make everything acknowledged-or-pending durable, then release every file."""
        self._stopping = True
        self._kick.set()
        for t in self._tasks[1:]:  # the first is the committer: it ends after its commit in flight
            t.cancel()
        if self._tasks:
            done, _ = await asyncio.wait(self._tasks[:1], timeout=COMMIT_STALL_S)
            if not done:  # a hung disk or helper: its appends fail (never acked), the stop goes on
                log.warning(
                    "the group commit in flight did not finish in %.0f s: stopping anyway", COMMIT_STALL_S
                )
                self._tasks[0].cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self._committing is not None:
            # a commit cancelled some other way (a cancelled stop) may have left work running there
            with contextlib.suppress(Exception):
                await self._committing.run(_noop)
        await self._commit_once()
        for t in list(self._bg):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await t
        await self._seals_due_now()
        if self._journal is not None:
            # every segment file fsynced, the journal deleted: a clean start has nothing to replay
            if self._committing is not None:
                # after the commits it has queued (the cancelled committer's included): no commit
                # thread touches the journal once it is closed
                with contextlib.suppress(Exception):
                    await self._committing.run(_noop)
                self._committing.stop()
                self._committing = None
            with contextlib.suppress(OSError):
                await asyncio.get_running_loop().run_in_executor(self._fsync_pool, self._journal.close)
            self._journal = None
        self._drop_sync_helper()
        stopped = StorageUnavailable("the store stopped before this write was committed")
        for s in self._streams.values():
            if s._waiters:  # arrived after the last commit: answered, never left waiting (not acked)
                s._fail(stopped, s.log.durable_offset)
            s.log.shutdown()
        self._open.clear()
        self._started = False
        self._loop = None
        if self._db_pool is not None and self._catalog is not None:
            await asyncio.get_running_loop().run_in_executor(self._db_pool, self._catalog.close)
            self._catalog = None
        with contextlib.suppress(OSError):
            (self.root / "CLEAN_SHUTDOWN").touch()
        for pool in (self._fsync_pool, self._bg_pool, self._db_pool):
            if pool is not None:
                pool.shutdown(wait=False)
        self._fsync_pool = self._bg_pool = self._db_pool = None

    async def __aenter__(self) -> Store:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- streams -----------------------------------------------------------------------------

    def exists(self, stream_id: str) -> bool:
        try:
            ids.validate(stream_id)
        except InvalidStreamId:
            return False
        return stream_id not in self._deleting and self.catalog.exists(stream_id)

    def list(self, prefix: str = "", limit: int | None = None) -> list[str]:
        ids_ = self.catalog.list_ids(prefix, None if limit is None else limit + len(self._deleting))
        if self._deleting:
            ids_ = [i for i in ids_ if i not in self._deleting]
        return ids_ if limit is None else ids_[:limit]

    # --- the Engine protocol (storage/engine.py) ---------------------------------------------

    async def get_stream(self, stream_id: str) -> Stream:
        return self.get(stream_id)

    def append_nowait(
        self, stream_id: str, chunks: Sequence[bytes], producer_id: str | None = None, seq: int | None = None
    ) -> tuple[Stream, AppendResult, Durable | None] | None:
        """The engine's optional fast path (see ``Engine``): ``Stream.append_nowait`` on the stream."""
        s = self.get(stream_id)
        got = s.append_nowait(chunks, producer_id, seq)
        return None if got is None else (s, *got)

    async def stream_exists(self, stream_id: str) -> bool:
        return self.exists(stream_id)

    async def list_streams(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
        return self.list(prefix, limit)

    async def open_stream_ids(self) -> builtins.list[str]:
        out = []
        # the catalog's open rows (an index): a row may still say open for a stream whose end is
        # not recorded yet, so each one is asked (they are live streams, a few files each)
        for i, sid in enumerate(self.catalog.open_ids()):
            with contextlib.suppress(Exception):
                if not self.get(sid).ended:
                    out.append(sid)
            if i % 64 == 63:
                await asyncio.sleep(0)  # stay responsive while looking at many streams
        return out

    async def create(
        self,
        stream_id: str,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        content_type: str | None = None,
        labels: dict[str, str] | None = None,
        exist_ok: bool = False,
        idle_ttl: float | None = None,
        replace_gone: bool = False,
    ) -> Stream:
        ids.validate(stream_id)
        while (pending := self._creating.get(stream_id)) is not None:
            await asyncio.shield(pending)  # one create per id at a time; the others see its result
        if self.exists(stream_id):
            if exist_ok:
                return self.get(stream_id)
            raise StreamExists(f"stream {stream_id!r} already exists")
        if not replace_gone and self.gone(stream_id):
            # a reader holding an offset of the deleted stream must never resume into a new one
            raise StreamGone(f"stream {stream_id!r} was deleted or expired; its id is not reusable yet")
        done = self._creating[stream_id] = asyncio.get_running_loop().create_future()
        try:
            return await self._create(stream_id, ttl, expires_at, content_type, labels, idle_ttl)
        finally:
            del self._creating[stream_id]
            done.set_result(None)

    async def _create(
        self,
        stream_id: str,
        ttl: float | None,
        expires_at: float | None,
        content_type: str | None,
        labels: dict[str, str] | None,
        idle_ttl: float | None = None,
    ) -> Stream:
        meta = StreamMeta(
            id=stream_id,
            created=time.time(),
            epoch=secrets.token_hex(8),
            ttl=ttl,
            expires_at=expires_at,
            content_type=content_type,
            labels=labels or {},
            idle_ttl=idle_ttl,
        )
        path = ids.stream_dir(self.root, stream_id)
        loop = asyncio.get_running_loop()
        try:
            log = await loop.run_in_executor(self._fsync_pool, Log.create, path, meta, self.opts.log)
        except FileExistsError:
            # a crashed create or a delete still in the trash: the catalog is authoritative
            await loop.run_in_executor(self._fsync_pool, shutil.rmtree, path, True)
            log = await loop.run_in_executor(self._fsync_pool, Log.create, path, meta, self.opts.log)
        except OSError as e:
            raise StorageUnavailable(f"cannot create stream: {e.strerror}") from e
        await self._catalog_add(log, path)
        s = self._register(stream_id, path, log)
        for cb in self.on_create:
            cb(s)
        return s

    async def fork(
        self, source_id: str, stream_id: str, upto: int | None = None, labels: dict[str, str] | None = None
    ) -> Stream:
        """A new stream whose first ``upto`` chunks (default: all) are ``source_id``'s, open for appends.

        Sealed segments of the source below the fork point are shared (hard links), not copied;
        only the rest of the prefix is. Regenerate-from-here and conversation branches cost almost
        nothing on disk.
        """
        ids.validate(stream_id)
        src = self.get(source_id)
        end = src.next_offset if upto is None else upto
        if not 0 <= end <= src.next_offset:
            raise OffsetOutOfRange(f"fork point {end} is outside 0..{src.next_offset}")
        while (pending := self._creating.get(stream_id)) is not None:
            await asyncio.shield(pending)
        if self.exists(stream_id):
            raise StreamExists(f"stream {stream_id!r} already exists")
        if self.gone(stream_id):
            raise StreamGone(f"stream {stream_id!r} was deleted or expired; its id is not reusable yet")
        if isinstance(src.log, ArchivedLog) and src.log.prefix is None and end > 0:
            return await self._fork_archived(src, stream_id, end, labels)
        shared: list[Segment] = []
        # snapshot on the loop: sealing swaps segments in place (a source that is itself a fork of
        # an archived answer has no segments from offset 0: it is copied)
        for seg in src.log.segments if src.log.prefix is None else []:
            closing = seg is src.log.segments[-1] and src.log.close_info is not None
            if not seg.sealed or seg.end > end or seg.corrupt or closing:
                break
            shared.append(seg)
        meta = self._fork_meta(src, stream_id, end, labels)
        done = self._creating[stream_id] = asyncio.get_running_loop().create_future()
        try:
            path = ids.stream_dir(self.root, stream_id)
            loop = asyncio.get_running_loop()
            try:
                log = await loop.run_in_executor(
                    self._fsync_pool, Log.fork, path, meta, self.opts.log, shared
                )
            except OSError as e:
                await loop.run_in_executor(self._fsync_pool, shutil.rmtree, path, True)
                raise StorageUnavailable(f"cannot fork: {e.strerror or e}") from e
            await self._catalog_add(log, path)
            s = self._register(stream_id, path, log)
            pos = log.next_offset
            while pos < end:  # the unshared rest of the prefix, one bounded batch at a time
                got = src.read(pos, min(4096, end - pos), 4 << 20)
                await s.append(got)
                pos += len(got)
        finally:
            del self._creating[stream_id]
            done.set_result(None)
        for cb in self.on_create:
            cb(s)
        return s

    def _fork_meta(self, src: Stream, stream_id: str, end: int, labels: dict[str, str] | None) -> StreamMeta:
        return StreamMeta(
            id=stream_id,
            created=time.time(),
            epoch=secrets.token_hex(8),
            labels={**src.log.meta.labels, **(labels or {}), "forked_from": src.id, "fork_offset": str(end)},
            content_type=src.log.meta.content_type,
        )

    async def _fork_archived(
        self, src: Stream, stream_id: str, end: int, labels: dict[str, str] | None
    ) -> Stream:
        """A fork of an archived answer reads its first ``end`` chunks from the parent's archived
        blocks (one more user of them, counted in the catalog: deleting the parent keeps them while
        the fork lives); only what it appends afterwards goes into its own files."""
        assert isinstance(src.log, ArchivedLog)
        base = (src.log.key, src.log._own.at, end)
        raw = src.log.raw_bytes if end == src.next_offset else 0
        if end != src.next_offset:
            pos = 0
            while pos < end:
                got = src.read(pos, min(4096, end - pos), 4 << 20)
                raw += sum(map(len, got))
                pos += len(got)
        meta = self._fork_meta(src, stream_id, end, labels)
        ref = msgspec.json.encode({"arch": base[0], "at": base[1], "upto": end})
        done = self._creating[stream_id] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        path = ids.stream_dir(self.root, stream_id)
        try:
            try:
                log = await loop.run_in_executor(
                    self._fsync_pool, Log.fork, path, meta, self.opts.log, [], (end, raw, ref)
                )
            except OSError as e:
                await loop.run_in_executor(self._fsync_pool, shutil.rmtree, path, True)
                raise StorageUnavailable(f"cannot fork: {e.strerror or e}") from e
            try:
                ok = await loop.run_in_executor(self._db_pool, self.catalog.add_fork, meta, base)
            except sqlite3.Error as e:
                ok = False
                err: Exception = StorageUnavailable(f"cannot record the fork in the catalog: {e}")
            else:
                err = StreamGone(f"stream {src.id!r} was deleted while it was forked")
            if not ok:
                log.shutdown()
                await loop.run_in_executor(self._fsync_pool, self._remove_dir, path)
                raise err
            log.prefix = archive.base_blocks(self.catalog, self._dicts, base, self.opts.log)
            s = self._register(stream_id, path, log)
        finally:
            del self._creating[stream_id]
            done.set_result(None)
        for cb in self.on_create:
            cb(s)
        return s

    def _register(self, stream_id: str, path: Path, log: Log) -> Stream:
        """A new stream's files exist: the id now names it (and no longer answers "gone")."""
        with contextlib.suppress(FileNotFoundError):
            self._tombstone(stream_id).unlink()
        log.journaled = self._journal is not None
        s = self._streams[stream_id] = Stream(self, log)
        self._touch(s)
        self._schedule(s)
        return s

    def get(self, stream_id: str) -> Stream:
        return self._load(stream_id, verify=False)

    def _tombstone(self, stream_id: str) -> Path:
        name = ids.dir_name(stream_id)
        return self.root / "tombstones" / name[:2] / name

    def gone(self, stream_id: str, now: float | None = None) -> bool:
        """Deleted or expired within ``tombstone_ttl``: answers "gone", not "not found"."""
        try:
            ts = msgspec.json.decode(read_file(self._tombstone(stream_id)), type=Tombstone)
        except (OSError, msgspec.DecodeError):
            return False
        return ts.id == stream_id and (time.time() if now is None else now) < ts.at + self.opts.tombstone_ttl

    def _load(self, stream_id: str, verify: bool) -> Stream:
        s = self._streams.get(stream_id)
        if s is not None and not s.log.failed:
            return s
        if stream_id in self._deleting:
            raise StreamGone(f"stream {stream_id!r} was deleted")
        entry = self.catalog.get(ids.validate(stream_id))
        if entry is None:
            if self.gone(stream_id):
                raise StreamGone(f"stream {stream_id!r} was deleted or expired")
            raise StreamNotFound(f"stream {stream_id!r} does not exist")
        path = ids.stream_dir(self.root, stream_id)
        if entry.archived:
            log: Log = ArchivedLog(path, entry, self.opts.log, self.catalog, self._dicts)
        else:
            if s is not None:  # failed fsync: drop what memory believes and recover from the files
                s.log.shutdown()
                verify = True
                if self._journal is not None:
                    # what the files hold is served as durable once reopened, but the journal may
                    # not have it (its write or fsync failed): make the files durable themselves
                    try:
                        _fsync_raw(path)
                    except OSError as e:
                        raise StorageUnavailable(f"fsync failed: {e.strerror or e}") from e
            if self._unclean and self._journal is not None and stream_id not in self._tail_synced:
                # After a crash, recovery reads what the page cache kept, which may include records
                # of a commit cut short (written, never journaled): they are served once loaded, so
                # they must not be lost by an OS crash later. Once per live stream per unclean start.
                try:
                    _fsync_raw(path)
                except OSError as e:
                    raise StorageUnavailable(f"fsync failed: {e.strerror or e}") from e
                self._tail_synced.add(stream_id)
            log = Log.open(path, self.opts.log, verify)
            log.journaled = self._journal is not None
            if entry.base is not None:  # a fork of an archived answer: its first chunks are there
                log.prefix = archive.base_blocks(self.catalog, self._dicts, entry.base, self.opts.log)
            self.counters["repairs"] += log.repairs
            ci = log.close_info if log.close_durable else None
            status = ci.status if ci is not None else "open"
            if status != entry.status or log.meta.epoch != entry.meta.epoch:
                self._db_later(self.catalog.set_status, log.meta, status, ci.at if ci else None)
            if ci is not None:
                self._queue_archive(stream_id, ci.at)
        ns = Stream(self, log)
        if s is not None:
            ns.listeners = s.listeners
        self._streams[stream_id] = ns
        self._touch(ns)
        self._maybe_seal(ns)
        if ns.meta.idle_ttl is not None:
            self._schedule(ns)
        return ns

    async def set_labels(self, stream_id: str, labels: dict[str, str]) -> None:
        """Replace a stream's labels, the one mutable part of its meta, durably (atomic rewrite)."""
        s = self.get(stream_id)
        s._check_live()
        s.log.meta.labels = dict(labels)
        loop = asyncio.get_running_loop()
        if not isinstance(s.log, ArchivedLog):
            data = msgspec.json.encode(s.log.meta)
            await loop.run_in_executor(None, write_atomic, s.log.path / "meta.json", data)
        await loop.run_in_executor(self._db_pool, self.catalog.set_labels, stream_id, dict(labels))

    async def delete(self, stream_id: str, reason: str = "deleted", durable: bool = True) -> None:
        """Delete a stream; its id answers "gone" while the tombstone lives. ``durable=False``
        (expiry) skips the tombstone's fsync: after a crash, an expired stream may come back for
        one more retention tick, which deletes it again."""
        while (pending := self._creating.get(stream_id)) is not None:
            await asyncio.shield(pending)  # creates and deletes of one id never overlap
        s = self.get(stream_id)
        done = self._creating[stream_id] = asyncio.get_running_loop().create_future()
        try:
            await self._delete(s, stream_id, reason, durable)
        finally:
            del self._creating[stream_id]
            done.set_result(None)

    async def _delete(self, s: Stream, stream_id: str, reason: str, durable: bool) -> None:
        s.deleted = True
        self._deleting.add(stream_id)
        self._streams.pop(stream_id, None)
        self._open.pop(stream_id, None)
        self._dirty.discard(s)
        try:
            tomb = self._tombstone(stream_id)
            tomb.parent.mkdir(exist_ok=True)
            data = msgspec.json.encode(Tombstone(stream_id, time.time(), reason))
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._fsync_pool, write_atomic, tomb, data, durable)
            # the tombstone is durable before the row goes, so a crash in between still answers gone
            await loop.run_in_executor(self._db_pool, self.catalog.remove, [stream_id], durable)
            s.log.shutdown()
            if not isinstance(s.log, ArchivedLog):
                # The rename is awaited, so the id's path is free once delete() returns (a create
                # of the same id must never race a background removal); emptying it is not.
                path = s.log.path
                trash = await loop.run_in_executor(self._fsync_pool, self._to_trash, path)
                self._spawn(loop.run_in_executor(self._bg_pool, self._empty_trash, trash, path))
        finally:
            self._deleting.discard(stream_id)
        s._fail(StreamGone(f"stream {stream_id!r} was {reason}"), -1)
        s._changed.set()
        for listener in list(s.listeners):
            listener.on_gone(s)
        for cb in self.on_delete:
            cb(stream_id)

    async def request_cancel(self, stream_id: str) -> None:
        """No other hub shares this store: the cancel was already told to this hub's producers."""

    async def lease(self, stream_ids: Sequence[str], seconds: float, *, new: bool = False) -> None:
        """Leases of an unshared store live in its hub (hub/core/lease.py)."""

    async def lapse_leases(self, now: float | None = None) -> builtins.list[str]:
        return []

    def stats(self) -> dict[str, int]:
        streams = self._streams.values()
        return {
            "streams": self.catalog.count,
            "streams_loaded": len(self._streams),
            "streams_open": sum(1 for s in streams if s.status == "open"),
            "streams_closed": sum(1 for s in streams if s.status != "open"),
            "open_files": sum(s.log.open_files for s in streams),
            "raw_bytes": sum(s.log.raw_bytes for s in streams),
            "stored_bytes": sum(s.log.stored_bytes for s in streams),
            "repairs": sum(s.log.repairs for s in streams),
            # logical bytes of every archived block (the running total the size cap uses)
            "archived_bytes": self.catalog.archived_bytes,
            **self._allocated(),
            **self.counters,
        }

    def _allocated(self) -> dict[str, int]:
        """What the data dir takes on disk (allocated blocks, st_blocks, not logical sizes). The
        database's files and free pages are looked at on every call (a few stats); the split of its
        pages by table and the walk of the live streams' files run in the background at most once a
        ``FOOTPRINT_EVERY`` (``footprint_age_s`` says how old they are; -1: not yet)."""
        files = {}
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            try:
                files[name] = os.stat(self.root / name).st_blocks * 512
            except OSError:
                files[name] = 0
        try:
            _, free = self.catalog.page_bytes()
        except sqlite3.Error:
            free = 0
        now = time.monotonic()
        if not self._footprint_busy and now >= self._footprint_at + FOOTPRINT_EVERY and self._started:
            self._footprint_busy = True
            self._spawn(self.footprint())
        fp = self._footprint
        catalog = sum(files.values())
        return {
            "catalog_allocated_bytes": catalog,  # store.db with its WAL and shared-memory index
            "catalog_wal_allocated_bytes": files["store.db-wal"],
            "catalog_free_bytes": free,  # free pages inside store.db (reused before it grows)
            # pages of the archive's blocks (every archived answer's text) and of the rest of the
            # database (streams rows, indexes, dictionaries), from the last background look
            "archive_allocated_bytes": fp.get("archive", 0),
            "catalog_rows_allocated_bytes": fp.get("rows", 0),
            "streams_allocated_bytes": fp.get("streams", 0),  # live streams' directories and files
            "allocated_bytes": catalog + fp.get("streams", 0),
            "footprint_age_s": int(now - self._footprint_at) if fp else -1,
        }

    async def footprint(self) -> dict[str, int]:
        """Look at what the database's tables and the live streams' files take on disk now (the
        figures ``stats`` reports). O(database pages + live files): in the background."""
        loop = asyncio.get_running_loop()
        try:
            tables = await loop.run_in_executor(self._db_pool, self.catalog.table_bytes)
            streams = await loop.run_in_executor(self._bg_pool, _tree_allocated, self.root / "streams")
            fp = {"streams": streams}
            if tables is not None:
                fp["archive"] = tables.get("blocks", 0)
                fp["rows"] = sum(v for k, v in tables.items() if k != "blocks")
            self._footprint, self._footprint_at = fp, time.monotonic()
        finally:
            self._footprint_busy = False
        return self._footprint

    # --- group commit ------------------------------------------------------------------------

    def _touch(self, s: Stream) -> None:
        """LRU of loaded streams. Past ``max_open_logs``, the least recently used idle ones close
        their files and leave memory (the catalog keeps their path; ``get`` reloads them cheaply),
        so a hub that has served millions of streams holds only the recent ones."""
        self._open[s.id] = s
        self._open.move_to_end(s.id)
        excess = len(self._open) - self.opts.max_open_logs
        if excess <= 0:
            return
        # look at a bounded number of the oldest: busy ones stay put and are looked at again later
        for sid, old in list(itertools.islice(self._open.items(), excess + 16)):
            if excess <= 0:
                break
            if old is s or not old.log.release_files():
                continue
            del self._open[sid]
            excess -= 1
            if old.idle and self._streams.get(sid) is old:
                del self._streams[sid]

    async def _durable(self, s: Stream, mark: int, close: bool = False) -> None:
        if self.opts.fsync == "never":
            try:
                s.log.flush()
            except StorageUnavailable as e:
                self.counters["write_errors"] += 1
                s._fail(e, s.log.written_offset)
                raise
            s.log.durable_offset = s.log.written_offset
            if close:
                s.log.close_durable = True
            s._publish()
            self._maybe_seal(s)
            await asyncio.sleep(0)  # an append always yields: a producer in a loop must not starve the rest
            return
        fut = self._durable_future(s, mark, close)
        if fut is None:
            return
        if not self._started:
            await self._commit_once()
        await fut

    @overload
    def _durable_future(self, s: Stream, mark: int, close: bool = False) -> asyncio.Future[None] | None: ...
    @overload
    def _durable_future(
        self, s: Stream, mark: int, close: bool = False, *, promise: type[Durable]
    ) -> Durable | None: ...
    def _durable_future(
        self, s: Stream, mark: int, close: bool = False, *, promise: type[Durable] | None = None
    ) -> asyncio.Future[None] | Durable | None:
        """A future (or a ``Durable``, for ``promise``) that resolves once ``s`` is durable up to
        ``mark`` (None: it is), the stream queued for the next group commit."""
        if mark <= s.log.durable_offset and not close:
            return None
        fut = promise() if promise is not None else (self._loop or asyncio.get_running_loop()).create_future()
        # a close has no offset of its own: its waiter is released by the end being published
        s._waiters.append((mark + 1 if close else mark, fut))
        self._dirty.add(s)
        self._kick.set()
        return fut

    async def _committer(self) -> None:
        # Leader/follower group commit: a commit starts as soon as something is dirty and no commit
        # is running; what arrives while its fsync runs is the next commit's. Nothing waits a fixed
        # interval (``interval_ms`` is no longer a wait): an idle disk acknowledges after one fsync.
        # stop() does not cancel it: a commit interrupted mid-sync would leave appends that may well
        # be durable unacknowledged, and a journal file whose sync result nobody heard
        while not self._stopping:
            await self._kick.wait()
            self._kick.clear()
            self._commit_since = time.monotonic()
            try:
                await self._commit_once()
            finally:
                self._commit_since = None

    async def _watch_commits(self) -> None:
        reported = None  # the start of the last commit logged: once per commit
        while True:
            await asyncio.sleep(COMMIT_STALL_S / 4)
            since = self._commit_since
            if since is None or since == reported or time.monotonic() - since < COMMIT_STALL_S:
                continue
            reported = since
            helper = self._sync_helper
            who = f"the sync helper (pid {helper.proc.pid})" if helper is not None else "the commit thread"
            log.warning(
                "a group commit has been running for %.0f s: %s is waiting for the disk; no append is "
                "acknowledged meanwhile",
                time.monotonic() - since,
                who,
            )
            self.counters["commit_stalls"] += 1

    async def _commit_once(self) -> None:
        dirty, self._dirty = self._dirty, set()
        work = []
        for s in dirty:
            try:
                work.append((s, s.log.begin_sync()))
            except StorageUnavailable as e:
                self.counters["write_errors"] += 1
                s._fail(e, s.log.written_offset)
        if not work:
            return
        self.counters["fsyncs"] += 1
        if self._journal is not None:
            await self._commit_journal(self._journal, work)
            return
        # One file per stream means one fsync per dirty stream. Run them side by side: ext4 folds
        # concurrent fsyncs into one journal commit (64 files: 27 ms one by one, 4 ms in parallel).
        loop = asyncio.get_running_loop()
        batches = [[t for _, t in work][i::FSYNC_THREADS] for i in range(min(FSYNC_THREADS, len(work)))]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._fsync_pool, _sync_all, b) for b in batches)
        )
        by_ticket = {
            id(t): e for b, r in zip(batches, results, strict=True) for t, e in zip(b, r, strict=True)
        }
        errors = [by_ticket[id(t)] for _, t in work]
        for (s, ticket), err in zip(work, errors, strict=True):
            if err is not None:
                reason = f"fsync failed: {err}"
                s.log.fail(reason)
                s._fail(StorageUnavailable(reason), s.log.durable_offset)
                continue
            s.log.end_sync(ticket)
            s._publish()
            self._maybe_seal(s)

    async def _commit_journal(self, j: Journal, work: builtins.list[tuple[Stream, SyncTicket]]) -> None:
        """The commit under the journal: the segment writes (done by ``begin_sync``) framed into
        the journal, one fsync, publish. The segment files are fsynced by a later checkpoint."""
        entries = []
        dirs: builtins.list[Path] = []
        for s, t in work:
            created = s.log.meta.created
            for name, pos, data in s.log.take_unjournaled():
                entries.append(Entry(name, created, pos, data))
            dirs += t.dirs
        before = j.fsyncs
        try:
            if self._sync_helper is None:
                await self._commit_thread().run(_journal_commit, j, entries, dirs)
            else:
                await self._journal_commit_helped(j, self._sync_helper, entries, dirs)
        except _JournalWriteFailed as failed:
            e = failed.__cause__
            assert isinstance(e, OSError)
            # nothing of this commit is acknowledged: every stream goes back to its last commit
            code = errno.errorcode.get(e.errno or 0, "EIO")
            exc = StorageUnavailable(f"write failed ({code}): {e.strerror}")
            self.counters["write_errors"] += 1
            for s, _ in work:
                if s.log.undo_flush():
                    s._fail(exc, s.log.written_offset)
                else:
                    s.log.fail(str(exc))
                    s._fail(exc, s.log.durable_offset)
            return
        except OSError as e:
            # the journal's pages may be gone: these appends are not acknowledged, the streams
            # recover from their files on next access, and the next commit starts a new file
            reason = f"fsync failed: {e.strerror or e}"
            j.broken = True
            for s, _ in work:
                s.log.fail(reason)
                s._fail(StorageUnavailable(reason), s.log.durable_offset)
            return
        finally:
            self.counters["commit_fsyncs"] += j.fsyncs - before
        for s, t in work:
            s.log.end_sync(t)
            s._publish()
            self._maybe_seal(s)
        if j.old and not self._checkpointing:
            self._checkpointing = True
            self._spawn(self._checkpoint(j))

    async def _journal_commit_helped(
        self, j: Journal, helper: SyncHelper, entries: builtins.list[Entry], dirs: builtins.list[Path]
    ) -> None:
        """``_journal_commit`` with the sync helper: the frames written here, on the event loop (to
        the page cache), the fdatasync by the helper process (fsyncd.py), the rare rotations on the
        commit thread (they create a file and fsync the directory). Same errors: a failed write is
        ``_JournalWriteFailed``, a failed fdatasync an ``OSError``."""
        if j.broken:
            await self._commit_thread().run(_journal_rotate, j)
            helper.adopt(j.cur)
        try:
            j.write(entries, dirs)
        except OSError as e:
            raise _JournalWriteFailed from e
        j.fsyncs += 1
        try:
            await helper.sync(j.cur)
        except SyncHelperGone as e:
            # Nothing is lost: this commit is made durable on the commit thread, and every later one.
            # Not by syncing the same file again: the helper may have died after its fdatasync
            # failed, and the error went with it (both descriptors are one open file, with one
            # writeback-error cursor), so a second fdatasync could return 0 over lost pages. The
            # frames go again into a new file (replay writes the same bytes twice: idempotent).
            log.warning("%s: the journal is fsynced on the commit thread from now on", e)
            self._drop_sync_helper()
            j.fsyncs -= 1  # counted again by the sync itself
            await self._commit_thread().run(_journal_rewrite, j, entries, dirs)
            return
        except asyncio.CancelledError:
            j.broken = True  # the sync's result is unknown: nothing more goes into this file
            raise
        if j.due():
            # the commit is durable: a file that cannot be started now is tried again next commit
            with contextlib.suppress(OSError):
                await self._commit_thread().run(j.rotate)
            if self._sync_helper is not None:
                self._sync_helper.adopt(j.cur)  # so that it lets go of the full file now

    def _drop_sync_helper(self) -> None:
        helper, self._sync_helper = self._sync_helper, None
        if helper is not None:
            helper.close()
            if self._bg_pool is not None:  # reaped off the loop (it exits once its socket closes)
                self._bg_pool.submit(helper.wait)

    def _commit_thread(self) -> CommitThread:
        if self._committing is None:
            self._committing = CommitThread(self._loop or asyncio.get_running_loop())
        return self._committing

    async def _checkpoint(self, j: Journal) -> None:
        loop = asyncio.get_running_loop()
        try:
            while j.old:
                before = j.checkpoint_fsyncs
                try:
                    await loop.run_in_executor(self._bg_pool, j.checkpoint)
                except OSError:
                    self.counters["write_errors"] += 1
                    return  # the journal files stay (replayed after a crash); retried after the next rotation
                finally:
                    self.counters["checkpoint_fsyncs"] += j.checkpoint_fsyncs - before
                self.counters["checkpoints"] += 1
        finally:
            self._checkpointing = False

    # --- background work ---------------------------------------------------------------------

    def _spawn(self, aw: Awaitable[object]) -> None:
        async def run() -> None:
            await aw

        t = asyncio.ensure_future(run())
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _maybe_seal(self, s: Stream) -> None:
        """Queue the stream for sealing. A rolled segment is sealed at once; the last segment of a
        closed stream waits ``seal_delay_s``, as most short-lived streams (deleted soon after they
        end) would otherwise be compressed only to be thrown away. The queue holds ids, not
        streams, so a stream waiting its turn can still leave memory."""
        seg = s.log.seal_candidate()
        if seg is None or s.sealing or s.id in self._seal_queued:
            return
        if (
            seg is s.log.active
            and len(s.log.segments) == 1
            and self.opts.archive_delay_s is not None
            and archive.short(s.log)
        ):
            return  # a short finished answer goes to the archive, which codes its raw records itself
        delay = self.opts.seal_delay_s if seg is s.log.active else 0.0
        heapq.heappush(self._seal_due, (time.monotonic() + delay, next(self._seal_seq), s.id))
        self._seal_queued.add(s.id)
        self._seal_wake.set()

    async def _sealer(self) -> None:
        """One task runs the seal queue, at most ``SEAL_THREADS`` seals at a time."""
        slots = asyncio.Semaphore(SEAL_THREADS)
        while True:
            if not self._seal_due:
                self._seal_wake.clear()
                await self._seal_wake.wait()
                continue
            wait = self._seal_due[0][0] - time.monotonic()
            if wait > 0:
                self._seal_wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can turn a cancel that races its
                # timeout into a TimeoutError, and a swallowed cancel hangs Store.stop()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._seal_wake.wait()
                continue
            s = self._pop_due_seal()
            if s is None:
                continue
            await slots.acquire()
            s.sealing = True
            task = asyncio.create_task(self._seal(s))
            self._bg.add(task)

            def done(t: asyncio.Task[None]) -> None:
                self._bg.discard(t)
                slots.release()

            task.add_done_callback(done)

    async def _seals_due_now(self) -> None:
        """At stop: run the seals already due that the (now cancelled) sealer had not started yet, such
        as the last segment of a stream closed just before: cancelling it dropped them, leaving raw
        segments behind after a clean stop."""
        now = time.monotonic()
        while self._seal_due and self._seal_due[0][0] <= now:
            s = self._pop_due_seal()
            if s is None:
                continue
            s.sealing = True
            with contextlib.suppress(Exception):
                await self._seal(s)

    def _pop_due_seal(self) -> Stream | None:
        """Take the first queued seal; its stream, or None if there is nothing (left) to seal:
        deleted while it waited, not loadable, already sealing or sealed."""
        _, _, sid = heapq.heappop(self._seal_due)
        self._seal_queued.discard(sid)
        if not self.exists(sid):
            return None
        try:
            s = self.get(sid)
        except Exception:
            return None
        if s.sealing or s.log.seal_candidate() is None:
            return None
        return s

    async def _seal(self, s: Stream) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not s.deleted and (seg := s.log.seal_candidate()) is not None:
                new, ck = await loop.run_in_executor(self._bg_pool, s.log.build_seal, seg)
                if s.deleted:
                    return
                s.log.apply_seal(seg, new, ck)
        except OSError:
            pass  # the raw segment stays valid; sealing is retried on the next commit
        finally:
            s.sealing = False
        if archivable(s.log) and s.log.close_info is not None:
            self._queue_archive(s.id, s.log.close_info.at)

    async def _retention(self) -> None:
        while True:
            await asyncio.sleep(self.opts.retention_every)
            with contextlib.suppress(Exception):
                await self.expire()

    def _deadline(self, s: Stream) -> float | None:
        meta, ci = s.log.meta, s.close_info
        ttl = meta.ttl if meta.ttl is not None else self.opts.default_ttl
        times = [
            meta.expires_at,
            ci.at + ttl if ci is not None and ttl is not None else None,
            s.last_access + meta.idle_ttl if meta.idle_ttl is not None else None,
        ]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    def _schedule(self, s: Stream) -> None:
        when = self._deadline(s)
        if when is not None:
            heapq.heappush(self._deadlines, (when, s.id))

    async def expire(self, now: float | None = None) -> builtins.list[str]:
        """Delete streams past their TTL or expiry, then the oldest closed ones over the size cap.

        Deadlines live in a heap (pushed when a stream is created, ends or is first loaded), so a
        tick costs O(expired), not O(streams). A popped deadline is checked against the stream as
        it is now (an idle TTL moves with every access) and pushed back if it moved.
        """
        now = time.time() if now is None else now
        expired: builtins.list[str] = []
        # deadlines of every stream from the catalog's index; idle TTLs (which move with each
        # access, in memory only) from the heap
        for sid in self.catalog.due(now):
            with contextlib.suppress(Exception):
                s = self.get(sid)
                when = self._deadline(s)
                if when is not None and when <= now:
                    expired.append(sid)
                else:  # a stale row (its stream was reopened, or reconciled): correct it
                    ci = s.close_info
                    self._db_later(self.catalog.set_status, s.meta, s.status, ci.at if ci else None)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, sid = heapq.heappop(self._deadlines)
            if not self.exists(sid) or sid in expired:
                continue
            try:
                s = self.get(sid)
            except Exception:
                continue
            when = self._deadline(s)
            if when is not None and when <= now:
                expired.append(sid)
            elif when is not None:
                heapq.heappush(self._deadlines, (when, sid))
        cap = self.opts.max_total_bytes
        dropped_archived = False
        if cap is not None:
            # stored bytes: the archive's running total plus the live streams' (O(live), never a
            # walk of every answer); the oldest go first: archived answers in archive order (a
            # grown chat pack's answers in its first one's place), then closed live ones by close time
            total = self.catalog.archived_bytes
            live_closed = []
            for sid, _, _ in self.catalog.live_ids():
                if sid in expired or sid in self._deleting:
                    continue
                with contextlib.suppress(StreamNotFound, StreamGone):
                    s = self.get(sid)
                    total += s.log.stored_bytes
                    if s.close_info is not None:
                        live_closed.append((s.close_info.at, sid, s.log.stored_bytes))
            if total > cap:
                for sid, size in self.catalog.oldest_archived(4096):
                    if total <= cap:
                        break
                    if sid not in expired:
                        expired.append(sid)
                        total -= size
                        dropped_archived = True
            for _, sid, size in sorted(live_closed):
                if total <= cap:
                    break
                expired.append(sid)
                total -= size

        async def drop(sid: str) -> None:
            with contextlib.suppress(StreamNotFound, StreamGone):
                await self.delete(sid, reason="expired", durable=False)
                self.counters["expired"] += 1

        for i in range(0, len(expired), 64):  # side by side: expiry must keep up with creation
            await asyncio.gather(*(drop(sid) for sid in expired[i : i + 64]), return_exceptions=True)
        if dropped_archived or (expired and self.opts.max_total_bytes is not None):
            with contextlib.suppress(sqlite3.Error):  # freed pages back to the file system
                await asyncio.get_running_loop().run_in_executor(self._db_pool, self.catalog.reclaim)
        if now >= self._last_sweep + min(600.0, self.opts.tombstone_ttl / 4):
            self._last_sweep = now
            await asyncio.get_running_loop().run_in_executor(self._bg_pool, self._sweep_tombstones, now)
        return expired

    # --- the catalog and the archive --------------------------------------------------------

    async def _catalog_add(self, log: Log, path: Path) -> None:
        """A new stream's files are durable: give it its row (awaited, so a listing shows it)."""
        try:
            await asyncio.get_running_loop().run_in_executor(self._db_pool, self.catalog.add, log.meta)
        except sqlite3.Error as e:
            log.shutdown()
            await asyncio.get_running_loop().run_in_executor(self._fsync_pool, self._remove_dir, path)
            raise StorageUnavailable(f"cannot record the stream in the catalog: {e}") from e

    def _db_later(self, fn: Callable[..., object], *args: object) -> None:
        """A catalog write nobody waits for (a row the files can re-derive); stop() waits for it."""

        async def run() -> None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._db_pool, fn, *args)
            except sqlite3.Error:
                self.counters["write_errors"] += 1

        self._spawn(run())

    def _ended(self, s: Stream) -> None:
        ci = s.log.close_info
        if ci is None or isinstance(s.log, ArchivedLog):
            return
        self._db_later(self.catalog.set_status, s.log.meta, ci.status, ci.at)
        self._queue_archive(s.id, ci.at)

    def _queue_archive(self, sid: str, closed_at: float) -> None:
        delay = self.opts.archive_delay_s
        if delay is None or sid in self._archive_queued:
            return
        heapq.heappush(self._archive_due, (closed_at + delay, sid))
        self._archive_queued.add(sid)
        self._archive_wake.set()

    async def _archiver(self) -> None:
        """Move finished answers into the archive, in batches (one fsynced transaction each)."""
        while True:
            if not self._archive_due:
                self._archive_wake.clear()
                await self._archive_wake.wait()
                continue
            wait = self._archive_due[0][0] - time.time()
            if wait > 0:
                self._archive_wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, 60.0)):  # clocks move; look again
                        await self._archive_wake.wait()
                continue
            batch: builtins.list[str] = []
            while self._archive_due and self._archive_due[0][0] <= time.time() and len(batch) < 256:
                _, sid = heapq.heappop(self._archive_due)
                self._archive_queued.discard(sid)
                batch.append(sid)
            task = asyncio.create_task(self._archive_batch(batch))
            self._bg.add(task)  # stop() lets a batch finish: rows committed, directories removed
            task.add_done_callback(self._bg.discard)
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _archive_batch(self, sids: builtins.list[str]) -> None:
        self._archive_queued.update(sids)  # loading them below must not queue them again
        ok = False
        try:
            ok = await self._archive_some(sids)
        finally:
            self._archive_queued.difference_update(sids)
        if ok:  # one that became archivable meanwhile (its seal finished during the batch)
            for sid in sids:
                s = self._streams.get(sid)
                if s is not None and not s.deleted and archivable(s.log) and s.log.close_info is not None:
                    self._queue_archive(sid, s.log.close_info.at)

    async def _archive_some(self, sids: builtins.list[str]) -> bool:
        """Archive what can be of ``sids``; False if writing failed (retried after a restart)."""
        streams = []
        for sid in sids:
            try:
                s = self.get(sid)
            except Exception:
                continue
            # not yet sealed (the seal re-queues it), damaged (stays in files), or busy: skip
            if archivable(s.log) and not s.sealing and not s.deleted:
                streams.append(s)
        if not streams:
            return True
        loop = asyncio.get_running_loop()
        logs = [s.log for s in streams]
        for s in streams:
            s.sealing = True  # a background rewrite is under way: the stream stays loaded
        dict_id = self._dict_id
        zdict = self._dicts[dict_id] if dict_id is not None else None

        def pack_all() -> tuple[builtins.list[archive.Pack], builtins.list[bytes]]:
            loaded = [x for x in map(archive.load, logs) if x is not None]
            return archive.pack(
                loaded, archive.compressor(zdict), dict_id, self.catalog.joinable, self._dicts
            )

        try:
            packs, samples = await loop.run_in_executor(self._bg_pool, pack_all)
            answers = [a for p in packs for a in p.answers]
            self._samples.extend(samples)
            self._since_train += len(samples)
            moved = await loop.run_in_executor(
                self._db_pool, self.catalog.archive, packs, self.opts.fsync != "never"
            )
        except (OSError, sqlite3.Error):
            self.counters["write_errors"] += 1
            return False  # the files are untouched; the answers are archived after the next restart
        finally:
            for s in streams:
                s.sealing = False
        epochs = {a.meta.id: a.meta.epoch for a in answers}
        paths = []
        for sid in moved:
            entry = self.catalog.get(sid)
            loaded = self._streams.get(sid)
            if loaded is not None and entry is not None and not isinstance(loaded.log, ArchivedLog):
                old = loaded.log
                loaded.log = ArchivedLog(old.path, entry, self.opts.log, self.catalog, self._dicts)
                loaded.log.repairs, loaded.log.repair_notes = old.repairs, old.repair_notes
                old.shutdown()
            paths.append((ids.stream_dir(self.root, sid), epochs.get(sid)))
        await loop.run_in_executor(self._bg_pool, self._remove_dirs, paths)
        self.counters["archived"] += len(moved)
        due = archive.DICT_TRAIN_AFTER if self._dict_id is None else archive.DICT_RETRAIN_EVERY
        if not self._training and self._since_train >= due:
            self._training = True
            self._spawn(self._train())
        return True

    async def _train(self) -> None:
        """Train a dictionary from recent short answers; the first one also recodes the answers
        archived before it (they were coded without one)."""
        loop = asyncio.get_running_loop()
        try:
            samples = builtins.list(self._samples)
            data = await loop.run_in_executor(self._bg_pool, archive.train, samples)
            new_id = await loop.run_in_executor(self._db_pool, self.catalog.add_dict, data, time.time())
            self._dicts[new_id] = zstandard.ZstdCompressionDict(data)
            first = self._dict_id is None
            self._dict_id, self._since_train = new_id, 0
            self.counters["dicts_trained"] = self.counters.get("dicts_trained", 0) + 1
            if first:
                # up to the answers a batch packed while the dictionary was being trained, too
                lo, hi = 1, self.catalog.next_arch
                while lo < max(hi, self.catalog.next_arch):
                    rows = self.catalog.blocks_between(lo, lo + 256)
                    new = await loop.run_in_executor(self._bg_pool, archive.recode, rows, self._dicts, new_id)
                    await loop.run_in_executor(self._db_pool, self.catalog.replace_blocks, new)
                    self.counters["recoded"] = self.counters.get("recoded", 0) + len(new)
                    lo += 256
                    if lo >= hi and not new:
                        break
                # recoded blocks shrank in place; while the archive is this small, compact it
                await loop.run_in_executor(self._db_pool, self.catalog.vacuum)
        except (OSError, sqlite3.Error, zstandard.ZstdError):
            self.counters["write_errors"] += 1
        finally:
            self._training = False

    def _remove_dirs(self, paths: builtins.list[tuple[Path, str | None]]) -> None:
        for p, epoch in paths:
            self._remove_dir(p, epoch)

    def _sweep_tombstones(self, now: float) -> None:
        for t in (self.root / "tombstones").glob("*/*"):
            with contextlib.suppress(OSError, msgspec.DecodeError):
                ts = msgspec.json.decode(read_file(t), type=Tombstone)
                if now >= ts.at + self.opts.tombstone_ttl:
                    t.unlink()


class _JournalWriteFailed(Exception):
    """The journal write of a commit failed (``e.__cause__``): nothing of it is durable."""


def _journal_rotate(j: Journal) -> None:
    """A new file after a failed write or fsync (commit thread): failing, nothing is acknowledged."""
    try:
        j.rotate()
    except OSError as e:
        raise _JournalWriteFailed from e


def _journal_rewrite(j: Journal, entries: builtins.list[Entry], dirs: builtins.list[Path]) -> None:
    """A commit whose sync was lost with the sync helper (commit thread): its frames written again,
    into a new file, and synced there. Any OSError is handled as a failed fsync (the first file
    may hold the frames already): the streams recover from their files, nothing is acknowledged."""
    j.rotate()
    j.write(entries, dirs)
    j.sync()


def _journal_commit(j: Journal, entries: builtins.list[Entry], dirs: builtins.list[Path]) -> None:
    """A group commit's blocking part, on the commit thread: write the frames (a fresh file first
    after a failed fsync: never write after one into the same file), fsync once, and start the next
    file if this one is full or old."""
    try:
        if j.broken:
            j.rotate()
        j.write(entries, dirs)
    except OSError as e:
        raise _JournalWriteFailed from e
    j.sync()  # an OSError here: the fsync failed (and the file is marked broken)
    if j.due():
        # the commit is durable: a file that cannot be started now is tried again next commit
        with contextlib.suppress(OSError):
            j.rotate()


class CommitThread:
    """One thread for the journal's group commits, in order. A commit hands it a function and gets a
    future: lighter than an executor's submit and wrap_future per commit (a third less CPU per
    handoff), and the journal's write and fsync both leave the event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._q: queue.SimpleQueue[
            tuple[Callable[..., None], tuple[object, ...], asyncio.Future[None]] | None
        ]
        self._q = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._main, name="storage-commit", daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., None], *args: object) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = self._loop.create_future()
        self._q.put((fn, args, fut))
        return fut

    def _main(self) -> None:
        while (item := self._q.get()) is not None:
            fn, args, fut = item
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting commit
                self._loop.call_soon_threadsafe(_settle, fut, e)
            else:
                self._loop.call_soon_threadsafe(_settle, fut, None)

    def stop(self) -> None:
        """No more commits: the thread ends once the queued ones are done (it does not wait)."""
        self._q.put(None)


def _noop() -> None:
    pass


def _settle(fut: asyncio.Future[None], exc: BaseException | None) -> None:
    if fut.done():  # the commit awaiting it was cancelled (stop)
        return
    if exc is None:
        fut.set_result(None)
    else:
        fut.set_exception(exc)


def _fsync_raw(path: Path) -> None:
    for p in path.glob("*.log"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tree_allocated(root: Path) -> int:
    """Allocated bytes of every file and directory under ``root``."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _sync_all(tickets: list) -> list[str | None]:
    out: list[str | None] = []
    for t in tickets:
        try:
            Log.do_sync(t)
            out.append(None)
        except OSError as e:
            out.append(f"{e.strerror or e}")
    return out


if TYPE_CHECKING:  # the file engine implements the engine interface (checked by mypy)
    _engine: type[Engine] = Store
    _handle: type[StreamHandle] = Stream
