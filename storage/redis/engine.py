"""The Redis Streams engine: ``storage.engine.Engine`` for hubs side by side on one Redis.

Layout (storage/redis/keys.py): one Redis stream per stream (entry id ``0-<offset+1>``: explicit ids
are our offsets), a meta hash beside it in the same hash slot, a tombstone when deleted, and once
finished one zstd value instead of both (storage/redis/sealed.py). Every change is ONE Lua script
(storage/redis/lua/): the idempotency check, XADD, the metadata and the live notification happen
atomically, so what a listener is told is exactly what a reader will read.

Invariants:

* Offsets are assigned by the script from the meta hash, so appends through any number of hubs get
  dense offsets, and a producer's (id, epoch, seq) is checked against its window in the same step.
* Acknowledged = the script's reply arrived. With ``appendfsync always`` Redis 7.0 sends that reply
  only after the AOF write and fsync of the event-loop iteration that ran the script; with
  ``everysec`` it means "in Redis memory", up to about a second from being on disk.
* An open stream last written under another Redis incarnation (restart, failover) gets a new epoch
  at its next touch unless the fsync policy is ``always`` (acknowledged writes survived), and so
  does one whose end a hub saw past what Redis holds: readers get ``reset``, never a silent gap.
* Listeners get chunks in offset order, each once: notifications carry their first offset; what
  arrives out of order waits for the gap to be filled, and a gap that the notifications do not fill
  (a lost pub/sub message, a reconnection) is read from the stream itself.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .. import ids
from ..engine import (
    CLOSE_STATUSES,
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
    ChunkTooLarge,
    OffsetOutOfRange,
    SequenceError,
    SequenceGap,
    StorageError,
    StorageUnavailable,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)
from . import keys as K
from . import scripts, wire
from .live import Live
from .pipe import ScriptPipe
from .sealed import Sealed, seal, unseal

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"load", "access", "seal", "labels"})  # safe to run twice


class LeaseNotDue(StorageError):
    """A lease sweep found the lease renewed (or the stream closed) meanwhile: nothing to end."""

    code = "lease_not_due"


ERRORS: dict[str, type[StorageError]] = {
    "sequence_error": SequenceError,
    "sequence_gap": SequenceGap,
    "stream_closed": StreamClosed,
    "lease_not_due": LeaseNotDue,
}


@dataclass(frozen=True, slots=True)
class RedisOptions:
    prefix: str = "rh:"  # every key and channel of this engine; hubs sharing streams share it
    default_ttl: float | None = None  # seconds a closed stream is kept; None = forever
    tombstone_ttl: float = 24 * 3600.0
    retention_every: float = 1.0
    seal_delay_s: float = 2.0  # a closed stream becomes one zstd value this long after its close
    seal_level: int = 19
    max_chunk_bytes: int = 1 << 20
    max_append_bytes: int = 8 << 20
    max_read_bytes: int = 4 << 20
    max_connections: int = 16  # commands (appends, reads, catch-ups); live traffic adds one
    publish_bytes: int = 64 << 10  # appends up to this size travel inside their notification
    expire_grace: float = 60.0  # the keys' own expiry, after the deadline retention acts on
    max_handles: int = 10_000  # streams kept in memory when nothing listens to them
    # None: renew open streams' epochs after a Redis restart unless Redis runs appendfsync always
    renew_on_restart: bool | None = None


def _timed_out() -> None:
    """After a TimeoutError from ``asyncio.timeout``: re-raise a cancel that raced it (on 3.11 the
    cancel can surface as the timeout, and a swallowed cancel hangs ``stop()``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _now() -> str:
    return repr(time.time())


def _opt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


class RedisStream:
    """One stream, as this engine last learned it; kept current by scripts' replies and notifications."""

    def __init__(self, engine: RedisEngine, stream_id: str) -> None:
        self.engine = engine
        self._id = stream_id
        self.k = engine.space.stream(stream_id)
        self._meta = StreamMeta(id=stream_id, created=0.0, epoch="")
        self._next = 0
        self._close: CloseInfo | None = None
        self._raw = 0
        self._stored = 0
        self._last_append: float | None = None
        self._sealed: Sealed | None = None
        self._sealed_chunks: list[bytes] | None = None
        self.deleted = False
        self.listeners: set[Listener] = set()
        self._delivered = 0  # next offset listeners get
        self._end_delivered = False
        self._pending: dict[int, list[bytes]] = {}  # out-of-order arrivals, by first offset
        self._batch: tuple[int, list[bytes]] | None = None  # delivered, not yet handed to listeners
        # subscribed, confirmed, and loaded since: notifications keep this handle current, so
        # get_stream needs no round trip (a producer's appends each look their stream up)
        self._fresh = False
        self._want = 0  # an offset known to exist (from a notification) not delivered yet
        self._catching: asyncio.Task[None] | None = None
        self._inflight = 0  # this engine's appends awaiting their reply
        self._changed = asyncio.Event()
        self._subs = 0  # listeners + waiters: while > 0 the engine subscribes to the channel
        self._last_access_sent = 0.0

    # --- the cheap properties: this engine's freshest knowledge ---------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def meta(self) -> StreamMeta:
        return self._meta

    @property
    def epoch(self) -> str:
        return self._meta.epoch

    @property
    def next_offset(self) -> int:
        return self._next

    @property
    def status(self) -> str:
        return "open" if self._close is None else self._close.status

    @property
    def ended(self) -> bool:
        return self._close is not None

    @property
    def close_info(self) -> CloseInfo | None:
        return self._close

    # --- state from Redis -------------------------------------------------------------------------

    def _apply_hash(self, h: dict[str, bytes]) -> None:
        meta = msgspec.json.decode(h["meta"], type=StreamMeta)
        meta.epoch = h["ep"].decode()
        self._set_epoch(meta.epoch, int(h["n"]))
        self._meta = meta
        self._grow(int(h["n"]))
        self._raw = int(h.get("raw", b"0"))
        self._stored = self._raw
        la = h.get("la")
        self._last_append = float(la) if la else None
        if "cl" in h and self._close is None:
            self._close = msgspec.json.decode(h["cl"], type=CloseInfo)

    def _apply_sealed(self, z: Sealed, size: int) -> None:
        self._set_epoch(z.epoch, len(z.lengths))
        self._meta = z.meta
        self._meta.epoch = z.epoch
        self._sealed = z
        self._sealed_chunks = None
        self._grow(len(z.lengths))
        self._raw, self._stored, self._last_append = z.raw, size, z.last_append
        if self._close is None:
            self._close = z.close

    def _set_epoch(self, epoch: str, nxt: int) -> None:
        if self._meta.epoch and epoch != self._meta.epoch:
            self._reset(epoch, nxt)

    def _grow(self, nxt: int) -> None:
        if nxt > self._next:
            self._next = nxt
            self._changed.set()

    def _reset(self, epoch: str, nxt: int) -> None:
        """Redis may have lost chunks already delivered: offsets of the old epoch mean nothing now."""
        if epoch == self._meta.epoch:
            return
        self.engine.counters["epoch_resets"] += 1
        self._flush()  # chunks of the old epoch, in order, before the news that it ended
        self._meta.epoch = epoch
        self._next = self._delivered = self._want = nxt
        self._pending.clear()
        self._changed.set()
        for listener in list(self.listeners):
            listener.on_reset(self, epoch)

    async def refresh(self) -> None:
        """Learn the stream's state from Redis (the epoch check runs on the way)."""
        await self.engine._load_into(self)

    # --- writing -------------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self.deleted:
            raise StreamGone(f"stream {self._id!r} was deleted")

    def _validate(self, chunks: Sequence[bytes], producer_id: str | None, stream_seq: str | None) -> None:
        o = self.engine.opts
        if stream_seq is not None and producer_id == "":
            raise SequenceError("a producer id sent with a Stream-Seq must not be empty")
        if producer_id is not None and "\0" in producer_id:
            raise SequenceError("a producer id must not contain NUL")
        if not chunks:
            raise ChunkTooLarge("an append needs at least one chunk")
        total = 0
        for c in chunks:
            if len(c) > o.max_chunk_bytes:
                raise ChunkTooLarge(f"chunk of {len(c)} bytes; the limit is {o.max_chunk_bytes}")
            total += len(c)
        if total > o.max_append_bytes:
            raise ChunkTooLarge(f"append of {total} bytes; the limit is {o.max_append_bytes}")

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
        self._check_live()
        chunks = [bytes(c) for c in chunks]
        self._validate(chunks, producer_id, stream_seq)
        close_json = msgspec.json.encode(CloseInfo("done", None, time.time())) if close else b""
        res = await self._write("a", chunks, producer_id, seq, epoch, stream_seq, close_json)
        if res.duplicate and close and self._close is None:
            # a retried append-and-close whose data landed but whose close did not
            await self._write("c", [], None, None, 0, None, close_json)
        return res

    async def close(
        self, status: str = "done", error: str | None = None, producer: tuple[str, int, int] | None = None
    ) -> None:
        if status not in CLOSE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(CLOSE_STATUSES)}")
        self._check_live()
        close_json = msgspec.json.encode(CloseInfo(status, error, time.time()))
        pid, pep, pseq = producer if producer is not None else (None, 0, None)
        await self._write("c", [], pid, pseq, pep, None, close_json)

    async def _write(
        self,
        mode: str,
        chunks: list[bytes],
        producer_id: str | None,
        seq: int | None,
        epoch: int,
        stream_seq: str | None,
        close_json: bytes,
    ) -> AppendResult:
        e = self.engine
        has_seq = producer_id is not None and seq is not None
        head = (
            f"{mode}|{'1' if has_seq else '0'}|{seq if has_seq else 0}|{epoch}|"
            f"{'0' if stream_seq is None else '1'}|{_now()}|{self._meta.epoch}:{self._next}|{e._new_epoch()}"
        )
        args: list[Any] = [e._write_consts, head, producer_id or "", stream_seq or "", close_json, *chunks]
        keys_ = [self.k.meta, self.k.data, e.space.open, e.space.deadlines, e.space.leases]

        def settle(r: bytes) -> None:
            """The reply's effects on this handle: run by the engine's script pipe, in submission
            order, even when the caller was cancelled meanwhile (the write happened all the same)."""
            if not r.startswith(b"ok "):
                return
            _, first, count, nxt, ep, closed = r.split(b" ")
            self._set_epoch(ep.decode(), int(nxt))
            e.counters["appends" if mode == "a" else "closes"] += 1
            if count != b"0":
                self._raw += sum(map(len, chunks))
                self._last_append = time.time()
                self._arrive(int(first), chunks)
            if closed == b"1":
                self._ended(msgspec.json.decode(close_json, type=CloseInfo), int(nxt))
                e._ended_here(self)

        for _ in range(2):
            r = await self._submit(keys_, args, settle)
            kind, _, rest = r.partition(b" ")
            if kind == b"ok":
                first, count, *_ = rest.split(b" ")
                return AppendResult(int(first), int(count))
            if kind == b"dup":
                first, count, nxt = rest.split(b" ")
                self._grow(int(nxt))  # what the answer was decided from is in Redis: readable
                return AppendResult(int(first), int(count), duplicate=True)
            if kind == b"err":
                code, nxt, msg = rest.split(b" ", 2)
                self._grow(int(nxt))
                raise ERRORS.get(code.decode(), StorageError)(msg.decode())
            # no meta hash: sealed, deleted, or never created (the load raises gone / not found)
            await self.refresh()
            if self._sealed is None:
                continue  # created again meanwhile: once more against what Redis holds now
            z = self._sealed
            if mode == "a" and producer_id is not None and seq is not None:
                w = z.producers.get(producer_id)
                if w is not None:
                    pe, *entries = w.split("|")
                    for ent in entries:
                        s_, f_, c_ = (int(x) for x in ent.split(","))
                        if int(pe) == epoch and s_ == seq:
                            return AppendResult(f_, c_, duplicate=True)
            raise StreamClosed(f"stream is closed ({self.status})")
        raise StorageUnavailable(f"stream {self._id!r} kept changing under the append")

    async def _submit(
        self,
        keys_: list[str],
        args: list[Any],
        settle: Callable[[Any], None] | None,
        script: str = "write",
        attempts: int = 1,
    ) -> Any:
        """One script call through the engine's script pipe (storage/redis/pipe.py): a stream's
        calls reach Redis in the order they were made, as the file engine assigns them in call
        order, so a producer's pipelined seqs never overtake each other. ``attempts`` > 1 only for
        a call that is safe to repeat (a load): the first call after Redis restarted meets the
        connection to the old server and fails."""
        delay = 0.05
        self._inflight += 1
        try:
            for attempt in range(attempts):
                try:
                    return await self.engine._call(script, keys_, args, settle)
                except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                    self.engine.counters["redis_errors"] += 1
                    if attempt == attempts - 1 or not self.engine._running:
                        raise StorageUnavailable(f"redis: {exc}") from exc
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
                except RedisError as exc:
                    self.engine.counters["redis_errors"] += 1
                    raise StorageUnavailable(f"redis: {exc}") from exc
            raise AssertionError("unreachable")
        finally:
            self._inflight -= 1

    # --- live delivery -------------------------------------------------------------------------

    def _arrive(self, first: int, chunks: list[bytes]) -> None:
        """Chunks [first, first + len) exist: hand listeners what is next in order, keep the rest."""
        self._grow(first + len(chunks))
        if first > self._delivered:
            self._pending[first] = chunks
            self._want = max(self._want, first + len(chunks))
            self._catch_up()
            return
        skip = self._delivered - first
        if skip < len(chunks):
            self._deliver(first + skip, chunks[skip:])
        while (run := self._pending.pop(self._delivered, None)) is not None:
            self._deliver(self._delivered, run)
        for off in [o for o in self._pending if o < self._delivered]:  # overlaps already delivered
            run = self._pending.pop(off)
            if off + len(run) > self._delivered:
                self._arrive(off, run)
        self._maybe_end()

    def _deliver(self, first: int, chunks: list[bytes]) -> None:
        """Hand listeners a run at the end of this event-loop pass, joined with every run that
        arrives in the same pass: a busy hub reads many notifications (or replies) per pass, and
        one frame per run and subscriber instead of one per chunk is what keeps it from falling
        behind. An idle hub delivers each run alone, with no added wait."""
        self._delivered = first + len(chunks)
        if not self.listeners:
            return
        if self._batch is None:
            self._batch = (first, list(chunks))
            asyncio.get_running_loop().call_soon(self._flush)
        else:
            self._batch[1].extend(chunks)  # contiguous: runs are delivered in offset order

    def _flush(self) -> None:
        batch, self._batch = self._batch, None
        if batch is None:
            return
        for listener in list(self.listeners):
            listener.on_chunks(self, batch[0], batch[1])

    def _ended(self, info: CloseInfo, nxt: int) -> None:
        if self._close is None:
            self._close = info
        self._grow(nxt)
        self._want = max(self._want, nxt)
        self._changed.set()
        if self._delivered < nxt:
            self._catch_up()
        self._maybe_end()

    def _maybe_end(self) -> None:
        if self._close is not None and not self._end_delivered and self._delivered >= self._next:
            self._end_delivered = True
            self._flush()
            for listener in list(self.listeners):
                listener.on_end(self, self._close)

    def _gone(self) -> None:
        if self.deleted:
            return
        self.deleted = True
        self._changed.set()
        self._batch = None  # gone: what it held must not reach anyone after the news
        for listener in list(self.listeners):
            listener.on_gone(self)
        self.engine._forget(self)

    def _catch_up(self) -> None:
        if self._catching is None and not self.deleted and self.engine._running:
            self._catching = asyncio.create_task(self._catch_up_task())

    async def _catch_up_task(self) -> None:
        try:
            if self._inflight:
                await asyncio.sleep(0.02)  # our own replies may fill the gap without a read
            stalls = 0
            while not self.deleted and self._delivered < max(self._want, self._next) and stalls < 3:
                before = self._delivered
                got = await self.engine._xrange(self, self._delivered, 1024)
                if got:
                    self._arrive(before, got)
                if self._delivered == before:
                    stalls += 1
                    await self.refresh()  # sealed, deleted, or an epoch renewed under us
                    if self._sealed is not None:
                        chunks = self._sealed_list()
                        if self._delivered < len(chunks):
                            self._arrive(self._delivered, chunks[self._delivered :])
            self._maybe_end()
        except (RedisError, OSError, StorageError) as e:
            log.warning("catching up %r failed: %s", self._id, e)
        finally:
            self._catching = None

    def _on_note(self, payload: bytes) -> None:
        note = wire.parse_note(payload)
        if isinstance(note, wire.Gone):
            self._gone()
            return
        if isinstance(note, wire.Meta):  # labels set through some hub; the epoch is not the meta's
            note.meta.epoch = self._meta.epoch
            self._meta = note.meta
            return
        if note.epoch != self._meta.epoch:
            self._reset(note.epoch, note.next if not isinstance(note, wire.Chunks) else note.first)
            if isinstance(note, wire.Reset):
                return
        if isinstance(note, wire.Chunks):
            if note.chunks is not None:
                self._arrive(note.first, note.chunks)
            else:
                self._want = max(self._want, note.first + note.count)
                self._grow(note.first + note.count)
                self._catch_up()
        elif isinstance(note, wire.End):
            self._ended(note.info, note.next)

    def _on_confirm(self) -> None:
        """Subscribed (again): anything published before is read from the stream itself."""
        self._want = max(self._want, self._next)
        self._fresh = False

        async def resync() -> None:
            with contextlib.suppress(RedisError, OSError, StorageError):
                await self.refresh()
                self._fresh = True  # from now on every change reaches us by notification
            self._catch_up()

        self.engine._spawn(resync())

    def listen(self, listener: Listener) -> None:
        self._flush()  # what was delivered before this listener came is not its own
        if not self.listeners:
            self._delivered = max(self._delivered, self._next)
            self._end_delivered = self._close is not None and self._delivered >= self._next
        self.listeners.add(listener)
        self._sub()

    def unlisten(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.discard(listener)
            self._unsub()

    def _sub(self) -> None:
        self._subs += 1
        if self._subs == 1:
            self.engine._subscribe(self)

    def _unsub(self) -> None:
        self._subs -= 1
        if self._subs == 0:
            self.engine._unsubscribe(self)

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        if self._next > offset or self._close is not None or self.deleted:
            return True
        self._sub()
        try:
            async with asyncio.timeout(timeout):
                await self.engine._subscribed(self)
                await self.refresh()
                while self._next <= offset and self._close is None and not self.deleted:
                    self._changed.clear()
                    await self._changed.wait()
            return True
        except TimeoutError:
            _timed_out()
            return False
        except StreamGone:
            return True
        finally:
            self._unsub()

    # --- reading -------------------------------------------------------------------------------

    def _sealed_list(self) -> list[bytes]:
        if self._sealed_chunks is None and self._sealed is not None:
            self._sealed_chunks = self._sealed.chunks()
        return self._sealed_chunks or []

    async def read_chunks(
        self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None
    ) -> list[bytes]:
        self._check_live()
        if from_offset > self._next or from_offset < 0:
            await self.refresh()
            self._check_live()
            if not 0 <= from_offset <= self._next:
                raise OffsetOutOfRange(f"offset {from_offset} is outside 0..{self._next}")
        self._access()
        max_bytes = max_bytes or self.engine.opts.max_read_bytes
        if self._sealed is None:
            got = await self.engine._xrange(self, from_offset, max_chunks)
            if not got and from_offset < self._next:
                await self.refresh()  # sealed or deleted meanwhile
                self._check_live()
        if self._sealed is not None:
            got = self._sealed_list()[from_offset : from_offset + max_chunks]
        out: list[bytes] = []
        size = 0
        for c in got:
            if out and size + len(c) > max_bytes:
                break
            out.append(c)
            size += len(c)
        self._grow(from_offset + len(got))
        return out

    async def producer_state(self, producer_id: str) -> ProducerState | None:
        if self._sealed is not None:
            w = self._sealed.producers.get(producer_id)
        else:
            raw = await self.engine._retrying(lambda: self.engine._r.hget(self.k.meta, f"p:{producer_id}"))
            if raw is None and not await self.engine._retrying(lambda: self.engine._r.exists(self.k.meta)):
                await self.refresh()
                return await self.producer_state(producer_id) if self._sealed is not None else None
            w = raw.decode() if raw is not None else None
        return wire.last_producer_state(w) if w else None

    def info(self) -> StreamInfo:
        ci = self._close
        return StreamInfo(
            id=self._id,
            epoch=self._meta.epoch,
            status=self.status,
            error=ci.error if ci else None,
            chunks=self._next,
            raw_bytes=self._raw,
            stored_bytes=self._stored,
            segments=1,
            created=self._meta.created,
            closed=ci.at if ci else None,
            last_append=self._last_append,
            repairs=0,
            repair_notes=[],
            labels=dict(self._meta.labels),
        )

    def touch(self) -> None:
        self._access()

    def _access(self) -> None:
        """The idle TTL counts reads too: tell Redis, at most once a second per stream."""
        if self._meta.idle_ttl is None or self._sealed is not None:
            return
        now = time.time()
        if now - self._last_access_sent < 1.0:
            return
        self._last_access_sent = now
        e = self.engine
        keys_ = [self.k.meta, self.k.data, e.space.deadlines]
        e._spawn(
            e._run("access", keys_, [self._id, repr(now), _opt(e.opts.default_ttl), e.opts.expire_grace])
        )


class RedisEngine:
    """Many streams in one Redis (``redis://host:port/db``), shared by every hub pointed at it."""

    shared = True  # several hubs use one such engine at once (the hub then locks no data dir)

    def __init__(self, url: str, **options: Any) -> None:
        known = {f.name for f in fields(RedisOptions)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown Redis engine options: {', '.join(sorted(unknown))}")
        self.url = url
        self.opts = RedisOptions(**options)
        self.space = K.Space(self.opts.prefix)
        self.origin = secrets.token_hex(6)  # tells this engine's own events from other hubs'
        self.on_create: list[Callable[[StreamHandle], None]] = []
        self.on_end: list[Callable[[StreamHandle], None]] = []
        self.on_delete: list[Callable[[str], None]] = []
        # a Stop asked on one hub reaches the producer connected to another
        self.on_cancel: list[Callable[[str], object]] = []
        self.counters = {
            "appends": 0,
            "closes": 0,
            "catch_up_reads": 0,
            "epoch_resets": 0,
            "sealed": 0,
            "expired": 0,
            "redis_errors": 0,
        }
        self._handles: OrderedDict[str, RedisStream] = OrderedDict()
        self._live_streams: dict[str, RedisStream] = {}  # subscribed: never dropped from memory
        self._bg: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._seal_due: dict[str, float] = {}
        self._seal_wake = asyncio.Event()
        self._renew = "1"
        self._write_consts = ""
        self._streams_total = self._streams_open = 0
        self._running = False
        self._pool: aioredis.BlockingConnectionPool | None = None
        # Any: redis-py types replies as bytes | str (decode_responses); this client always gets bytes
        self._r: Any = None
        self._live: Live | None = None
        self._pipe: ScriptPipe | None = None
        self._epoch_base = secrets.token_hex(5)
        self._epochs = 0
        self.fsync = "unknown"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._pool = aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.opts.max_connections + 1,
            timeout=30,
            socket_connect_timeout=2.0,
            # No silent retries: a write whose reply was lost may have run, and only a producer
            # (id, seq) makes its retry safe. The caller sees storage_unavailable and decides;
            # reads, which are safe to repeat, retry in ``_retrying``.
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 0),
        )
        self._r = aioredis.Redis(connection_pool=self._pool)
        try:
            conf = await self._r.config_get("append*")
        except RedisError:
            conf = {}  # CONFIG may be renamed away on a managed Redis: assume the weaker policy
        aof = conf.get(b"appendonly", conf.get("appendonly", b"")) in (b"yes", "yes")
        policy = conf.get(b"appendfsync", conf.get("appendfsync", b""))
        policy = policy.decode() if isinstance(policy, bytes) else str(policy)
        self.fsync = policy if aof else "no-aof"
        renew = self.opts.renew_on_restart
        if renew is None:
            renew = self.fsync != "always"
        self._renew = "1" if renew else "0"
        o = self.opts
        consts = [
            self._renew,
            o.publish_bytes,
            _opt(o.default_ttl),
            o.expire_grace,
            self.space.events,
            self.origin,
        ]
        self._write_consts = "|".join(str(c) for c in consts)
        pool = self._pool
        sources = {name: scripts.source(name) for name in scripts.NAMES}
        self._pipe = ScriptPipe(
            lambda: pool.connection_class(**pool.connection_kwargs),
            sources,
            {name: hashlib.sha1(src.encode()).hexdigest() for name, src in sources.items()},
        )
        self._pipe.start()
        self._live = Live(self._pool)
        await self._live.start(self.space.events, self._on_event)
        await self._count()
        self._running = True
        self._tasks = [asyncio.create_task(self._retention()), asyncio.create_task(self._sealer())]

    async def stop(self) -> None:
        if not self._running and self._pool is None:
            return
        self._running = False
        self._seal_wake.set()  # the loops check _running: a cancel swallowed on the way must not hang us
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        for t in list(self._bg):
            t.cancel()
        for t in list(self._bg):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for h in list(self._handles.values()) + list(self._live_streams.values()):
            if h._catching is not None:
                h._catching.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await h._catching
        if self._pipe is not None:
            await self._pipe.stop()
            self._pipe = None
        if self._live is not None:
            await self._live.stop()
            self._live = None
        if self._r is not None:
            await self._r.aclose()
        if self._pool is not None:
            await self._pool.disconnect()
        self._pool = None

    def _spawn(self, aw: Any) -> None:
        if not self._running:
            with contextlib.suppress(Exception):
                aw.close()
            return
        t = asyncio.ensure_future(aw)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    def _call(
        self, name: str, keys_: list[str], args: list[Any], settle: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        if self._pipe is None:
            raise StorageUnavailable("the engine is stopped")
        return self._pipe.submit(name, keys_, args, settle)

    def _new_epoch(self) -> str:
        """A fresh epoch, should the script renew one: unique across engines and calls."""
        self._epochs += 1
        return f"{self._epoch_base}{self._epochs:x}"

    async def _run(self, name: str, keys_: list[str], args: list[Any]) -> Any:
        if name in IDEMPOTENT:
            return await self._retrying(lambda: self._call(name, keys_, args))
        try:
            return await self._call(name, keys_, args)
        except (RedisError, OSError) as e:
            self.counters["redis_errors"] += 1
            raise StorageUnavailable(f"redis: {e}") from e

    async def _retrying(self, call: Callable[[], Awaitable[Any]], attempts: int = 6) -> Any:
        """A command that is safe to repeat, retried across a short Redis outage (a restart)."""
        delay = 0.05
        for attempt in range(attempts):
            try:
                return await call()
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                self.counters["redis_errors"] += 1
                if attempt == attempts - 1 or not self._running:
                    raise StorageUnavailable(f"redis: {e}") from e
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except RedisError as e:
                raise StorageUnavailable(f"redis: {e}") from e
        raise AssertionError("unreachable")

    async def _xrange(self, s: RedisStream, from_offset: int, count: int) -> list[bytes]:
        entries = await self._retrying(
            lambda: self._r.xrange(s.k.data, f"0-{from_offset + 1}", "+", count=count)
        )
        out: list[bytes] = []
        for i, (eid, f) in enumerate(entries):
            if int(eid.split(b"-")[1]) != from_offset + 1 + i:  # never serve across a hole
                break
            out.append(f[b"c"])
        if s._delivered < from_offset + len(out):
            self.counters["catch_up_reads"] += 1
        return out

    # --- handles -----------------------------------------------------------------------------

    def _handle(self, stream_id: str) -> RedisStream:
        h = self._live_streams.get(stream_id) or self._handles.get(stream_id)
        if h is None or h.deleted:
            h = RedisStream(self, stream_id)
        self._handles[stream_id] = h
        self._handles.move_to_end(stream_id)
        while len(self._handles) > self.opts.max_handles:
            self._handles.popitem(last=False)  # subscribed ones stay in _live_streams
        return h

    def _forget(self, s: RedisStream) -> None:
        if self._handles.get(s.id) is s:
            del self._handles[s.id]

    async def _load_into(self, s: RedisStream) -> None:
        k = self.space.stream(s.id)
        # through the stream's ordered queue: calls that get a stream and then append to it keep
        # their order (a producer's pipelined appends each look their stream up first)
        r = await s._submit(
            [k.meta, k.sealed, k.tomb, self.space.deadlines],
            [self._renew, self._new_epoch(), f"{s._meta.epoch}:{s._next}", k.channel, s.id],
            None,
            "load",
            attempts=6,
        )
        kind = r[0]
        if kind == b"m":
            flat = r[1:]
            s._apply_hash({flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)})
        elif kind == b"z":
            s._apply_sealed(unseal(r[1]), len(r[1]))
        elif kind == b"gone":
            s._gone()
            raise StreamGone(f"stream {s.id!r} was deleted or expired")
        else:
            s._gone()
            raise StreamNotFound(f"stream {s.id!r} does not exist")

    async def get_stream(self, stream_id: str) -> RedisStream:
        s = self._live_streams.get(stream_id)
        live = self._live
        if s is not None and s._fresh and not s.deleted and live is not None and live.subscribed(s.k.channel):
            return s  # kept current by its notifications (a hop behind other hubs' writes)
        ids.validate(stream_id)
        s = self._handle(stream_id)
        await self._load_into(s)
        return s

    async def stream_exists(self, stream_id: str) -> bool:
        k = self.space.stream(ids.validate(stream_id))
        return bool(await self._retrying(lambda: self._r.exists(k.meta, k.sealed)))

    async def list_streams(self, prefix: str = "", limit: int | None = None) -> builtins.list[str]:
        sp = self.space
        chat = K.chat_of(prefix + "x") if prefix.startswith("chat/") else ""
        if chat and prefix.startswith(chat):  # inside one chat: that chat's own sorted set
            return await self._range(sp.chat_index(chat), prefix, limit)
        out = await self._range(sp.ids, prefix, limit)
        # chats under the prefix, in order; their id groups are disjoint and ordered like the chats
        for c in await self._range(sp.chats, "chat/", None) if "chat/".startswith(prefix[:5]) else []:
            if not (c.startswith(prefix) or prefix.startswith(c)):
                continue
            if limit is not None and len(out) >= limit and out[limit - 1] < c:
                break
            out += await self._range(sp.chat_index(c), prefix, limit)
        out.sort()
        return out if limit is None else out[:limit]

    async def _range(self, key: str, prefix: str, limit: int | None) -> builtins.list[str]:
        lo = b"[" + prefix.encode() if prefix else b"-"
        hi = b"[" + prefix.encode() + b"\xff" if prefix else b"+"
        got = await self._retrying(
            lambda: self._r.zrangebylex(key, lo, hi, 0 if limit is not None else None, limit)
        )
        return [x.decode() for x in got]

    async def open_stream_ids(self) -> builtins.list[str]:
        return [x.decode() for x in await self._retrying(lambda: self._r.zrange(self.space.open, 0, -1))]

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
    ) -> RedisStream:
        ids.validate(stream_id)
        meta = StreamMeta(
            id=stream_id,
            created=time.time(),
            epoch=secrets.token_hex(8),
            ttl=ttl,
            expires_at=expires_at,
            content_type=content_type,
            labels=dict(labels or {}),
            idle_ttl=idle_ttl,
        )
        s = await self._create(meta, exist_ok, replace_gone)
        for cb in self.on_create:
            cb(s)
        return s

    async def _create(self, meta: StreamMeta, exist_ok: bool, replace_gone: bool = False) -> RedisStream:
        sp, sid = self.space, meta.id
        k = sp.stream(sid)
        idx, chat = sp.index_for(sid)
        r = await self._run(
            "create",
            [k.meta, k.data, k.sealed, k.tomb, idx, sp.chats, sp.open, sp.deadlines, sp.count],
            [
                sid,
                msgspec.json.encode(meta),
                meta.epoch,
                _now(),
                chat,
                _opt(meta.expires_at),
                _opt(meta.ttl),
                _opt(meta.idle_ttl),
                _opt(self.opts.default_ttl),
                self.opts.expire_grace,
                sp.events,
                self.origin,
                "1" if replace_gone else "0",
            ],
        )
        if r == b"gone":
            raise StreamGone(f"stream {sid!r} was deleted or expired; its id is not reusable yet")
        if r == b"exists":
            if exist_ok:
                return await self.get_stream(sid)
            raise StreamExists(f"stream {sid!r} already exists")
        old = self._live_streams.get(sid) or self._handles.get(sid)
        if old is not None:
            old._gone()
            self._live_streams.pop(sid, None)
        s = self._handle(sid)
        s._meta = meta
        return s

    async def fork(
        self, source_id: str, stream_id: str, upto: int | None = None, labels: dict[str, str] | None = None
    ) -> RedisStream:
        ids.validate(stream_id)
        src = await self.get_stream(source_id)
        end = src.next_offset if upto is None else upto
        if not 0 <= end <= src.next_offset:
            raise OffsetOutOfRange(f"fork point {end} is outside 0..{src.next_offset}")
        meta = StreamMeta(
            id=stream_id,
            created=time.time(),
            epoch=secrets.token_hex(8),
            labels={**src.meta.labels, **(labels or {}), "forked_from": source_id, "fork_offset": str(end)},
            content_type=src.meta.content_type,
        )
        s = await self._create(meta, exist_ok=False)
        pos = 0
        while pos < end:  # a stream and its fork live in different slots: copied, one batch at a time
            got = await src.read_chunks(pos, min(4096, end - pos), 4 << 20)
            if not got:
                raise StorageUnavailable(f"fork: the source ended at {pos}, before {end}")
            await s.append(got)
            pos += len(got)
        for cb in self.on_create:
            cb(s)
        return s

    async def delete(self, stream_id: str, reason: str = "deleted", durable: bool = True) -> None:
        ids.validate(stream_id)
        r = await self._delete(stream_id, reason, "del")
        if r == "gone":
            raise StreamGone(f"stream {stream_id!r} was deleted or expired")
        if r == "nf":
            raise StreamNotFound(f"stream {stream_id!r} does not exist")

    async def _delete(self, stream_id: str, reason: str, mode: str, now: float | None = None) -> str:
        """``now``: the time an expiry is judged at (``expire``'s own, so that a deadline found due
        by it is due in the script too); the clock's when None."""
        sp = self.space
        k = sp.stream(stream_id)
        idx, chat = sp.index_for(stream_id)
        tomb = msgspec.json.encode({"id": stream_id, "at": time.time(), "reason": reason})
        r = await self._run(
            "delete",
            [k.meta, k.data, k.sealed, k.tomb, idx, sp.chats, sp.open, sp.deadlines, sp.count],
            [
                stream_id,
                tomb,
                max(1, int(self.opts.tombstone_ttl)),
                mode,
                _now() if now is None else repr(now),
                chat,
                k.channel,
                sp.events,
                self.origin,
                _opt(self.opts.default_ttl),
                self.opts.expire_grace,
            ],
        )
        r = r.decode()
        if r == "ok":
            h = self._live_streams.pop(stream_id, None) or self._handles.get(stream_id)
            if h is not None:
                h._gone()
            self._seal_due.pop(stream_id, None)
            for cb in self.on_delete:
                cb(stream_id)
        return str(r)

    async def set_labels(self, stream_id: str, labels: dict[str, str]) -> None:
        s = await self.get_stream(stream_id)
        for _ in range(10):
            meta = msgspec.structs.replace(s.meta, labels=dict(labels))
            mj = msgspec.json.encode(meta)
            old = new = b""
            if s._sealed is not None:
                z = s._sealed
                old = await self._retrying(lambda: self._r.get(s.k.sealed)) or b""
                new = seal(msgspec.structs.replace(z, meta=meta), self.opts.seal_level)
            r = await self._run("labels", [s.k.meta, s.k.sealed], [mj, old, new])
            if r == b"ok":
                s._meta = meta
                return
            if r == b"nf":
                await s.refresh()  # raises gone / not found
            await s.refresh()  # sealed or rewritten meanwhile: once more from what Redis holds
        raise StorageUnavailable("set_labels: the stream kept changing")

    # --- live traffic ------------------------------------------------------------------------

    def _subscribe(self, s: RedisStream) -> None:
        self._live_streams[s.id] = s
        if self._live is not None:
            self._spawn(self._live.subscribe(s.k.channel, s._on_note, s._on_confirm, wait=False))

    def _unsubscribe(self, s: RedisStream) -> None:
        s._fresh = False
        if self._live_streams.get(s.id) is s:
            del self._live_streams[s.id]
        if self._live is not None:
            self._spawn(self._live.unsubscribe(s.k.channel))

    async def _subscribed(self, s: RedisStream) -> None:
        live = self._live
        if live is None:
            raise StorageUnavailable("the engine is stopped")
        await live.subscribe(s.k.channel, s._on_note, s._on_confirm)

    def _ended_here(self, s: RedisStream) -> None:
        self._schedule_seal(s.id)
        for cb in self.on_end:
            cb(s)

    # --- producer leases, shared by every hub on this Redis ---------------------------------------

    async def lease(self, stream_ids: Sequence[str], seconds: float, *, new: bool = False) -> None:
        """The producers of ``stream_ids`` are alive (held by a connection here, or an HTTP append):
        their streams' leases lapse ``seconds`` from now unless renewed again, through any hub.
        ``new``: only streams without a lease get one (a stream just created)."""
        if not stream_ids:
            return
        at = time.time() + seconds
        mapping = {sid: at for sid in stream_ids}
        await self._retrying(lambda: self._r.zadd(self.space.leases, mapping, nx=new, gt=not new))

    async def lapse_leases(self, now: float | None = None) -> builtins.list[str]:
        """End every open stream whose lease ran out as ``error``/``producer_lost``, each exactly
        once whichever hubs sweep at the same time (the write script compares and closes)."""
        now = time.time() if now is None else now
        due = await self._retrying(
            lambda: self._r.zrangebyscore(self.space.leases, "-inf", now, start=0, num=256)
        )
        ended = []
        for raw in due:
            sid = raw.decode()
            s = self._handle(sid)
            close_json = msgspec.json.encode(CloseInfo("error", "producer_lost", time.time()))
            try:
                await s._write("l", [], sid, None, 0, None, close_json)
            except (LeaseNotDue, StreamGone, StreamNotFound, StreamClosed):
                continue
            ended.append(sid)
        return ended

    async def request_cancel(self, stream_id: str) -> None:
        """Tell every other hub on this Redis that ``stream_id``'s producer was asked to stop."""
        ids.validate(stream_id)
        await self._retrying(lambda: self._r.publish(self.space.events, f"x {self.origin} {stream_id}"))

    def _on_event(self, payload: bytes) -> None:
        kind, origin, sid = wire.parse_event(payload)
        if origin == self.origin:
            return  # this engine already fired its own event
        if kind == "x":
            for cb in self.on_cancel:
                cb(sid)
            return
        if kind == "d":
            h = self._live_streams.pop(sid, None) or self._handles.get(sid)
            if h is not None:
                h._gone()
            self._seal_due.pop(sid, None)
            for cb in self.on_delete:
                cb(sid)
            return

        async def fire() -> None:
            try:
                s = await self.get_stream(sid)
            except StorageError:
                return
            if kind == "c":
                for cb in self.on_create:
                    cb(s)
            elif kind == "e":
                if s._close is None:
                    return
                for cb in self.on_end:
                    cb(s)

        self._spawn(fire())

    # --- background work ---------------------------------------------------------------------

    def _schedule_seal(self, sid: str) -> None:
        self._seal_due[sid] = time.monotonic() + self.opts.seal_delay_s
        self._seal_wake.set()

    async def _sealer(self) -> None:
        """Finished streams closed through this hub become one zstd value (the hub that closed a
        stream seals it: the others would only repeat the work)."""
        while self._running:
            if not self._seal_due:
                self._seal_wake.clear()
                await self._seal_wake.wait()
                continue
            sid, when = min(self._seal_due.items(), key=lambda kv: kv[1])
            wait = when - time.monotonic()
            if wait > 0:
                self._seal_wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._seal_wake.wait()
                except TimeoutError:
                    _timed_out()
                continue
            del self._seal_due[sid]
            try:
                await self.seal_stream(sid)
            except (StorageError, RedisError, OSError) as e:
                log.warning("sealing %r failed: %s", sid, e)

    async def seal_stream(self, stream_id: str) -> bool:
        """Turn a closed stream into one compressed value; False if it is not (or no longer) that."""
        k = self.space.stream(stream_id)
        h = await self._retrying(lambda: self._r.hgetall(k.meta))
        if not h or b"cl" not in h:
            return False
        n = int(h[b"n"])
        chunks: list[bytes] = []
        while len(chunks) < n:
            entries = await self._retrying(
                functools.partial(self._r.xrange, k.data, f"0-{len(chunks) + 1}", "+", 4096)
            )
            if not entries:
                return False
            chunks += [f[b"c"] for _, f in entries]
        if len(chunks) != n:
            return False
        meta = msgspec.json.decode(h[b"meta"], type=StreamMeta)
        epoch = h[b"ep"].decode()
        meta.epoch = epoch
        la = h.get(b"la")
        z = Sealed(
            lengths=[len(c) for c in chunks],
            text=b"".join(chunks),
            meta=meta,
            epoch=epoch,
            close=msgspec.json.decode(h[b"cl"], type=CloseInfo),
            raw=int(h.get(b"raw", b"0")),
            last_append=float(la) if la else None,
            producers={f.decode()[2:]: v.decode() for f, v in h.items() if f.startswith(b"p:")},
            stream_seq=h[b"ss"].decode() if b"ss" in h else None,
        )
        blob = await asyncio.get_running_loop().run_in_executor(None, seal, z, self.opts.seal_level)
        ok = await self._run("seal", [k.meta, k.data, k.sealed], [str(n), h[b"meta"], blob])
        if ok:
            self.counters["sealed"] += 1
            s = self._live_streams.get(stream_id) or self._handles.get(stream_id)
            if s is not None:
                s._apply_sealed(z, len(blob))
        return bool(ok)

    async def _retention(self) -> None:
        while self._running:
            await asyncio.sleep(self.opts.retention_every)
            try:
                await self.expire()
                await self._count()
            except (StorageError, RedisError, OSError) as e:
                log.warning("retention failed: %s", e)

    async def expire(self, now: float | None = None) -> builtins.list[str]:
        now = time.time() if now is None else now
        due = await self._retrying(
            lambda: self._r.zrangebyscore(self.space.deadlines, "-inf", now, start=0, num=256)
        )
        expired = []
        for raw in due:
            sid = raw.decode()
            if await self._delete(sid, "expired", "exp", now) == "ok":
                self.counters["expired"] += 1
                expired.append(sid)
        return expired

    async def _count(self) -> None:
        """The stream counts the stats show (refreshed with each retention tick)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.get(self.space.count)
        pipe.zcard(self.space.open)
        total, open_ = await pipe.execute()
        self._streams_total, self._streams_open = int(total or 0), int(open_)

    def stats(self) -> dict[str, Any]:
        live = self._live
        handles = list(self._handles.values())
        return {
            "streams": self._streams_total,
            "streams_open": self._streams_open,
            "streams_closed": max(0, self._streams_total - self._streams_open),
            "streams_loaded": len(handles),
            "raw_bytes": sum(h._raw for h in handles),
            "stored_bytes": sum(h._stored for h in handles),
            "repairs": 0,
            "fsyncs": 0,  # Redis fsyncs by its own policy (redis_fsync)
            "write_errors": self.counters["redis_errors"],
            "open_files": 0,
            "engine": "redis",
            "redis_fsync": self.fsync,
            "streams_listened": len(self._live_streams),
            "live_channels": live.channels if live else 0,
            "live_messages": live.messages if live else 0,
            "live_reconnects": live.lost if live else 0,
            **self.counters,
        }


if TYPE_CHECKING:  # the Redis engine implements the engine interface (checked by mypy)
    _engine: type[Engine] = RedisEngine
    _handle: type[StreamHandle] = RedisStream
