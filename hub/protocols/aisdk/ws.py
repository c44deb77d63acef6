"""The server of the AI SDK's ``WebSocketChatTransport`` (``ai`` >= 7): ``GET {prefix}/ws``.

One socket multiplexes requests, each named by the client's ``requestId``:

    client -> hub  {type: "send", requestId, id, trigger, messageId?, messages, headers, body}
                   {type: "resume", requestId, id, lastSequence?, headers, body}
                   {type: "abort", requestId}
    hub -> client  {type: "start", requestId}   then {type: "chunk", requestId, sequence, chunk} ...
                   {type: "end", requestId} | {type: "error", requestId, errorText}
                   {type: "no-active", requestId}   (a resume when the chat has no open answer)

``sequence`` is the UI chunk's position in the answer (``chunks.Translator``: the answer's offset
plus the adapter's lead chunks), so it is contiguous from 0 and the same on every replay: the
client's rules (drop ``sequence <= last``, fail on a gap) hold, and ``resume{lastSequence}``
continues right after it. ``abort`` stops the request and asks the answer's producer to stop (the
partial is kept). Auth, as browsers can: ``?token=`` (the transport's ``params``), a cookie when
``aisdk_cookie`` is set, a subprotocol ``bearer.<token>``, or ``authorization`` in the frame's
``headers`` for that request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from hub.core.auth import Grant
from hub.core.errors import HubError
from hub.core.fanout import Format, Outbox, Subscription, texts
from hub.core.service import HUB, Hub
from hub.protocols.aisdk import answers
from hub.protocols.aisdk.chunks import Translator
from hub.protocols.aisdk.http import TASKS, generator_of
from storage import CloseInfo, StreamHandle

log = logging.getLogger("hub.aisdk.ws")
SEP = "\x1e"  # between frames in one outbox entry; JSON text never holds a raw control character


class Send(msgspec.Struct, tag="send", tag_field="type"):
    requestId: str  # noqa: N815 - the AI SDK's field names
    id: str
    messages: list[Any]
    trigger: str = "submit-message"
    messageId: str | None = None  # noqa: N815
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}


class Resume(msgspec.Struct, tag="resume", tag_field="type"):
    requestId: str  # noqa: N815
    id: str
    lastSequence: int | None = None  # noqa: N815
    headers: dict[str, str] = {}
    body: dict[str, Any] = {}


class Abort(msgspec.Struct, tag="abort", tag_field="type"):
    requestId: str  # noqa: N815


_decoder = msgspec.json.Decoder(Send | Resume | Abort)
_enc = msgspec.json.Encoder()


def frame(kind: str, rid: str, **extra: Any) -> str:
    return _enc.encode({"type": kind, "requestId": rid, **extra}).decode()


class WsFormat(Format):
    """Fan-out frames as the transport's ``chunk`` frames for one request."""

    transport = "aisdk"

    def __init__(self, t: Translator, rid: str, last: int) -> None:
        self.t, self.rid, self.last = t, rid, last
        self.head = '{"type":"chunk","requestId":' + _enc.encode(rid).decode() + ',"sequence":'

    def _frames(self, chunks: list[tuple[int, str]]) -> list[str]:
        return [f'{self.head}{seq},"chunk":{c}}}' for seq, c in chunks if seq > self.last]

    def chunks(self, stream: str, offset: int, data: list[bytes]) -> str:
        return SEP.join(self._frames(self.t.chunks(offset, texts(data))))

    def end(self, stream: str, offset: int, info: CloseInfo) -> str:
        tail = self.t.end(offset, info)
        frames = self._frames([c for c in tail if '"type":"error"' not in c[1]])
        if info.status == "error":
            frames.append(frame("error", self.rid, errorText=info.error or "the answer failed"))
        else:
            frames.append(frame("end", self.rid))
        return SEP.join(frames)

    def error(self, stream: str, code: str, message: str) -> str:
        return frame("error", self.rid, errorText=message)


