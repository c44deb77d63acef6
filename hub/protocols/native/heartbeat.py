"""One heartbeat for every native WebSocket: a dead peer is found by a single sweep, not by timers
per connection.

Why: aiohttp's own heartbeat keeps two timer handles per connection (each with a copied context)
and reschedules on received frames: ~1 KiB of RSS per idle connection and a heap of 20,000 timers at
10,000 connections. Here a connection only records when it last received anything (``seen``, set by
its reader) and when a ping went out unanswered (``ping_at``). A sweep visits each connection every
``heartbeat_s / 4`` (a slice of them per tick, so pings are spread, not sent in one burst):

* a connection silent for ``heartbeat_s`` is pinged (once; any frame received clears the ping);
* a connection that received nothing for ``heartbeat_s / 2`` after its ping is aborted, as aiohttp
  does on a missing pong: its reader ends and the connection cleans up as for any lost peer.

So a dead peer is dropped ``1.5-1.75 x heartbeat_s`` after its last frame, as with aiohttp's. The
connection's reader answers the peer's pings itself (``autoping`` is off, or pongs never reach it).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from aiohttp import web


class Beating(Protocol):
    ws: web.WebSocketResponse
    seen: float  # loop time of the last frame received
    ping_at: float  # loop time of the unanswered ping, 0.0 if none


SLICES = 20  # connections are visited a slice per tick, so pings go out spread over the sweep


class Heartbeat:
    """Connections sit in ``SLICES`` sets, filled round robin; each tick visits one, so every
    connection is still visited every ``interval_s / 4``. Visiting them all at once sent the pings of
    every connection that fell silent since the last sweep in one loop pass: at 10,000 connections
    that opened together, ~4,000 pings and a 200 ms stall (bench.load's p99)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.slices: list[set[Beating]] = [set() for _ in range(SLICES)]
        self._next = 0
        self.pings = 0
        self.dropped = 0
        self._pinging: set[asyncio.Task[None]] = set()

    def add(self, c: Beating) -> None:
        self.slices[self._next].add(c)
        self._next = (self._next + 1) % SLICES

    def discard(self, c: Beating) -> None:
        for members in self.slices:
            members.discard(c)

    def __len__(self) -> int:
        return sum(map(len, self.slices))

    def sweep(self, now: float, members: set[Beating]) -> None:
        beat = self.interval_s
        for c in list(members):
            if c.ping_at:
                if c.seen < c.ping_at and now - c.ping_at >= beat / 2:
                    self.dropped += 1
                    members.discard(c)  # once: its reader's cleanup may come a sweep later
                    transport = c.ws._req.transport if c.ws._req is not None else None
                    if transport is not None:
                        transport.abort()  # the reader sees the connection lost and cleans up
                elif c.seen >= c.ping_at:
                    c.ping_at = 0.0
            elif now - c.seen >= beat and not c.ws.closed:
                c.ping_at = now
                self.pings += 1
                task = asyncio.ensure_future(c.ws.ping())  # a write; waits only if the socket is full
                self._pinging.add(task)
                task.add_done_callback(self._pinged)

    def _pinged(self, task: asyncio.Task[None]) -> None:
        self._pinging.discard(task)
        if not task.cancelled():
            task.exception()  # a closing socket refuses the ping: the sweep finds it dead anyway

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            tick = 0
            while True:
                await asyncio.sleep(self.interval_s / 4 / SLICES)
                self.sweep(loop.time(), self.slices[tick])
                tick = (tick + 1) % SLICES
        finally:
            for t in list(self._pinging):
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._pinging, return_exceptions=True)
