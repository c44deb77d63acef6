"""The hub's one service API: every transport (WebSocket, HTTP + SSE, Durable Streams, the AI SDK
adapters to come) creates, appends, closes, reads, subscribes, cancels, forks, deletes and watches
through these methods, and through nothing else of storage.

Invariants:

* Storage is reached only through the engine Protocol (``Engine`` / ``StreamHandle``); which engine
  it is, is decided once, in ``Hub.__init__`` (start-up wiring).
* Every ``StorageError`` becomes a ``HubError`` here (``errors.storage_errors``), so no transport catches
  storage errors, and every client of every protocol sees the same code for the same failure.
* Counters, limits (chunk size), cancel requests, resume counts and the observer hooks
  (``hub.core.hooks``, for analytics) are kept here, once: a transport never bumps a counter of its
  own for an operation it asked the service to do.
* Per-stream bookkeeping ends with the stream (``_forget``), so a hub serving millions keeps none.
* Analytics (``hub.core.analytics``) hears every append, subscribe and lifecycle event from here and
  from the fan-out; usage is counted once, at the durable non-duplicate append, never on a read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from aiohttp import web

from hub.core.analytics import Analytics
from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.datadir import DataDirLock
from hub.core.errors import HubError, from_storage, storage_errors
from hub.core.fanout import WS_FORMAT, Fanout, Format, Subscription
from hub.core.gcpolicy import GcPolicy
from hub.core.hooks import Hooks
from hub.core.lease import PRODUCER_LOST, Leases, expire
from hub.core.outbox import Outbox
from hub.core.registry import Registry
from hub.core.usage import UsageBook
from storage import AppendResult, CloseStatus, Engine, LogOptions, ProducerState, StreamHandle, open_engine
from storage.engine import Promise
from storage.errors import StorageError

log = logging.getLogger(__name__)


class PendingAppend:
    """An append whose offset is assigned and whose durability is awaited (``Hub.append_nowait``):
    ``future`` (None: durable already) resolves once it is; ``finish`` then counts it as ``append``
    would have, or gives the error to answer with."""

    __slots__ = ("hub", "stream", "result", "future", "nbytes", "t0")

    def __init__(
        self,
        hub: Hub,
        stream: StreamHandle,
        result: AppendResult,
        future: Promise | None,
        nbytes: int,
        t0: float,
    ) -> None:
        self.hub, self.stream, self.result, self.future, self.nbytes, self.t0 = (
            hub, stream, result, future, nbytes, t0,
        )  # fmt: skip

    def finish(self) -> HubError | None:
        """Once ``future`` is done: None if the append is durable (and counted), else its error."""
        f = self.future
        exc: BaseException | None = None
        if f is not None:  # a cancelled future: nothing cancels them today, but it is no ack
            exc = (
                HubError("storage_unavailable", "the append was cancelled")
                if f.cancelled()
                else f.exception()
            )
        if exc is None:
            self.hub._appended(self.stream, self.result, self.nbytes, self.t0)
            return None
        self.hub.analytics.append_failed(self.stream.id, self.t0)
        if isinstance(exc, HubError):
            return exc
        if isinstance(exc, StorageError):
            return from_storage(exc, self.stream.id)
        return HubError("storage_error", f"append failed: {exc!r}", self.stream.id)


@dataclass
class Counters:
    appends: int = 0
    appended_chunks: int = 0
    connections_total: int = 0
    reconnects: int = 0  # subscriptions that resumed from a non-zero offset
    cancels: int = 0
    errors: int = 0
    producer_lost: int = 0  # streams the lease ended (producer_lost or open_ttl_expired)


@dataclass
class Rate:
    """Events per second over the last sampling window."""

    last_t: float = field(default_factory=time.monotonic)
    last_n: int = 0
    per_s: float = 0.0

    def sample(self, n: int) -> None:
        now = time.monotonic()
        dt = now - self.last_t
        if dt > 0:
            self.per_s = (n - self.last_n) / dt
        self.last_t, self.last_n = now, n


StreamRef = StreamHandle | str


class Hub:
    def __init__(self, config: Config, auth: Auth) -> None:
        self.config = config
        self.auth = auth
        # start-up wiring: the one place that names an engine and its options
        if config.store and not config.store.startswith("file:"):
            self.store: Engine = open_engine(
                config.store, default_ttl=config.stream_ttl_s, max_chunk_bytes=config.max_chunk_bytes
            )
        else:
            self.store = open_engine(
                config.store or str(config.data_dir),
                fsync=config.fsync,
                interval_ms=config.fsync_interval_ms,
                default_ttl=config.stream_ttl_s,
                max_total_bytes=config.max_total_bytes,
                archive_delay_s=config.archive_delay_s,
                log=LogOptions(segment_bytes=config.segment_bytes, max_chunk_bytes=config.max_chunk_bytes),
            )
        # An engine several hubs share (Redis) tells so: such hubs lock no data dir, and keep
        # producer leases in the engine (a lease in one hub's memory would end the answers produced
        # through the others): a hub renews the streams its connections hold, and any hub's sweep
        # ends a stream none renewed in time (``_run_shared_leases``).
        self.shared_store = self.store.shared
        # hubs side by side each count their own share of an answer: their records must not share an id
        self.analytics = Analytics(
            f"{socket.gethostname()}-{secrets.token_hex(3)}" if self.shared_store else None
        )
        self.fanout = Fanout(self.analytics)
        # finished answers' usage in <data dir>/usage.sqlite3, and the webhook (hub/core/usage.py)
        self.usage = UsageBook(config, self.analytics, keep_open=not self.shared_store)
        self.counters = Counters()
        self.hooks = Hooks()
        self.gc: GcPolicy | None = None  # the process's collector policy, when the CLI installed one
        self.started = time.time()
        self.connections: set[object] = set()
        self.per_ip: dict[str, int] = {}
        self.cancel_requested: set[str] = set()
        self.cancel_listeners: Registry[str] = Registry()
        self.resume_counts: dict[str, int] = {}
        self.append_rate = Rate()
        self.delivery_rate = Rate()
        self.closing = False
        self._sampler: asyncio.Task[None] | None = None
        # One hub per data dir, held from start to stop. It guards the file engine's directory: an
        # engine shared by design (Redis, several hubs) must not take it.
        self.lock = DataDirLock(config.data_dir)
        # the engine's optional task-free append (storage/engine.py, ``Engine``): the file store has one
        self._append_nowait = getattr(self.store, "append_nowait", None)
        self.leases = Leases(
            None if self.shared_store else config.producer_lease_s,
            None if self.shared_store else config.open_ttl_s,
        )  # answers end (lease.py)
        self._lease_task: asyncio.Task[None] | None = None
        self.shared_lease_s = config.producer_lease_s if self.shared_store else None
        self._holding: dict[str, set[object]] = {}  # shared leases: stream -> its holders here
        self._held_by: dict[object, set[str]] = {}
        self._renewed: dict[str, float] = {}  # shared leases: when an HTTP producer's was last renewed
        self._lease_bg: set[asyncio.Task[None]] = set()
        # the engine's events become the service's lifecycle hooks (``watch``); its own come first
        self.hooks.ended.append(lambda st: self._forget(st.id, deleted=False))
        self.hooks.deleted.append(lambda sid: self._forget(sid, deleted=True))
        self.hooks.created.append(self._lease)
        self.hooks.created.append(self.analytics.created)
        self.hooks.ended.append(self.analytics.ended)
        self.hooks.deleted.append(self.analytics.deleted)
        self.store.on_create.append(lambda st: self.hooks.emit(self.hooks.created, st))
        self.store.on_end.append(lambda st: self.hooks.emit(self.hooks.ended, st))
        self.store.on_delete.append(lambda sid: self.hooks.emit(self.hooks.deleted, sid))

    async def start(self) -> None:
        # an engine shared by several hubs may carry a Stop to the hub its producer is connected to
        self.store.on_cancel.append(self._cancel_here)
        if not self.shared_store:
            self.lock.acquire()  # before the store touches a file: a second hub must change nothing
        await self.store.start()
        await self.usage.start(self.store)
        self._sampler = asyncio.create_task(self._sample())
        if self.leases.enabled:
            self._lease_task = asyncio.create_task(self._run_leases())
        elif self.shared_lease_s is not None:
            self._lease_task = asyncio.create_task(self._run_shared_leases())

    async def stop(self) -> None:
        for task in (self._sampler, self._lease_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.fanout.close_all()
        await self.usage.stop()  # before the store: the open answers' counts are saved for the restart
        await self.store.stop()
        self.lock.release()  # after CLEAN_SHUTDOWN: only the holder ever writes it

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.append_rate.sample(self.counters.appended_chunks)
            self.delivery_rate.sample(self.fanout.stats.deliveries)
            fo = self.fanout.stats
            self.analytics.series.tick(
                time.time(),
                {
                    "appends": self.counters.appended_chunks,
                    "deliveries": fo.deliveries,
                    "appended_bytes": self.analytics.generated_bytes,
                    "resumes": fo.resumes,
                    "slow_drops": fo.slow_drops,
                },
                {"connections": len(self.connections), "subscribers": self.fanout.count()},
            )

    def storage_stats(self) -> dict[str, Any]:
        return self.store.stats()

    def watch(
        self,
        created: Callable[[StreamHandle], None] | None = None,
        ended: Callable[[StreamHandle], None] | None = None,
        deleted: Callable[[str], None] | None = None,
    ) -> None:
        """Be told of every stream's lifecycle (chats, fork graphs, AI SDK adapters)."""
        if created is not None:
            self.hooks.created.append(created)
        if ended is not None:
            self.hooks.ended.append(ended)
        if deleted is not None:
            self.hooks.deleted.append(deleted)

    # --- lookups -----------------------------------------------------------------------------

    async def get(self, stream: StreamRef) -> StreamHandle:
        if not isinstance(stream, str):
            return stream
        with storage_errors(stream):
            return await self.store.get_stream(stream)

    async def exists(self, stream_id: str) -> bool:
        with storage_errors(stream_id):
            return await self.store.stream_exists(stream_id)

    async def list_streams(self, prefix: str = "", limit: int | None = None) -> list[str]:
        with storage_errors():
            return await self.store.list_streams(prefix, limit)

    # --- writes ------------------------------------------------------------------------------

    def check_chunks(self, stream_id: str, chunks: Sequence[bytes]) -> None:
        """The chunk-size limit, for every protocol (also before a create with initial content)."""
        for c in chunks:
            if len(c) > self.config.max_chunk_bytes:
                raise HubError(
                    "chunk_too_large",
                    f"a chunk of {len(c)} bytes; the limit is {self.config.max_chunk_bytes}",
                    stream_id,
                )

    async def create(
        self,
        stream_id: str,
        *,
        ttl: float | None = None,
        labels: dict[str, str] | None = None,
        exist_ok: bool = False,
        content_type: str | None = None,
        expires_at: float | None = None,
        idle_ttl: float | None = None,
        replace_gone: bool = False,
    ) -> StreamHandle:
        with storage_errors(stream_id):
            return await self.store.create(
                stream_id,
                ttl=ttl,
                labels=labels,
                exist_ok=exist_ok,
                content_type=content_type,
                expires_at=expires_at,
                idle_ttl=idle_ttl,
                replace_gone=replace_gone,
            )

    async def append(
        self,
        stream: StreamRef,
        chunks: Sequence[bytes],
        producer: str | None = None,
        seq: int | None = None,
        epoch: int = 0,
        *,
        create: bool = False,
        stream_seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        sid = stream if isinstance(stream, str) else stream.id
        self.check_chunks(sid, chunks)
        t0 = time.monotonic()
        self.analytics.append_started(sid, t0)
        nbytes = sum(map(len, chunks))
        if close:  # its end is published inside the append: analytics counts it there
            self.analytics.closing[sid] = (len(chunks), nbytes, t0)
        try:
            with storage_errors(sid):
                if isinstance(stream, str):
                    if create and not await self.store.stream_exists(stream):
                        stream = await self.store.create(stream, exist_ok=True)
                    else:
                        stream = await self.store.get_stream(stream)
                res = await stream.append(chunks, producer, seq, epoch, stream_seq=stream_seq, close=close)
        except BaseException:
            self.analytics.append_failed(sid, t0)
            raise
        finally:
            if close:
                self.analytics.closing.pop(sid, None)
        self._appended(stream, res, nbytes, t0)
        return res

    def append_nowait(
        self, stream_id: str, chunks: Sequence[bytes], producer: str | None = None, seq: int | None = None
    ) -> PendingAppend | None:
        """A plain append (no create, close or Stream-Seq) without a task: its offset is assigned
        now and the caller is called back once it is durable (``PendingAppend``). None (nothing
        done) when the engine has no such path or this append needs ``append``: the caller then
        awaits ``append``, which answers exactly as before."""
        nowait = self._append_nowait
        if nowait is None:
            return None
        self.check_chunks(stream_id, chunks)
        t0 = time.monotonic()
        self.analytics.append_started(stream_id, t0)
        try:
            with storage_errors(stream_id):
                got = nowait(stream_id, chunks, producer, seq)
        except BaseException:
            self.analytics.append_failed(stream_id, t0)
            raise
        if got is None:
            self.analytics.append_failed(stream_id, t0)  # ``append`` times it again
            return None
        stream, res, fut = got
        return PendingAppend(self, stream, res, fut, sum(map(len, chunks)), t0)

    def _appended(self, stream: StreamHandle, res: AppendResult, nbytes: int, t0: float) -> None:
        """An append is durable (or a duplicate answered): count it, tell the hooks, renew leases."""
        sid = stream.id
        if res.duplicate:
            self.analytics.append_failed(sid, t0)
        else:
            self.counters.appends += 1
            self.counters.appended_chunks += res.count
            self.analytics.appended(stream, res, nbytes, t0)
            self.hooks.emit(self.hooks.appended, sid, res)
        self.leases.renew(sid)  # an HTTP producer's lease; a held stream ignores it
        self._renew_shared(sid)

    async def close(
        self,
        stream: StreamRef,
        status: CloseStatus = "done",
        error: str | None = None,
        producer: tuple[str, int, int] | None = None,
    ) -> StreamHandle:
        s = await self.get(stream)
        with storage_errors(s.id):
            await s.close(status, error, producer)
        self.cancel_requested.discard(s.id)
        self.hooks.emit(self.hooks.closed, s.id, status, error)
        return s

    async def fork(
        self, source_id: str, stream_id: str, upto: int | None = None, labels: dict[str, str] | None = None
    ) -> StreamHandle:
        with storage_errors(stream_id):
            return await self.store.fork(source_id, stream_id, upto, labels)

    async def delete(self, stream_id: str, reason: str = "deleted") -> None:
        with storage_errors(stream_id):
            await self.store.delete(stream_id, reason=reason)

    async def set_labels(self, stream_id: str, labels: dict[str, str]) -> None:
        with storage_errors(stream_id):
            await self.store.set_labels(stream_id, labels)
        self.analytics.relabel(stream_id, labels)

    # --- reads -------------------------------------------------------------------------------

    async def read(
        self,
        stream: StreamRef,
        offset: int,
        max_chunks: int = 1024,
        max_bytes: int | None = None,
        transport: str | None = None,
    ) -> list[bytes]:
        """Chunks from ``offset``; ``transport`` names a read a client gets (counted as delivered)."""
        s = await self.get(stream)
        with storage_errors(s.id):
            chunks = await s.read_chunks(offset, max_chunks, max_bytes)
        if transport is not None and chunks:
            self.analytics.delivered_bytes(s.id, transport, len(chunks), sum(map(len, chunks)), True)
        return chunks

    async def wait(self, stream: StreamHandle, offset: int, timeout: float | None = None) -> bool:
        with storage_errors(stream.id):
            return await stream.wait(offset, timeout)

    async def producer_state(self, stream: StreamHandle, producer_id: str) -> ProducerState | None:
        with storage_errors(stream.id):
            return await stream.producer_state(producer_id)

    def subscribe(
        self,
        stream: StreamHandle,
        outbox: Outbox,
        offset: int,
        fmt: Format = WS_FORMAT,
        coalesce_ms: float = 0.0,
        coalesce_bytes: int = 16384,
    ) -> Subscription:
        """Replay from ``offset``, then live, into ``outbox`` (see hub/core/fanout.py)."""
        if offset > 0:
            self.counters.reconnects += 1
            self.resume_counts[stream.id] = self.resume_counts.get(stream.id, 0) + 1
        sub = self.fanout.subscribe(stream, outbox, offset, fmt, coalesce_ms, coalesce_bytes)
        sub.resumed_at = self.analytics.subscribed(stream, offset, fmt.transport)  # before its replay runs
        self.hooks.emit(self.hooks.subscribed, stream.id, offset)
        return sub

    # --- cancel ------------------------------------------------------------------------------

    async def cancel(self, stream_id: str) -> bool:
        """Ask the stream's producer to stop. True if a connected producer was told."""
        s = await self.get(stream_id)
        if s.ended:
            return False
        self.counters.cancels += 1
        told = self._cancel_here(stream_id)
        with storage_errors(stream_id):
            await self.store.request_cancel(stream_id)
        return told

    def _cancel_here(self, stream_id: str) -> bool:
        """Mark the stream cancelled on this hub and tell its producer if it is connected here."""
        self.cancel_requested.add(stream_id)
        self.hooks.emit(self.hooks.cancel_requested, stream_id)
        return self.cancel_listeners.emit(stream_id, stream_id) > 0

    def watch_cancel(self, stream_id: str, cb: Callable[[str], None]) -> None:
        self.cancel_listeners.add(stream_id, cb)

    def unwatch_cancel(self, stream_id: str, cb: Callable[[str], None]) -> None:
        self.cancel_listeners.discard(stream_id, cb)

    def _forget(self, stream_id: str, deleted: bool) -> None:
        self.cancel_requested.discard(stream_id)
        self.leases.forget(stream_id)
        self._renewed.pop(stream_id, None)
        for h in self._holding.pop(stream_id, ()):
            held = self._held_by.get(h)
            if held is not None:
                held.discard(stream_id)
                if not held:
                    del self._held_by[h]
        for cb in self.cancel_listeners.pop(stream_id):
            forget = getattr(getattr(cb, "__self__", None), "forget_stream", None)
            if forget is not None:
                forget(stream_id)
        if deleted:
            self.resume_counts.pop(stream_id, None)

    # --- producer leases (hub/core/lease.py) ------------------------------------------------------

    def _lease(self, s: StreamHandle, age_s: float = 0.0) -> None:
        """Lease an open stream of ours; Durable Streams streams (content-typed) have no producer
        session to lose and stay open until closed or expired."""
        if s.id not in self.leases and not s.ended and s.meta.content_type is None:
            self.leases.track(s.id, age_s)
            if self.shared_lease_s is not None and s.id not in self._holding:
                self._lease_soon([s.id], new=True)  # the hub that learns of it first starts it

    def holds(self, stream_id: str, holder: object) -> bool:
        """``holder`` holds the stream already: ``hold`` would change nothing (checked per append)."""
        return self.leases.held_by(stream_id, holder) and (
            self.shared_lease_s is None or holder in self._holding.get(stream_id, ())
        )

    def hold_now(self, s: StreamHandle, holder: object) -> bool:
        """``hold``'s local part; False if the shared engine's lease must still be taken (``hold``)."""
        self._lease(s)
        self.leases.attach(s.id, holder)
        return (
            self.shared_lease_s is None
            or s.ended
            or s.meta.content_type is not None
            or holder in self._holding.get(s.id, ())
        )

    async def hold(self, stream: StreamRef, holder: object) -> None:
        """A producer connection created or appended to the stream: it holds it until ``release``."""
        with contextlib.suppress(HubError):  # deleted meanwhile: nothing to hold
            s = await self.get(stream)
            if not self.hold_now(s, holder):
                holders = self._holding.setdefault(s.id, set())
                if holder not in holders:
                    holders.add(holder)
                    self._held_by.setdefault(holder, set()).add(s.id)
                    with storage_errors(s.id):  # held here from now: renewed by this hub
                        await self.store.lease([s.id], cast(float, self.shared_lease_s))

    def release(self, holder: object) -> None:
        self.leases.detach(holder)
        for sid in self._held_by.pop(holder, ()):
            holders = self._holding.get(sid)
            if holders is not None:
                holders.discard(holder)
                if not holders:  # no longer renewed here: it lapses unless a hub takes it up
                    del self._holding[sid]

    def heartbeat(self, s: StreamHandle) -> None:
        """An HTTP producer is still there (POST /streams/{id}/heartbeat)."""
        self._lease(s)
        self.leases.renew(s.id)
        self._renew_shared(s.id)

    # --- producer leases in a shared engine --------------------------------------------------

    def _renew_shared(self, stream_id: str) -> None:
        """An HTTP producer's append or heartbeat: renew its shared lease, at most every third of it."""
        if self.shared_lease_s is None or stream_id in self._holding:
            return
        now = time.monotonic()
        if now - self._renewed.get(stream_id, -1e9) >= self.shared_lease_s / 3:
            self._renewed[stream_id] = now
            self._lease_soon([stream_id])

    def _lease_soon(self, ids: list[str], new: bool = False) -> None:
        async def go() -> None:
            with contextlib.suppress(StorageError):
                await self.store.lease(ids, cast(float, self.shared_lease_s), new=new)

        t = asyncio.ensure_future(go())
        self._lease_bg.add(t)
        t.add_done_callback(self._lease_bg.discard)

    async def _run_shared_leases(self) -> None:
        """Renew what this hub holds every third of the lease; end what nobody renewed."""
        lease_s = cast(float, self.shared_lease_s)
        every = max(0.05, min(1.0, lease_s / 3))
        while True:
            await asyncio.sleep(every)
            try:
                await self.store.lease(list(self._holding), lease_s)
                for sid in await self.store.lapse_leases():
                    self.counters.producer_lost += 1
                    self.hooks.emit(self.hooks.closed, sid, "error", PRODUCER_LOST)
            except StorageError as e:
                log.warning("producer leases: %s", e)

    async def _run_leases(self) -> None:
        # A hub restart counts as gone: every open stream gets one lease for its producer to return.
        now = time.time()
        for sid in await self.store.open_stream_ids():
            with contextlib.suppress(HubError):
                s = await self.get(sid)
                self._lease(s, max(0.0, now - s.meta.created))
        await expire(self.leases, self._lapse)

    async def _lapse(self, stream_id: str, reason: str) -> None:
        with contextlib.suppress(HubError):  # ended or deleted meanwhile
            await self.close(stream_id, "error", reason)
            self.counters.producer_lost += 1


HUB = web.AppKey("hub", Hub)
