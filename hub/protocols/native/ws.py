"""WebSocket endpoint ``/ws``: one connection multiplexes many subscriptions and appends.

The reader loop never waits on storage or on the socket: an append is started in order (its offset
is assigned synchronously) and acknowledged once durable, and every outgoing frame goes through the
connection's bounded ``Outbox``. The common append (no create, on an engine with ``append_nowait``)
costs no task: a callback on its durability future sends the ack, and an ack that finds the outbox
empty and the socket's buffer below ``WRITE_BUFFER`` is written at once, without a writer task
(64 producers awaiting each ack at ``--fsync always``: hub CPU per append ~75 -> ~50 us).

Invariants (docs/protocol.md, "Order" and "Slow readers"):

* Ops on one stream start in arrival order. An op that cannot start at once (a ``create``, or an
  ``append`` with ``create`` for a stream not there yet) holds a gate; later ops on that stream queue
  behind it and start one by one as each predecessor has started, so pipelined creates, appends and
  subscribes behave as if each had waited for the previous reply.
* A peer that lets control frames pile up past twice the outbox is closed with 4408: the reader
  stops, and the close frame is written behind what is already buffered, never instead of it.

Memory: every idle tab holds a ``Connection``, so it has slots, its sets are created on first use, and
permessage-deflate is off unless configured (``ws_compress``): aiohttp's zlib state is ~100 KiB of RSS
per connection, against ~20 KiB for the whole idle connection without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from collections.abc import AsyncIterator, Coroutine
from typing import Any, cast

import aiohttp
from aiohttp import web

from hub.core.auth import Grant, bearer
from hub.core.errors import CloseCode, HubError
from hub.core.fanout import Subscription
from hub.core.outbox import Outbox
from hub.core.service import HUB, Hub, PendingAppend
from hub.core.tasks import TaskSet
from hub.protocols.chats import CHATS, ChatWatchers, check_chat_id, snapshot
from hub.protocols.http_errors import answer, answers_own_errors
from hub.protocols.native import messages as p
from hub.protocols.native.heartbeat import Heartbeat
from storage import AppendResult, Status

log = logging.getLogger("hub.ws")

# What a stalled reader pins in user space besides the outbox (whose frames are shared with every
# other subscriber): asyncio's transport buffer and aiohttp's drain interval, 64 KiB each by default,
# hold private copies of sent frames. The kernel's SO_SNDBUF (``socket_sndbuf``) is the real buffer.
WRITE_BUFFER = 4 << 10
SLOW_CLOSE_S = 5.0  # how long a 4408 close frame may wait behind unread data before the socket is dropped


def text_frame_head(n: int) -> bytes:
    """The header of an unmasked, final, uncompressed text frame of ``n`` payload bytes (RFC 6455
    5.2): a server's frame as aiohttp's writer builds it."""
    if n < 126:
        return bytes((0x81, n))
    if n < 1 << 16:
        return _HEAD16.pack(0x81, 126, n)
    return _HEAD64.pack(0x81, 127, n)


_HEAD16, _HEAD64 = struct.Struct("!BBH"), struct.Struct("!BBQ")


@answers_own_errors  # no error-middleware frame under each open connection: its refusals are here
async def ws_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    cfg = hub.config
    ip = request.remote or "?"
    try:
        hub.auth.check_origin(request.headers.get("Origin"), request.host)
        if hub.per_ip.get(ip, 0) >= cfg.max_connections_per_ip:
            raise HubError(
                "too_many_connections", f"at most {cfg.max_connections_per_ip} connections per address"
            )
    except HubError as e:
        return answer(request, e)
    ws = web.WebSocketResponse(
        autoping=False,  # the reader answers pings and sees pongs: one sweep beats for all (heartbeat.py)
        max_msg_size=cfg.max_message_bytes,
        compress=cfg.ws_compress,
        writer_limit=WRITE_BUFFER,
    )
    await ws.prepare(request)
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=WRITE_BUFFER)
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None and cfg.socket_sndbuf:
        # A bounded kernel buffer makes a stalled reader visible to the outbox within ~100 KB instead
        # of after megabytes of autotuned buffer: it drops to replay sooner and costs less memory.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, cfg.socket_sndbuf)
    try:
        grant = hub.auth.grant(bearer(request))
    except HubError as e:
        await ws.send_str(p.error_frame(e))
        await ws.close(code=CloseCode.UNAUTHORIZED, message=e.code.encode())
        return ws
    hub.per_ip[ip] = hub.per_ip.get(ip, 0) + 1
    hub.counters.connections_total += 1
    conn = Connection(hub, ws, grant, request.app.get(CHATS), request.transport)
    hub.connections.add(conn)
    beats = request.app.get(HEARTBEAT)
    if beats is not None:
        beats.add(conn)
    try:
        await conn.run()
    finally:
        if beats is not None:
            beats.discard(conn)
        hub.connections.discard(conn)
        hub.per_ip[ip] -= 1
        if not hub.per_ip[ip]:
            del hub.per_ip[ip]
    return ws


HEARTBEAT = web.AppKey("ws_heartbeat", Heartbeat)


def setup_heartbeat(app: web.Application, interval_s: float) -> None:
    """One heartbeat sweep for the app's native WebSockets, while the app runs."""

    async def beating(app: web.Application) -> AsyncIterator[None]:
        beats = app[HEARTBEAT] = Heartbeat(interval_s)
        task = asyncio.get_running_loop().create_task(beats.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(beating)


class Connection:
    __slots__ = (
        "hub", "chats", "ws", "grant", "outbox", "subs", "_inflight", "tasks", "slow", "gates", "_queued",
        "_watching", "_produced", "seen", "ping_at", "transport", "_tasked",
    )  # fmt: skip

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        grant: Grant,
        chats: ChatWatchers | None = None,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.hub = hub
        self.chats = chats
        self._watching: set[str] | None = None  # chats watched; created by the first watch
        self.ws = ws
        self.seen = asyncio.get_running_loop().time()  # the last frame received (heartbeat.py)
        self.ping_at = 0.0  # the heartbeat's unanswered ping, if any
        self.grant = grant
        # the socket, to send a frame without a task when its buffer has room (not when compressing)
        self.transport = transport if not hub.config.ws_compress else None
        self.outbox = Outbox(
            ws.send_str, hub.config.outbox_bytes, self._write_now if self.transport is not None else None
        )
        self.subs: dict[str, Subscription] = {}
        self._produced: set[str] | None = None  # streams this connection produces; by the first append
        self._inflight: asyncio.Semaphore | None = None  # appends not yet acked; by the first append
        self.tasks = TaskSet()
        self.slow = False  # the peer let its control frames pile up past twice the outbox: 4408
        # Arrival order per stream: while an op on a stream cannot start at once (a create in flight,
        # or an op queued behind one), the next ops on that stream queue behind it. ``gates[sid]``
        # resolves once the last queued op on ``sid`` has started (its offset assigned, its stream
        # created, its subscription registered); ``queued`` bounds how many may wait.
        self.gates: dict[str, asyncio.Future[None]] = {}
        # ops on a stream running in a task (a create, a close, an append that needs ``Hub.append``):
        # while any runs, a later append on that stream takes a task too, as tasks start in order
        # and a task-free append would overtake them (by the first such op)
        self._tasked: dict[str, int] | None = None
        self._queued: asyncio.Semaphore | None = None  # ops queued behind a gate; by the first one

    @property
    def inflight(self) -> asyncio.Semaphore:
        if self._inflight is None:
            self._inflight = asyncio.Semaphore(self.hub.config.max_inflight_appends)
        return self._inflight

    @property
    def queued(self) -> asyncio.Semaphore:
        if self._queued is None:
            self._queued = asyncio.Semaphore(self.hub.config.max_inflight_appends)
        return self._queued

    @property
    def produced(self) -> set[str]:
        """Streams this connection produces that are not ended yet (a cancel can still reach them)."""
        return self._produced if self._produced is not None else set()

    async def run(self) -> None:
        self.outbox.autostart()  # a writer task only while frames are queued
        try:
            loop = asyncio.get_running_loop()
            async for msg in self.ws:
                self.seen = loop.time()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await self.handle(msg.data)
                elif msg.type == aiohttp.WSMsgType.PING:
                    await self.ws.pong(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    pass  # the heartbeat's answer: ``seen`` is all it needed
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self.send_error(
                        HubError("malformed_frame", "binary frames are not supported; send JSON text")
                    )
                else:
                    break
                if self.outbox.closed:
                    break
                if self.outbox.bytes > self.outbox.max_bytes // 2:
                    # frames already buffered are handled without a pause: give the writer a turn,
                    # so a burst of pings from a reading client is answered rather than a 4408
                    await asyncio.sleep(0)
        finally:
            for sub in list(self.subs.values()):
                sub.stop()
            for sid in self._produced or ():
                self.hub.unwatch_cancel(sid, self.on_cancel)
            self.hub.release(self)  # streams this connection produced get a lease to be taken up
            if self.chats is not None:
                for chat in self._watching or ():
                    self.chats.unwatch(chat, self.on_chat_event)
            self.tasks.cancel()
            self.outbox.close()
            if self.slow:
                # not cancelled: a writer blocked in a drain shares aiohttp's drain future with the
                # close frame's write, and cancelling it would cancel that future (and the close)
                await self._close_slow()
            await self.outbox.stop()
            if not self.ws.closed:
                await self.ws.close()

    async def _close_slow(self) -> None:
        """Close with 4408. The close frame goes out behind everything already in the socket's
        buffers, so a peer that reads again within ``SLOW_CLOSE_S`` gets it (and resumes from its
        offsets); one that does not gets the TCP connection closed under it."""
        try:
            async with asyncio.timeout(SLOW_CLOSE_S):
                await self.ws.close(code=CloseCode.SLOW, message=b"slow consumer: resume from your offset")
        except TimeoutError:
            transport = self.ws._req.transport if self.ws._req is not None else None
            if transport is not None:
                transport.abort()

    def _write_now(self, frame: str) -> bool:
        """Write a text frame straight to the socket if its buffer has room: what ``send_str`` does
        for an uncompressed frame when it does not wait, without a coroutine and a writer task.
        False (nothing written) when the frame would take the buffer past ``WRITE_BUFFER`` or the
        socket is closing: the outbox queues it, and counts it until it is sent."""
        t = self.transport
        if t is None or self.ws.closed or t.is_closing():
            return False
        data = frame.encode()
        if t.get_write_buffer_size() + len(data) > WRITE_BUFFER:
            return False  # a large frame or a full buffer: the outbox counts it until it drains
        t.write(text_frame_head(len(data)) + data)
        return True

    def send(self, frame: str) -> None:
        if not self.outbox.force(frame) and not self.outbox.closed:
            # not even control frames drain: the peer is not reading. It resumes from its offsets;
            # ``run`` stops reading its frames and closes with 4408.
            self.slow = True
            self.outbox.close()

    def send_error(self, err: HubError, id: int | str | None = None) -> None:
        self.hub.counters.errors += 1
        self.send(p.error_frame(err, id))

    async def handle(self, frame: str) -> None:
        try:
            msg = p.decode(frame)
        except HubError as e:
            rid, sid = p.peek(frame)  # a refused frame's error still names its request
            e.stream = e.stream or sid
            self.send_error(e, rid)
            return
        sid = getattr(msg, "stream", None)
        prev = self.gates.get(sid) if isinstance(sid, str) else None
        if prev is not None and isinstance(sid, str):
            await self.queued.acquire()
            mine = self.gates[sid] = asyncio.get_running_loop().create_future()
            self.spawn(self._in_order(sid, prev, mine, msg))
            return
        if type(msg) is p.Append:  # the common frame, without ``dispatch``'s chain of tests
            try:
                await self.append(msg, None)
            except HubError as e:
                self.send_error(e, msg.id)
            return
        await self.dispatch(msg, None)

    async def _in_order(
        self, sid: str, prev: asyncio.Future[None], mine: asyncio.Future[None], msg: p.ClientMsg
    ) -> None:
        owned = False
        try:
            await prev
            owned = await self.dispatch(msg, mine)
        finally:
            self.queued.release()
            if not owned:
                self._open_gate(sid, mine)

    def _open_gate(self, sid: str, gate: asyncio.Future[None]) -> None:
        """The op holding ``gate`` has started: the next op on ``sid`` may start. The op's own first
        step (an append's offset assignment) runs before anything this wakes, as tasks run in order."""
        if not gate.done():
            gate.set_result(None)
        if self.gates.get(sid) is gate:
            del self.gates[sid]

    def _gate(self, sid: str, gate: asyncio.Future[None] | None) -> asyncio.Future[None]:
        """A gate that holds back later ops on ``sid`` until this op's create is done."""
        if gate is None:
            gate = self.gates[sid] = asyncio.get_running_loop().create_future()
        return gate

    async def dispatch(self, msg: p.ClientMsg, gate: asyncio.Future[None] | None) -> bool:
        """Start ``msg``. True if it took over ``gate`` (a create opens it when it is done)."""
        try:
            if isinstance(msg, p.Append):
                return await self.append(msg, gate)
            elif isinstance(msg, p.Subscribe):
                await self.subscribe(msg)
            elif isinstance(msg, p.Unsubscribe):
                sub = self.subs.pop(msg.stream, None)
                if sub is not None:
                    sub.stop()
                self.send(p.encode(p.Unsubscribed(msg.stream)))
            elif isinstance(msg, p.Ping):
                self.send(p.encode(p.Pong(msg.t)))
            elif isinstance(msg, p.Cancel):
                self.grant.check("cancel", msg.stream)
                await self.hub.cancel(msg.stream)
                if msg.id is not None:
                    s = await self.hub.get(msg.stream)
                    self.send(p.encode(p.Ack(msg.id, msg.stream, s.next_offset)))
            elif isinstance(msg, p.Watch):
                await self.watch(msg.chat)
            elif isinstance(msg, p.Unwatch):
                if self.chats is not None and self._watching and msg.chat in self._watching:
                    self._watching.discard(msg.chat)
                    self.chats.unwatch(msg.chat, self.on_chat_event)
            elif isinstance(msg, p.Create):
                self._task_op(msg.stream, self.control(msg, self._gate(msg.stream, gate)))
                return True
            elif isinstance(msg, p.Close):
                self._task_op(msg.stream, self.control(msg, None))
            else:
                self.spawn(self.control(msg, None))
        except HubError as e:
            self.send_error(e, getattr(msg, "id", None))
        return False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks.spawn(coro)

    def _task_op(self, stream_id: str, coro: Coroutine[Any, Any, Any]) -> None:
        """Run an op on ``stream_id`` in a task; until it has ended, later appends on the stream
        run in tasks too (``_tasked``): ops on one stream start in arrival order."""
        if self._tasked is None:
            self._tasked = {}
        self._tasked[stream_id] = self._tasked.get(stream_id, 0) + 1
        self.tasks.spawn(coro).add_done_callback(functools.partial(self._untask, stream_id))

    def _untask(self, stream_id: str, _: asyncio.Future[Any]) -> None:
        tasked = self._tasked
        if tasked is not None:
            n = tasked.get(stream_id, 0) - 1
            if n > 0:
                tasked[stream_id] = n
            else:
                tasked.pop(stream_id, None)

    # --- subscribers -------------------------------------------------------------------------

    async def subscribe(self, msg: p.Subscribe) -> None:
        self.grant.check("read", msg.stream)
        old = self.subs.pop(msg.stream, None)
        if old is not None:
            old.stop()  # a re-subscribe on the same connection replaces the old position
        if len(self.subs) >= self.hub.config.max_subscriptions:
            raise HubError(
                "too_many_subscriptions",
                f"at most {self.hub.config.max_subscriptions} subscriptions per connection",
                msg.stream,
            )
        s = await self.hub.get(msg.stream)
        epoch = s.epoch
        offset = s.next_offset if msg.from_ == "now" else msg.from_
        assert isinstance(offset, int)
        if msg.epoch is not None and msg.epoch != epoch:
            self.send(p.encode(p.Reset(msg.stream, epoch)))
            offset = 0
        if offset > s.next_offset:
            raise HubError(
                "offset_out_of_range",
                f"offset {offset} is past the end of the stream ({s.next_offset})",
                msg.stream,
            )
        status = cast(Status, s.status)
        self.send(p.encode(p.Subscribed(msg.stream, offset, epoch, s.next_offset, status, msg.id)))
        sub = self.subs[msg.stream] = self.hub.subscribe(
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

    async def watch(self, chat: str) -> None:
        check_chat_id(chat)
        if self.chats is None:
            raise HubError("unknown_op", "this hub does not serve chats")
        if self._watching is None:
            self._watching = set()
        if chat not in self._watching:
            if len(self._watching) >= self.hub.config.max_subscriptions:
                raise HubError("too_many_subscriptions", "watching too many chats on one connection")
            self._watching.add(chat)
            self.chats.watch(chat, self.on_chat_event)
        # snapshot after registering: an answer started in between shows up in both, never in neither
        self.send(p.encode(p.ChatSnapshot(chat, await snapshot(self.hub, chat, self.grant))))

    def on_chat_event(self, ev: p.ChatEvent) -> None:
        if self.grant.can("read", ev.stream):
            self.send(p.encode(ev))

    # --- producers ---------------------------------------------------------------------------

    def on_cancel(self, stream_id: str) -> None:
        self.send(p.encode(p.CancelRequested(stream_id)))

    def forget_stream(self, stream_id: str) -> None:
        """The stream ended: no cancel can reach it any more (called by the hub)."""
        if self._produced is not None:
            self._produced.discard(stream_id)

    async def _produce(self, stream_id: str) -> None:
        """Watch for a Stop of a stream this connection produces (``append`` calls it only for a
        stream not watched yet: an ended one leaves the set)."""
        with contextlib.suppress(HubError):  # not there (yet): the append or create says why
            if (await self.hub.get(stream_id)).ended:
                return  # a retry to an ended stream: no cancel can reach it any more
        if self._produced is None:
            self._produced = set()
        if stream_id not in self._produced:
            self._produced.add(stream_id)
            self.hub.watch_cancel(stream_id, self.on_cancel)

    async def append(self, msg: p.Append, gate: asyncio.Future[None] | None) -> bool:
        self.grant.check("write", msg.stream)
        chunks = [msg.data.encode()] if isinstance(msg.data, str) else [d.encode() for d in msg.data]
        if self._produced is None or msg.stream not in self._produced:
            await self._produce(msg.stream)
        creating = None
        if msg.create and not await self.hub.exists(msg.stream):
            creating = self._gate(msg.stream, gate)  # later ops on the stream wait for the create
        await self.inflight.acquire()
        if not msg.create and not (self._tasked and msg.stream in self._tasked):
            # the common case, without a task: the offset assigned now, the ack sent by a callback
            try:
                pending = self.hub.append_nowait(msg.stream, chunks, msg.producer, msg.seq)
            except HubError as e:
                self.inflight.release()
                self.send_error(e, msg.id)
                return False
            except Exception as e:  # not the storage's own error (an OSError): this append fails alone
                self.inflight.release()
                log.exception("append to %r failed", msg.stream)
                self.send_error(HubError("storage_error", f"append failed: {e!r}", msg.stream), msg.id)
                return False
            if pending is not None:
                if pending.future is None:
                    self._durable(msg, pending)
                else:
                    pending.future.add_done_callback(functools.partial(self._durable, msg, pending))
                return False
        # Started now, in arrival order: the offset is assigned before the task's first await.
        self._task_op(msg.stream, self._append(msg, chunks, creating))
        return creating is not None

    def _durable(self, msg: p.Append, pending: PendingAppend, _: asyncio.Future[None] | None = None) -> None:
        """``append_nowait``'s append is durable (or failed): count it, hold the stream, ack."""
        try:
            err = pending.finish()
            if self.outbox.closed:
                return  # the connection is gone (and released its streams): no hold, nobody to ack
            if err is not None:
                self.send_error(err, msg.id)
            elif not self.hub.hold_now(pending.stream, self):
                self.spawn(self._hold_and_ack(msg, pending.result))  # a shared engine's lease first
            else:
                self._ack(msg, pending.result)
        finally:
            self.inflight.release()

    async def _hold_and_ack(self, msg: p.Append, res: AppendResult) -> None:
        await self.hub.hold(msg.stream, self)
        self._ack(msg, res)

    def _ack(self, msg: p.Append, res: AppendResult) -> None:
        cancelled = msg.stream in self.hub.cancel_requested
        self.send(p.encode(p.Ack(msg.id, msg.stream, res.offset, res.count, res.duplicate, cancelled)))

    async def _append(
        self, msg: p.Append, chunks: list[bytes], creating: asyncio.Future[None] | None
    ) -> None:
        try:
            if creating is not None:
                try:
                    await self.hub.create(msg.stream, exist_ok=True)
                finally:
                    self._open_gate(msg.stream, creating)
            res = await self.hub.append(msg.stream, chunks, msg.producer, msg.seq, create=msg.create)
            if not self.hub.holds(msg.stream, self):  # the producer is here: no lease runs while it stays
                await self.hub.hold(msg.stream, self)
            self._ack(msg, res)
        except HubError as e:
            self.send_error(e, msg.id)
        finally:
            self.inflight.release()

    async def control(self, msg: p.ClientMsg, gate: asyncio.Future[None] | None) -> None:
        try:
            if isinstance(msg, p.Create):
                try:
                    self.grant.check("write", msg.stream)
                    await self._produce(msg.stream)
                    s = await self.hub.create(
                        msg.stream, ttl=msg.ttl, labels=msg.labels, exist_ok=msg.exist_ok
                    )
                finally:
                    if gate is not None:
                        self._open_gate(msg.stream, gate)
                await self.hub.hold(s, self)
                self.send(p.encode(p.Ack(msg.id, msg.stream, s.next_offset)))
            elif isinstance(msg, p.Close):
                self.grant.check("write", msg.stream)
                s = await self.hub.close(msg.stream, msg.status, msg.error)
                self.send(p.encode(p.Ack(msg.id, msg.stream, s.next_offset)))
        except HubError as e:
            self.send_error(e, getattr(msg, "id", None))


async def close_all(hub: Hub) -> None:
    """Graceful shutdown: tell every client we are going away (they resume elsewhere or later)."""
    for conn in list(hub.connections):
        if isinstance(conn, Connection):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=CloseCode.GOING_AWAY, message=b"server shutting down")
