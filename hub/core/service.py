"""The hub's shared state: storage, fan-out, auth, cancel requests and counters (one per app)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.datadir import DataDirLock
from hub.core.errors import STATUS, HubError
from hub.core.fanout import Fanout
from hub.core.lease import Leases, expire
from storage import LogOptions, Store, StoreOptions, Stream
from storage.errors import StorageError


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


class Hub:
    def __init__(self, config: Config, auth: Auth) -> None:
        self.config = config
        self.auth = auth
        self.store = Store(
            config.data_dir,
            StoreOptions(
                fsync=config.fsync,
                interval_ms=config.fsync_interval_ms,
                default_ttl=config.stream_ttl_s,
                log=LogOptions(segment_bytes=config.segment_bytes, max_chunk_bytes=config.max_chunk_bytes),
            ),
        )
        self.fanout = Fanout()
        self.counters = Counters()
        self.started = time.time()
        self.connections: set[object] = set()
        self.per_ip: dict[str, int] = {}
        self.cancel_requested: set[str] = set()
        self.cancel_listeners: dict[str, set[Callable[[str], None]]] = {}
        self.resume_counts: dict[str, int] = {}
        self.append_rate = Rate()
        self.delivery_rate = Rate()
        self.closing = False
        self._sampler: asyncio.Task[None] | None = None
        self.lock = DataDirLock(config.data_dir)  # one hub per data dir, held from start to stop
        self.leases = Leases(config.producer_lease_s, config.open_ttl_s)  # answers end (lease.py)
        self._lease_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # per-stream bookkeeping ends with the stream, so a hub serving millions keeps none of it
        self.store.on_end.append(lambda st: self._forget(st.id, deleted=False))
        self.store.on_delete.append(lambda sid: self._forget(sid, deleted=True))
        self.store.on_create.append(lambda st: self._lease(st.id))
        self.lock.acquire()  # before the store touches a file: a second hub must change nothing
        await self.store.start()
        self._sampler = asyncio.create_task(self._sample())
        if self.leases.enabled:
            self._lease_task = asyncio.create_task(self._run_leases())

    async def stop(self) -> None:
        for task in (self._sampler, self._lease_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.fanout.close_all()
        await self.store.stop()
        self.lock.release()  # after CLEAN_SHUTDOWN: only the holder ever writes it

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.append_rate.sample(self.counters.appended_chunks)
            self.delivery_rate.sample(self.fanout.stats.deliveries)

    # --- streams -----------------------------------------------------------------------------

    def stream(self, stream_id: str) -> Stream:
        try:
            return self.store.get(stream_id)
        except StorageError as e:
            raise as_hub_error(e, stream_id) from None

    async def append(
        self,
        stream_id: str,
        chunks: list[bytes],
        producer: str | None,
        seq: int | None,
        create: bool = False,
    ) -> tuple[int, int, bool]:
        for c in chunks:
            if len(c) > self.config.max_chunk_bytes:
                raise HubError(
                    "chunk_too_large",
                    f"chunk of {len(c)} bytes; the limit is {self.config.max_chunk_bytes}",
                    413,
                    stream_id,
                )
        try:
            if create and not self.store.exists(stream_id):
                s = await self.store.create(stream_id, exist_ok=True)
            else:
                s = self.store.get(stream_id)
            res = await s.append(chunks, producer, seq)
        except StorageError as e:
            raise as_hub_error(e, stream_id) from None
        if not res.duplicate:
            self.counters.appends += 1
            self.counters.appended_chunks += res.count
        self.leases.renew(stream_id)  # an HTTP producer's lease; a held stream ignores it
        return res.offset, res.count, res.duplicate

    async def close_stream(self, stream_id: str, status: str, error: str | None) -> Stream:
        s = self.stream(stream_id)
        try:
            await s.close(status, error)
        except StorageError as e:
            raise as_hub_error(e, stream_id) from None
        self.cancel_requested.discard(stream_id)
        return s

    def request_cancel(self, stream_id: str) -> bool:
        """Ask the stream's producer to stop. True if a connected producer was told."""
        s = self.stream(stream_id)
        if s.ended:
            return False
        self.counters.cancels += 1
        self.cancel_requested.add(stream_id)
        told = False
        for cb in list(self.cancel_listeners.get(stream_id, ())):
            cb(stream_id)
            told = True
        return told

    def watch_cancel(self, stream_id: str, cb: Callable[[str], None]) -> None:
        self.cancel_listeners.setdefault(stream_id, set()).add(cb)

    def unwatch_cancel(self, stream_id: str, cb: Callable[[str], None]) -> None:
        cbs = self.cancel_listeners.get(stream_id)
        if cbs is not None:
            cbs.discard(cb)
            if not cbs:
                del self.cancel_listeners[stream_id]

    def _forget(self, stream_id: str, deleted: bool) -> None:
        self.cancel_requested.discard(stream_id)
        self.leases.forget(stream_id)
        for cb in self.cancel_listeners.pop(stream_id, ()):
            forget = getattr(getattr(cb, "__self__", None), "forget_stream", None)
            if forget is not None:
                forget(stream_id)
        if deleted:
            self.resume_counts.pop(stream_id, None)

    # --- producer leases (hub/core/lease.py) ------------------------------------------------------

    def _lease(self, stream_id: str, age_s: float = 0.0) -> None:
        """Lease an open stream of ours; Durable Streams streams (content-typed) have no producer
        session to lose and stay open until closed or expired."""
        if stream_id in self.leases:
            return
        try:
            s = self.store.get(stream_id)
        except StorageError:
            return
        if not s.ended and s.meta.content_type is None:
            self.leases.track(stream_id, age_s)

    def hold(self, stream_id: str, holder: object) -> None:
        """A producer connection created or appended to the stream: it holds it until ``release``."""
        self._lease(stream_id)
        self.leases.attach(stream_id, holder)

    def release(self, holder: object) -> None:
        self.leases.detach(holder)

    def heartbeat(self, stream_id: str) -> None:
        """An HTTP producer is still there (POST /streams/{id}/heartbeat)."""
        self._lease(stream_id)
        self.leases.renew(stream_id)

    async def _run_leases(self) -> None:
        # A hub restart counts as gone: every open stream gets one lease for its producer to return.
        now = time.time()
        for sid in await self.store.open_stream_ids():
            with contextlib.suppress(StorageError):
                self._lease(sid, max(0.0, now - self.store.get(sid).meta.created))
        await expire(self.leases, self._lapse)

    async def _lapse(self, stream_id: str, reason: str) -> None:
        with contextlib.suppress(HubError):  # ended or deleted meanwhile
            await self.close_stream(stream_id, "error", reason)
            self.counters.producer_lost += 1

    def note_resume(self, stream_id: str, offset: int) -> None:
        if offset > 0:
            self.counters.reconnects += 1
            self.resume_counts[stream_id] = self.resume_counts.get(stream_id, 0) + 1


def as_hub_error(e: StorageError, stream_id: str | None = None) -> HubError:
    return HubError(e.code, str(e), STATUS.get(e.code, 500), stream_id)


HUB = web.AppKey("hub", Hub)
