"""Per-app Durable Streams state: settings, the fork graph, per-id locks and background tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web

from hub.core.config import Config
from hub.core.service import Hub
from hub.core.tasks import TaskSet
from storage import StreamHandle


@dataclass
class DurableConfig:
    long_poll_s: float = 20.0  # a long-poll with nothing new answers 204 after this
    sse_max_s: float = 60.0  # SSE responses end after this (clients reconnect from their offset)
    sse_keepalive_s: float = 15.0
    read_max_bytes: int = 1 << 20  # one catch-up response carries about this much (whole chunks)
    read_max_chunks: int = 4096

    @classmethod
    def from_hub(cls, config: Config) -> DurableConfig:
        """The hub's settings for this protocol (``RHUB_DS_*``, parsed and checked with the others)."""
        return cls(long_poll_s=config.ds_long_poll_s, sse_max_s=config.ds_sse_max_s)


@dataclass
class Durable:
    """Per-app state: settings, the fork graph, and a lock per stream id for creates and writes."""

    config: DurableConfig = field(default_factory=DurableConfig)
    forks: dict[str, set[str]] = field(default_factory=dict)  # source id -> ids forked from it
    parents: dict[str, str] = field(default_factory=dict)  # fork id -> source id
    creating: set[str] = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)  # set on shutdown: live reads end
    _locks: dict[str, tuple[asyncio.Lock, int]] = field(default_factory=dict)
    tasks: TaskSet = field(default_factory=TaskSet)

    def add_fork(self, src: str, fork: str) -> None:
        self.forks.setdefault(src, set()).add(fork)
        self.parents[fork] = src

    @contextlib.asynccontextmanager
    async def lock(self, sid: str) -> AsyncIterator[None]:
        lk, n = self._locks.get(sid) or (asyncio.Lock(), 0)
        self._locks[sid] = (lk, n + 1)
        try:
            async with lk:
                yield
        finally:
            lk, n = self._locks[sid]
            if n == 1:
                del self._locks[sid]
            else:
                self._locks[sid] = (lk, n - 1)

    async def wait(self, hub: Hub, s: StreamHandle, offset: int, timeout: float) -> bool:
        """``s.wait`` that also returns (False) when the hub shuts down, so that a long-poll or an
        SSE response ends at once and its client resumes elsewhere or later."""
        if self.closing.is_set():
            return False
        waiter = asyncio.ensure_future(hub.wait(s, offset, timeout))
        closer = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait({waiter, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closer.cancel()
            if not waiter.done():
                waiter.cancel()
        return waiter.done() and not waiter.cancelled() and waiter.result()


DS = web.AppKey("durable", Durable)
