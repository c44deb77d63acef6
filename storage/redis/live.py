"""Live traffic between hubs: ONE pub/sub connection per engine, whatever the number of streams.

Each stream has a channel (storage/redis/wire.py says what travels on it); the engine subscribes to
the channels of the streams it has listeners or waiters for, plus the engine-wide events channel.
Pub/sub delivers at most once, so it is only a fast path: every (re)subscription, confirmed by
Redis, makes the stream catch up from the stream itself (XRANGE from what it already delivered),
and a gap in the offsets a notification carries does the same. A lost connection therefore costs
latency, never a chunk. Invariant: a channel's handler runs only for confirmed subscriptions
or messages Redis sent after them, on the event loop, in the order Redis published them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

OnMessage = Callable[[bytes], None]
OnConfirm = Callable[[], None]


class _PubSub(PubSub):
    """redis-py's PubSub, telling its owner each time the connection was (re)made."""

    def __init__(self, owner: Live, **kw: Any) -> None:
        super().__init__(**kw)
        self._owner = owner

    async def on_connect(self, connection: Any) -> None:
        await super().on_connect(connection)
        self._owner.connects += 1


class Live:
    def __init__(self, pool: aioredis.ConnectionPool) -> None:
        self._ps = _PubSub(self, connection_pool=pool)
        self._handlers: dict[bytes, tuple[OnMessage, OnConfirm]] = {}
        self._confirmed: dict[bytes, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None
        self.connects = 0
        self.messages = 0
        self.lost = 0  # times the connection dropped

    async def start(self, events: str, on_event: OnMessage) -> None:
        await self.subscribe(events, on_event, lambda: None, wait=False)
        self._task = asyncio.create_task(self._read())
        await self._confirmed[events.encode()].wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self._ps.aclose()

    async def subscribe(
        self, channel: str, on_message: OnMessage, on_confirm: OnConfirm, wait: bool = True
    ) -> None:
        """Subscribe and (``wait``) return once Redis confirmed it: from then on nothing is missed
        that ``on_confirm`` (called at each confirmation, reconnections included) does not catch."""
        ch = channel.encode()
        self._handlers[ch] = (on_message, on_confirm)
        ev = self._confirmed.setdefault(ch, asyncio.Event())
        if ev.is_set():
            return
        await self._ps.subscribe(ch)
        if wait:
            await ev.wait()

    async def unsubscribe(self, channel: str) -> None:
        ch = channel.encode()
        self._handlers.pop(ch, None)
        self._confirmed.pop(ch, None)
        with contextlib.suppress(RedisError, OSError):
            await self._ps.unsubscribe(ch)

    def subscribed(self, channel: str) -> bool:
        ev = self._confirmed.get(channel.encode())
        return ev is not None and ev.is_set()

    @property
    def channels(self) -> int:
        return len(self._handlers)

    async def _read(self) -> None:
        backoff = 0.05
        while True:
            try:
                async for msg in self._ps.listen():
                    backoff = 0.05
                    self._dispatch(msg)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as e:
                self.lost += 1
                for ev in self._confirmed.values():
                    ev.clear()  # until Redis confirms again after the reconnection
                log.warning("redis pub/sub connection lost (%s); reconnecting", e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                with contextlib.suppress(RedisError, OSError):
                    await self._ps.connect()  # re-subscribes every channel (PubSub.on_connect)
            if not self._ps.subscribed:
                await asyncio.sleep(0.05)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        kind, ch = msg["type"], msg["channel"]
        handler = self._handlers.get(ch)
        if kind == "message":
            self.messages += 1
            if handler is not None and self._confirmed[ch].is_set():
                try:
                    handler[0](msg["data"])
                except Exception:
                    log.exception("redis notification handler failed")
        elif kind == "subscribe" and handler is not None:
            self._confirmed[ch].set()
            try:
                handler[1]()
            except Exception:
                log.exception("redis subscription confirm handler failed")
