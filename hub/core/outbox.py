"""A connection's bounded send buffer: frames are queued without waiting and sent by one writer task.

Invariants: ``offer`` never waits and refuses (queues nothing) past ``max_bytes``, so a live chunk for
a slow reader is dropped to replay instead of buffered without bound; ``force`` lets small control
frames (acks, errors) through up to twice the limit; ``put`` (replay) waits until the buffer has
drained below half. At most about ``2 * max_bytes`` is ever held per connection.

A frame that finds the queue empty and the socket's buffer below its limit is written at once
(``write_now``), in order: a queued frame is never overtaken, as nothing is written at once while
anything is queued or the writer runs.

Every idle connection holds one, so it holds no deque while empty and no ``asyncio.Event`` (each
allocates a 760-byte waiter deque up front): ``Signal``s create a future only while someone waits.
With ``autostart`` it holds no writer task either: one is started by the first queued frame and ends
once the queue is empty (a task and its coroutine frames are about 1 KiB per idle connection).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from hub.core.signal import Signal


class OutboxClosed(Exception):
    pass


class Outbox:
    """A bounded queue of text frames for one client connection, drained by ``run``."""

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        max_bytes: int = 1 << 20,
        write_now: Callable[[str], bool] | None = None,
    ) -> None:
        self._send = send
        # With ``autostart``: a frame that finds nothing queued is handed to ``write_now``, which
        # sends it without waiting if the socket takes it (False: it did not, queue it). An ack
        # then costs no writer task: the common case of a producer awaiting each append's ack.
        self._write_now = write_now
        self.max_bytes = max_bytes
        self._q: deque[str] | None = None  # created by the first frame, dropped once drained
        self.bytes = 0
        self._ready = Signal()
        self._space = Signal()
        self._space.set()
        self.closed = False
        self.sent_frames = 0
        self._auto = False
        self._writer: asyncio.Task[None] | None = None

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
        w = self._write_now
        if w is not None and self._writer is None and not self._q and self._auto and w(frame):
            self.sent_frames += 1
            return
        if self._q is None:
            self._q = deque()
        self._q.append(frame)
        self.bytes += len(frame)
        self._ready.set()
        if self._auto and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def autostart(self) -> None:
        """Send from a task that runs only while frames are queued (instead of awaiting ``run``)."""
        self._auto = True
        if self._q and self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        try:
            while self._q and not self.closed:
                await self._send_one(self._q.popleft())
            if not self._q:
                self._q = None
        except (ConnectionError, RuntimeError):  # the peer is gone: as ``run`` ending, nothing more goes out
            self.close()
        finally:
            self._writer = None

    async def stop(self) -> None:
        """Close, and end the writer task ``autostart`` may have running (it may be blocked in a send)."""
        self.close()
        w = self._writer
        if w is not None:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await w

    async def _send_one(self, frame: str) -> None:
        await self._send(frame)
        self.bytes -= len(frame)
        self.sent_frames += 1
        if self.bytes <= self.max_bytes // 2:
            self._space.set()

    async def run(self) -> None:
        try:
            while True:
                while not self._q:
                    self._q = None
                    if self.closed:
                        return
                    self._ready.clear()
                    await self._ready.wait()
                await self._send_one(self._q.popleft())
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._write_now = None  # a bound method of the connection: no cycle left behind
        self._q = None
        self.bytes = 0
        self._ready.set()
        self._space.set()
