"""A connection's bounded send buffer: frames are queued without waiting and sent by one writer task.

Invariants: ``offer`` never waits and refuses (queues nothing) past ``max_bytes``, so a live chunk for
a slow reader is dropped to replay instead of buffered without bound; ``force`` lets small control
frames (acks, errors) through up to twice the limit; ``put`` (replay) waits until the buffer has
drained below half. At most about ``2 * max_bytes`` is ever held per connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable


class OutboxClosed(Exception):
    pass


class Outbox:
    """A bounded queue of text frames for one client connection, drained by ``run``."""

    def __init__(self, send: Callable[[str], Awaitable[None]], max_bytes: int = 1 << 20) -> None:
        self._send = send
        self.max_bytes = max_bytes
        self._q: deque[str] = deque()
        self.bytes = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.closed = False
        self.sent_frames = 0

    def offer(self, frame: str) -> bool:
        """Queue without waiting; False (and nothing queued) if the buffer is full."""
        if self.closed or self.bytes + len(frame) > self.max_bytes:
            return False
        self._push(frame)
        return True

    def force(self, frame: str) -> bool:
        """Queue a small control frame (ack, error) past the soft limit, up to twice the limit."""
        if self.closed or self.bytes + len(frame) > 2 * self.max_bytes:
            return False
        self._push(frame)
        return True

    async def put(self, frame: str) -> None:
        """Queue once the buffer has drained below half; used by replay, which can wait."""
        while not self.closed and self.bytes > self.max_bytes // 2:
            self._space.clear()
            await self._space.wait()
        if self.closed:
            raise OutboxClosed
        self._push(frame)

    async def wait_space(self) -> None:
        while not self.closed and self.bytes > self.max_bytes // 2:
            self._space.clear()
            await self._space.wait()
        if self.closed:
            raise OutboxClosed

    def _push(self, frame: str) -> None:
        self._q.append(frame)
        self.bytes += len(frame)
        self._ready.set()

    async def run(self) -> None:
        try:
            while True:
                while not self._q:
                    if self.closed:
                        return
                    self._ready.clear()
                    await self._ready.wait()
                frame = self._q.popleft()
                await self._send(frame)
                self.bytes -= len(frame)
                self.sent_frames += 1
                if self.bytes <= self.max_bytes // 2:
                    self._space.set()
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._q.clear()
        self.bytes = 0
        self._ready.set()
        self._space.set()
