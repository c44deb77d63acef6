"""The baseline of ``bench.fanout``: a bare aiohttp broadcast server, no storage, no durability.

    python -m bench.fanout_bare --port 9000

It speaks the subset of the hub's WebSocket protocol the benchmark uses (``create``, ``subscribe``,
``append``, ``close``) with byte-identical frames (it encodes with ``hub.protocols.native.messages``), and fans out
the naive but reasonable way: each append is encoded once into a ``chunks`` frame, put on every
subscriber's unbounded ``asyncio.Queue``, and each connection has its own writer task that awaits
``send_str``. Appends are acknowledged at once (nothing to make durable). Same aiohttp, same
heartbeat (20 s) and message size limit as the hub's defaults, so the difference the benchmark
measures is the hub's storage, durability and bookkeeping, not the framework.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib

import aiohttp
import msgspec
from aiohttp import web

from hub.core.errors import HubError
from hub.protocols.native import messages as p

HEARTBEAT_S = 20.0
MAX_MSG = 1 << 20


class Client:
    """One connection: an unbounded frame queue drained by its own writer task."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.q: asyncio.Queue[str | None] = asyncio.Queue()

    async def writer(self) -> None:
        while (frame := await self.q.get()) is not None:
            await self.ws.send_str(frame)


class Broadcaster:
    def __init__(self) -> None:
        self.subs: dict[str, set[Client]] = {}
        self.next: dict[str, int] = {}
        self.clients: set[Client] = set()

    def handle(self, c: Client, msg: p.ClientMsg) -> None:
        if isinstance(msg, p.Append):
            data = [msg.data] if isinstance(msg.data, str) else msg.data
            offset = self.next.get(msg.stream, 0)
            self.next[msg.stream] = offset + len(data)
            frame = p.encode(p.Chunks(msg.stream, offset, data))
            for s in self.subs.get(msg.stream, ()):
                s.q.put_nowait(frame)
            c.q.put_nowait(p.encode(p.Ack(msg.id, msg.stream, offset, len(data))))
        elif isinstance(msg, p.Subscribe):
            end = self.next.setdefault(msg.stream, 0)
            self.subs.setdefault(msg.stream, set()).add(c)
            c.q.put_nowait(p.encode(p.Subscribed(msg.stream, end, "bare", end, "open")))
        elif isinstance(msg, p.Create):
            self.next.setdefault(msg.stream, 0)
            c.q.put_nowait(p.encode(p.Ack(msg.id, msg.stream, self.next[msg.stream])))
        elif isinstance(msg, p.Close):
            end = self.next.get(msg.stream, 0)
            frame = p.encode(p.End(msg.stream, end, msg.status))
            for s in self.subs.pop(msg.stream, ()):
                s.q.put_nowait(frame)
            c.q.put_nowait(p.encode(p.Ack(msg.id, msg.stream, end)))
        elif isinstance(msg, p.Unsubscribe):
            self.subs.get(msg.stream, set()).discard(c)
            c.q.put_nowait(p.encode(p.Unsubscribed(msg.stream)))

    def drop(self, c: Client) -> None:
        self.clients.discard(c)
        for subs in self.subs.values():
            subs.discard(c)


BROADCASTER = web.AppKey("broadcaster", Broadcaster)


async def ws_handler(request: web.Request) -> web.WebSocketResponse:
    b = request.app[BROADCASTER]
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S, max_msg_size=MAX_MSG)
    await ws.prepare(request)
    c = Client(ws)
    b.clients.add(c)
    writer = asyncio.create_task(c.writer())
    try:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            try:
                b.handle(c, p.decode(msg.data))
            except (HubError, msgspec.ValidationError):
                continue  # the benchmark never sends a bad frame
    finally:
        b.drop(c)
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
            await writer
    return ws


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app() -> web.Application:
    app = web.Application()
    b = app[BROADCASTER] = Broadcaster()

    async def close_all(app: web.Application) -> None:
        for c in list(b.clients):
            with contextlib.suppress(Exception):
                await c.ws.close(code=1001, message=b"server shutting down")

    app.on_shutdown.append(close_all)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout_bare", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None, shutdown_timeout=5)


if __name__ == "__main__":
    main()
