"""WebSocket endpoint ``/ws``: one connection multiplexes many subscriptions and appends.

The reader loop never waits on storage or on the socket: an append is started in order (its offset
is assigned synchronously) and acknowledged by its own task once durable, and every outgoing frame
goes through the connection's bounded ``Outbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from hub.core.auth import Grant, bearer
from hub.core.errors import HubError
from hub.core.fanout import Outbox, Subscription
from hub.core.service import HUB, Hub, as_hub_error
from hub.protocols.chats import CHATS, ChatWatchers, check_chat_id, snapshot
from hub.protocols.native import messages as p
from storage import StorageError

log = logging.getLogger("hub.ws")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_UNAUTHORIZED = 4401  # do not reconnect with the same token
CLOSE_SLOW = 4408  # the client could not keep up with its own control frames: resume from your offset


async def ws_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    cfg = hub.config
    hub.auth.check_origin(request.headers.get("Origin"), request.host)
    ip = request.remote or "?"
    if hub.per_ip.get(ip, 0) >= cfg.max_connections_per_ip:
        raise HubError(
            "too_many_connections", f"at most {cfg.max_connections_per_ip} connections per address", 429
        )
    ws = web.WebSocketResponse(heartbeat=cfg.heartbeat_s, max_msg_size=cfg.max_message_bytes)
    await ws.prepare(request)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and cfg.socket_sndbuf:
        # A bounded kernel buffer makes a stalled reader visible to the outbox within ~100 KB instead
        # of after megabytes of autotuned buffer: it drops to replay sooner and costs less memory.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_sndbuf)
    try:
        grant = hub.auth.grant(bearer(request))
    except HubError as e:
        await ws.send_str(p.error_frame(e))
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")
        return ws
    hub.per_ip[ip] = hub.per_ip.get(ip, 0) + 1
    hub.counters.connections_total += 1
    conn = Connection(hub, ws, grant, request.app.get(CHATS))
    hub.connections.add(conn)
    try:
        await conn.run()
    finally:
        hub.connections.discard(conn)
        hub.per_ip[ip] -= 1
        if not hub.per_ip[ip]:
            del hub.per_ip[ip]
    return ws


class Connection:
    def __init__(
        self, hub: Hub, ws: web.WebSocketResponse, grant: Grant, chats: ChatWatchers | None = None
    ) -> None:
        self.hub = hub
        self.chats = chats
        self.watching: set[str] = set()
        self.ws = ws
        self.grant = grant
        self.outbox = Outbox(ws.send_str, hub.config.outbox_bytes)
        self.subs: dict[str, Subscription] = {}
        self.produced: set[str] = set()
        self.inflight = asyncio.Semaphore(hub.config.max_inflight_appends)
        self.tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> None:
        writer = asyncio.create_task(self.outbox.run())
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self.handle(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.send_error(
                        HubError("malformed_frame", "binary frames are not supported; send JSON text")
                    )
                else:
                    break
                if self.outbox.closed:
                    break
        finally:
            for sub in list(self.subs.values()):
                sub.stop()
            for sid in self.produced:
                self.hub.unwatch_cancel(sid, self.on_cancel)
            self.hub.release(self)  # streams this connection produced get a lease to be taken up
            if self.chats is not None:
                for chat in self.watching:
                    self.chats.unwatch(chat, self.on_chat_event)
            for t in list(self.tasks):
                t.cancel()
            self.outbox.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, RuntimeError):
                await writer
            if not self.ws.closed:
                await self.ws.close()

    def send(self, frame: str) -> None:
        if not self.outbox.force(frame):
            # not even control frames drain: the peer is not reading. It resumes from its offsets.
            self.outbox.close()
            t = asyncio.create_task(
                self.ws.close(code=CLOSE_SLOW, message=b"slow consumer: resume from your offset")
            )
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    def send_error(self, err: HubError, id: int | str | None = None) -> None:
        self.hub.counters.errors += 1
        self.send(p.error_frame(err, id))

    async def handle(self, frame: str) -> None:
        msg: p.ClientMsg | None = None
        try:
            msg = p.decode(frame)
            if isinstance(msg, p.Append):
                await self.append(msg)
            elif isinstance(msg, p.Subscribe):
                self.subscribe(msg)
            elif isinstance(msg, p.Unsubscribe):
                sub = self.subs.pop(msg.stream, None)
                if sub is not None:
                    sub.stop()
                self.send(p.encode(p.Unsubscribed(msg.stream)))
            elif isinstance(msg, p.Ping):
                self.send(p.encode(p.Pong(msg.t)))
            elif isinstance(msg, p.Cancel):
                self.grant.check("cancel", msg.stream)
                self.hub.request_cancel(msg.stream)
                if msg.id is not None:
                    self.send(p.encode(p.Ack(msg.id, msg.stream, self.hub.stream(msg.stream).next_offset)))
            elif isinstance(msg, p.Watch):
                self.watch(msg.chat)
            elif isinstance(msg, p.Unwatch):
                if self.chats is not None and msg.chat in self.watching:
                    self.watching.discard(msg.chat)
                    self.chats.unwatch(msg.chat, self.on_chat_event)
            else:
                self.spawn(self.control(msg))
        except HubError as e:
            self.send_error(e, getattr(msg, "id", None))
        except StorageError as e:
            self.send_error(as_hub_error(e, getattr(msg, "stream", None)), getattr(msg, "id", None))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    # --- subscribers -------------------------------------------------------------------------

    def subscribe(self, msg: p.Subscribe) -> None:
        self.grant.check("read", msg.stream)
        old = self.subs.pop(msg.stream, None)
        if old is not None:
            old.stop()  # a re-subscribe on the same connection replaces the old position
        if len(self.subs) >= self.hub.config.max_subscriptions:
            raise HubError(
                "too_many_subscriptions",
                f"at most {self.hub.config.max_subscriptions} subscriptions per connection",
                429,
                msg.stream,
            )
        s = self.hub.stream(msg.stream)
        epoch = s.log.meta.epoch
        offset = s.next_offset if msg.from_ == "now" else msg.from_
        assert isinstance(offset, int)
        if msg.epoch is not None and msg.epoch != epoch:
            self.send(p.encode(p.Reset(msg.stream, epoch)))
            offset = 0
        if offset > s.next_offset:
            raise HubError(
                "offset_out_of_range",
                f"offset {offset} is past the end of the stream ({s.next_offset})",
                416,
                msg.stream,
            )
        self.send(p.encode(p.Subscribed(msg.stream, offset, epoch, s.next_offset, s.status, msg.id)))
        self.hub.note_resume(msg.stream, offset)
        sub = self.subs[msg.stream] = self.hub.fanout.subscribe(
            s, self.outbox, offset, coalesce_ms=msg.coalesce_ms, coalesce_bytes=max(1, msg.coalesce_bytes)
        )

        def forget() -> None:  # a finished subscription no longer counts against the limit
            if self.subs.get(msg.stream) is sub:
                del self.subs[msg.stream]

        if sub.mode == "done":
            forget()
        else:
            sub.on_done = forget

    # --- chats -------------------------------------------------------------------------------

    def watch(self, chat: str) -> None:
        check_chat_id(chat)
        if self.chats is None:
            raise HubError("unknown_op", "this hub does not serve chats")
        if chat not in self.watching:
            if len(self.watching) >= self.hub.config.max_subscriptions:
                raise HubError("too_many_subscriptions", "watching too many chats on one connection", 429)
            self.watching.add(chat)
            self.chats.watch(chat, self.on_chat_event)
        # snapshot after registering: an answer started in between shows up in both, never in neither
        self.send(p.encode(p.ChatSnapshot(chat, snapshot(self.hub, chat, self.grant))))

    def on_chat_event(self, ev: p.ChatEvent) -> None:
        if self.grant.can("read", ev.stream):
            self.send(p.encode(ev))

    # --- producers ---------------------------------------------------------------------------

    def on_cancel(self, stream_id: str) -> None:
        self.send(p.encode(p.CancelRequested(stream_id)))

    def forget_stream(self, stream_id: str) -> None:
        """The stream ended: no cancel can reach it any more (called by the hub)."""
        self.produced.discard(stream_id)

    def _produce(self, stream_id: str) -> None:
        try:
            if self.hub.store.get(stream_id).ended:
                return  # a retry to an ended stream: no cancel can reach it any more
        except StorageError:
            pass
        if stream_id not in self.produced:
            self.produced.add(stream_id)
            self.hub.watch_cancel(stream_id, self.on_cancel)

    async def append(self, msg: p.Append) -> None:
        self.grant.check("write", msg.stream)
        data = [msg.data] if isinstance(msg.data, str) else msg.data
        chunks = [d.encode() for d in data]
        self._produce(msg.stream)
        await self.inflight.acquire()
        # Started now, in arrival order: the offset is assigned before the task's first await.
        self.spawn(self._append(msg, chunks))

    async def _append(self, msg: p.Append, chunks: list[bytes]) -> None:
        try:
            offset, count, dup = await self.hub.append(msg.stream, chunks, msg.producer, msg.seq, msg.create)
            self.hub.hold(msg.stream, self)  # the producer is here: no lease runs while it stays
            cancelled = msg.stream in self.hub.cancel_requested
            self.send(p.encode(p.Ack(msg.id, msg.stream, offset, count, dup, cancelled)))
        except HubError as e:
            self.send_error(e, msg.id)
        finally:
            self.inflight.release()

    async def control(self, msg: p.ClientMsg) -> None:
        try:
            if isinstance(msg, p.Create):
                self.grant.check("write", msg.stream)
                self._produce(msg.stream)
                try:
                    s = await self.hub.store.create(
                        msg.stream, ttl=msg.ttl, labels=msg.labels, exist_ok=msg.exist_ok
                    )
                except StorageError as e:
                    raise as_hub_error(e, msg.stream) from None
                self.hub.hold(msg.stream, self)
                self.send(p.encode(p.Ack(msg.id, msg.stream, s.next_offset)))
            elif isinstance(msg, p.Close):
                self.grant.check("write", msg.stream)
                s = await self.hub.close_stream(msg.stream, msg.status, msg.error)
                self.send(p.encode(p.Ack(msg.id, msg.stream, s.next_offset)))
        except HubError as e:
            self.send_error(e, getattr(msg, "id", None))


async def close_all(hub: Hub) -> None:
    """Graceful shutdown: tell every client we are going away (they resume elsewhere or later)."""
    for conn in list(hub.connections):
        if isinstance(conn, Connection):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