class ChatSocket:
    def __init__(self, app: web.Application, ws: web.WebSocketResponse, grant: Grant | None) -> None:
        self.app, self.hub, self.ws, self.grant = app, app[HUB], ws, grant

        async def send(entry: str) -> None:
            for f in entry.split(SEP):
                if f:
                    await ws.send_str(f)

        self.outbox = Outbox(send, self.hub.config.outbox_bytes)
        self.requests: dict[str, tuple[Subscription, str, Grant]] = {}  # requestId -> (sub, answer, grant)

    def _grant(self, headers: dict[str, str]) -> Grant:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return self.hub.auth.grant(auth[7:].strip())
        if self.grant is None:
            raise HubError("unauthorized", "a token is required")
        return self.grant

    async def run(self) -> None:
        writer = asyncio.create_task(self.outbox.run())
        try:
            async for m in self.ws:
                if m.type != aiohttp.WSMsgType.TEXT:
                    break
                await self.handle(m.data)
                if self.outbox.closed:
                    break
        finally:
            for sub, _, _ in self.requests.values():
                sub.stop()
            self.requests.clear()
            self.outbox.close()
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    async def handle(self, text: str) -> None:
        try:
            msg = _decoder.decode(text)
        except (msgspec.ValidationError, msgspec.DecodeError) as e:
            rid = None
            with contextlib.suppress(Exception):
                rid = msgspec.json.decode(text).get("requestId")
            if isinstance(rid, str):
                self.outbox.force(frame("error", rid, errorText=f"invalid request: {e}"))
            return  # a frame without a requestId cannot be answered: the client would drop it
        try:
            if isinstance(msg, Abort):
                await self.abort(msg.requestId)
            elif isinstance(msg, Resume):
                grant = self._grant(msg.headers)
                s = await answers.active(self.hub, msg.id, grant)
                if s is None:
                    self.outbox.force(frame("no-active", msg.requestId))
                else:
                    self.attach(msg.requestId, s, msg.lastSequence, grant)
            else:
                gen = generator_of(self.app)
                if gen is None:
                    raise HubError("no_generator", "this hub has no generator")
                grant = self._grant(msg.headers)
                s = await answers.start(
                    self.hub,
                    gen,
                    self.app[TASKS],
                    grant,
                    msg.id,
                    msg.messages,
                    msg.trigger,
                    msg.body,
                )
                self.attach(msg.requestId, s, None, grant)
        except HubError as e:
            self.outbox.force(frame("error", msg.requestId, errorText=e.message))

    def attach(self, rid: str, s: StreamHandle, last: int | None, grant: Grant) -> None:
        t = Translator(s.id, s.meta.labels)
        last = -1 if last is None else last
        self.outbox.force(frame("start", rid))
        offset = min(max(0, last + 1 - t.lead), s.next_offset)
        old = self.requests.pop(rid, None)
        if old is not None:
            old[0].stop()
        sub = self.hub.subscribe(s, self.outbox, offset, fmt=WsFormat(t, rid, last))
        self.requests[rid] = (sub, s.id, grant)

        def done() -> None:
            if self.requests.get(rid, (None,))[0] is sub:
                del self.requests[rid]

        if sub.mode == "done":
            done()
        else:
            sub.on_done = done

    async def abort(self, rid: str) -> None:
        entry = self.requests.pop(rid, None)
        if entry is None:
            return
        sub, sid, grant = entry
        sub.stop()
        if grant.can("cancel", sid):  # the grant the request was made with
            with contextlib.suppress(HubError):
                await self.hub.cancel(sid)


async def handler(request: web.Request) -> web.StreamResponse:
    hub: Hub = request.app[HUB]
    hub.auth.check_origin(request.headers.get("Origin"), request.host)
    protos = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
    ws = web.WebSocketResponse(
        heartbeat=hub.config.heartbeat_s, max_msg_size=hub.config.max_message_bytes, protocols=protos[:1]
    )
    grant: Grant | None
    try:
        grant = hub.auth.grant(answers.token_of(request, hub.config.aisdk_cookie))
    except HubError:
        grant = None  # a frame's own authorization header may still grant its request
    await ws.prepare(request)
    sock = ChatSocket(request.app, ws, grant)
    hub.counters.connections_total += 1
    hub.connections.add(sock)
    try:
        await sock.run()
    finally:
        hub.connections.discard(sock)
    return ws


def setup(app: web.Application, prefix: str) -> None:
    app.router.add_get(prefix.rstrip("/") + "/ws", handler)
