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
from hub.core.errors import STATUS, HubError
from hub.core.fanout import Fanout
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

    async def start(self) -> None:
        # per-stream bookkeeping ends with the stream, so a hub serving millions keeps none of it
        self.store.on_end.append(lambda st: self._forget(st.id, deleted=False))
        self.store.on_delete.append(lambda sid: self._forget(sid, deleted=True))
        await self.store.start()
        self._sampler = asyncio.create_task(self._sample())

    async def stop(self) -> None:
        if self._sampler:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self.fanout.close_all()
        await self.store.stop()

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
        for cb in self.cancel_listeners.pop(stream_id, ()):
            forget = getattr(getattr(cb, "__self__", None), "forget_stream", None)
            if forget is not None:
                forget(stream_id)
        if deleted:
            self.resume_counts.pop(stream_id, None)

    def note_resume(self, stream_id: str, offset: int) -> None:
        if offset > 0:
            self.counters.reconnects += 1
            self.resume_counts[stream_id] = self.resume_counts.get(stream_id, 0) + 1


def as_hub_error(e: StorageError, stream_id: str | None = None) -> HubError:
    return HubError(e.code, str(e), STATUS.get(e.code, 500), stream_id)


HUB = web.AppKey("hub", Hub)
