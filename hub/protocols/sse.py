"""The one SSE response loop every Server-Sent Events transport shares (native SSE, Durable Streams,
the AI SDK's resume): replay from an offset, then live, through the hub's fan-out into a prepared
response. A transport brings only its ``Format`` (how chunks and the end become events) and limits.

Invariants: the subscription is the fan-out's, so the same replay-then-live rule holds (no gap, no
duplicate); a comment goes out after every ``keepalive_s`` of silence, so proxies keep the response
open; once the end is queued the loop waits for it to be written, so a reader never loses the final
status to the response closing; the subscription and its writer always end with the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from typing import Any

from aiohttp import web

from hub.core.fanout import Format
from hub.core.outbox import Outbox, OutboxClosed
from hub.core.service import Hub
from storage import StreamHandle

KEEPALIVE = ": keep-alive\n\n"


async def pump(
    resp: web.StreamResponse,
    hub: Hub,
    s: StreamHandle,
    offset: int,
    fmt: Format,
    *,
    keepalive_s: float = 15.0,
    max_s: float | None = None,
    stop: asyncio.Event | None = None,
    preamble: str = "",
) -> None:
    """Serve ``s`` from ``offset`` into ``resp`` until its end is out, the peer goes, ``max_s`` has
    passed or ``stop`` is set (the hub shutting down); the reader resumes from its last event id."""
    loop = asyncio.get_running_loop()
    deadline = math.inf if max_s is None else loop.time() + max_s
    outbox = Outbox(lambda f: resp.write(f.encode()), hub.config.outbox_bytes)
    if preamble:
        outbox.force(preamble)
    sub = hub.subscribe(s, outbox, offset, fmt=fmt)
    writer = asyncio.create_task(outbox.run())
    finished = asyncio.ensure_future(sub.finished.wait())
    waits: set[asyncio.Future[Any]] = {writer, finished}
    closing = asyncio.ensure_future(stop.wait()) if stop is not None else None
    if closing is not None:
        waits.add(closing)
    try:
        while not any(w.done() for w in waits) and loop.time() < deadline:
            done, _ = await asyncio.wait(
                waits, timeout=min(keepalive_s, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done and loop.time() < deadline:
                outbox.force(KEEPALIVE)
        # the end is queued: let it go out (within the response's time)
        while finished.done() and not writer.done() and outbox.bytes and loop.time() < deadline:
            await asyncio.wait({writer}, timeout=0.01)
    except (ConnectionError, OutboxClosed):
        pass  # the client went away: it resumes from its last offset
    finally:
        finished.cancel()
        if closing is not None:
            closing.cancel()
        sub.stop()
        outbox.close()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, Exception):
            await writer
