"""The AI SDK's HTTP chat endpoints (``DefaultChatTransport``), under a configurable prefix.

    POST {prefix}                    send: ``{id, messages, trigger, messageId, ...body}`` starts an
                                     answer with the hub's generator; 200 SSE of it (as below)
    GET  {prefix}/{chat}/stream      resume: 204 when the chat has no open answer; else 200 SSE of the
                                     open answer from its first chunk, then live, ``data: [DONE]``
                                     at the end. ``?after=<answer>``: the newest answer after that
                                     one, open or ended (no race with an answer ending meanwhile)
    POST {prefix}/{chat}/stop        cancel the open answer's producer; waits (up to 5 s) until the
                                     answer is closed with its partial kept; 200, or 204 if none
    GET  {prefix}/{chat}/messages    the chat's ended answers as UI messages + ``after`` (for
                                     ``useChat({messages})`` on load, then resume with ``after``)

SSE: ``data: {UI message chunk}\\n\\n`` (hub.protocols.aisdk.chunks), the ``x-vercel-ai-ui-message-
stream: v1`` header, ``: keep-alive`` comments. The client cannot say where it is, so a resume is
always a full replay of the answer (the AI SDK's ``resumeStreamIsReplay``); the replay and the live
tail are one fan-out subscription from offset 0, so no chunk is doubled or skipped at the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import msgspec
from aiohttp import web

from hub.core.errors import HubError
from hub.core.fanout import Format, texts
from hub.core.service import HUB, Hub
from hub.producers.generator import Generator
from hub.protocols.aisdk import answers
from hub.protocols.aisdk.chunks import SSE_DONE, SSE_HEADERS, Translator, sse
from hub.protocols.chats import CHATS
from hub.protocols.native.messages import ChatEvent
from hub.protocols.sse import pump as sse_pump
from storage import CloseInfo, StreamHandle

GENERATOR = web.AppKey("aisdk_generator", object)
TASKS = web.AppKey("aisdk_tasks", set)
STOP_WAIT_S = 5.0


def generator_of(app: web.Application) -> Generator | None:
    return cast("Generator | None", app.get(GENERATOR))


class UiSse(Format):
    """Fan-out frames as AI SDK SSE for one answer (one instance per response)."""

    transport = "aisdk"

    def __init__(self, t: Translator) -> None:
        self.t = t

    def chunks(self, stream: str, offset: int, data: list[bytes]) -> str:
        return sse(self.t.chunks(offset, texts(data)))

    def end(self, stream: str, offset: int, info: CloseInfo) -> str:
        return sse(self.t.end(offset, info)) + SSE_DONE

    def error(self, stream: str, code: str, message: str) -> str:
        return f"data: {self.t.error(message)}\n\n" + SSE_DONE


class SendBody(msgspec.Struct):
    id: str
    messages: list[Any]
    trigger: str = "submit-message"
    messageId: str | None = None  # noqa: N815 - the AI SDK's field name


def _grant(request: web.Request) -> Any:
    hub = request.app[HUB]
    return hub.auth.grant(answers.token_of(request, hub.config.aisdk_cookie))


async def serve(request: web.Request, hub: Hub, s: StreamHandle) -> web.StreamResponse:
    resp = web.StreamResponse(headers=SSE_HEADERS)
    await resp.prepare(request)
    fmt = UiSse(Translator(s.id, s.meta.labels))
    await sse_pump(
        resp, hub, s, 0, fmt, keepalive_s=hub.config.aisdk_keepalive_s, preamble=": stream-open\n\n"
    )
    return resp


async def send(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    gen = generator_of(request.app)
    if gen is None:
        raise HubError("no_generator", "this hub has no generator (serve --generator or --llm-base-url)")
    try:
        body = msgspec.json.decode(await request.read(), type=SendBody)
        extra = msgspec.json.decode(await request.read(), type=dict[str, Any])
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise HubError("bad_request", f"expected the AI SDK's {{id, messages, trigger}}: {e}") from None
    if body.trigger not in ("submit-message", "regenerate-message"):
        raise HubError("bad_request", "trigger must be submit-message or regenerate-message")
    for k in ("id", "messages", "trigger", "messageId"):
        extra.pop(k, None)
    s = await answers.start(
        hub,
        gen,
        request.app[TASKS],
        _grant(request),
        body.id,
        body.messages,
        body.trigger,
        extra,
    )
    return await serve(request, hub, s)


async def resume(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB]
    grant = _grant(request)
    s = await answers.active(hub, request.match_info["chat"], grant, request.query.get("after"))
    if s is None:
        return web.Response(status=204)
    return await serve(request, hub, s)


async def stop(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    grant = _grant(request)
    chat = request.match_info["chat"]
    s = await answers.active(hub, chat, grant)
    if s is None:
        return web.Response(status=204)
    grant.check("cancel", s.id)
    ended = asyncio.Event()

    def on_event(ev: ChatEvent) -> None:
        if ev.stream == s.id and ev.event in ("ended", "deleted"):
            ended.set()

    watchers = request.app[CHATS]
    watchers.watch(chat, on_event)
    try:
        told = await hub.cancel(s.id)
        if not s.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), STOP_WAIT_S)
    finally:
        watchers.unwatch(chat, on_event)
    body = {"stream": s.id, "producer_notified": told, "status": s.status}
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


async def messages(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    msgs, after = await answers.ui_messages(hub, request.match_info["chat"], _grant(request))
    return web.Response(
        body=msgspec.json.encode({"messages": msgs, "after": after}), content_type="application/json"
    )


def setup(app: web.Application, prefix: str, gen: Generator | None) -> None:
    tasks: set[asyncio.Task[Any]] = set()
    app[TASKS] = tasks
    if gen is not None:
        app[GENERATOR] = gen
    p = prefix.rstrip("/")
    app.router.add_post(p, send)
    app.router.add_get(p + "/{chat}/stream", resume)
    app.router.add_post(p + "/{chat}/stop", stop)
    app.router.add_get(p + "/{chat}/messages", messages)

    async def stop_tasks(app: web.Application) -> None:
        for t in list(tasks):
            t.cancel()
        for t in list(tasks):
            with contextlib.suppress(BaseException):
                await t

    app.on_shutdown.insert(0, stop_tasks)
