"""A chat's answers as the AI SDK sees them: the active one, the history, starting a new one.

The chat is the hub's own (``hub.protocols.chats``: streams ``chat/<chat>/<answer>``); the user
message an answer replies to is its ``user`` label. So the answer list and the answers are one
store, and an answer's close is at once "ended" and "saved": a resume that finds no open answer
(204) can always find the finished one in the history.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web

from hub.core.auth import Grant, bearer
from hub.core.errors import HubError
from hub.core.service import Hub
from hub.producers.generator import ChatRequest, Generator, Message, Runner
from hub.protocols.aisdk.chunks import is_ui, message_id
from hub.protocols.chats import chat_streams_of, check_chat_id
from storage import StreamHandle

MAX_HISTORY = 100  # answers read back into a generator's conversation
MAX_USER_CHARS = 32_000


def token_of(request: web.Request, cookie: str | None) -> str | None:
    """Bearer header, ``?token=``, the ``cookie`` when configured, or a WebSocket subprotocol
    ``bearer.<token>`` (browsers' WebSocket can set neither headers nor, cross-site, cookies)."""
    tok = bearer(request)
    if tok:
        return tok
    if cookie and request.cookies.get(cookie):
        return request.cookies[cookie]
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        if proto.strip().startswith("bearer."):
            return proto.strip()[7:]
    return None


async def answers(hub: Hub, chat: str, grant: Grant) -> list[StreamHandle]:
    return await chat_streams_of(hub, check_chat_id(chat), grant, MAX_HISTORY)


async def active(hub: Hub, chat: str, grant: Grant, after: str | None = None) -> StreamHandle | None:
    """The chat's open answer (the newest one); with ``after`` (an answer the client already has),
    the newest answer after it, open or not."""
    items = await answers(hub, chat, grant)
    if after is not None:
        names = [c.id.rsplit("/", 1)[-1] for c in items]
        later = items[names.index(after) + 1 :] if after in names else items
        return later[-1] if later else None
    return items[-1] if items and items[-1].status == "open" else None


async def answer_text(hub: Hub, s: StreamHandle) -> tuple[str, str]:
    """(text, reasoning) of a stored answer."""
    raw: list[bytes] = []
    while len(raw) < s.next_offset:
        got = await hub.read(s, len(raw), 10_000)
        if not got:
            break
        raw += got
    if not is_ui(s.meta.labels):
        return b"".join(raw).decode("utf-8", "replace"), ""
    text, reasoning = [], []
    for c in raw:
        try:
            d = msgspec.json.decode(c)
        except msgspec.DecodeError:
            continue
        if isinstance(d, dict) and d.get("type") == "text-delta":
            text.append(str(d.get("delta", "")))
        elif isinstance(d, dict) and d.get("type") == "reasoning-delta":
            reasoning.append(str(d.get("delta", "")))
    return "".join(text), "".join(reasoning)


async def ui_messages(hub: Hub, chat: str, grant: Grant) -> tuple[list[dict[str, Any]], str | None]:
    """The chat's ended answers as AI SDK UI messages, and the last one's name (``after``). The
    open answer's user message is included; the answer itself comes by resume."""
    out: list[dict[str, Any]] = []
    last: str | None = None
    for c in await answers(hub, chat, grant):
        name = c.id.rsplit("/", 1)[-1]
        user = c.meta.labels.get("user")
        if user is not None:
            out.append({"id": f"user-{name}", "role": "user", "parts": [{"type": "text", "text": user}]})
        if c.status == "open":
            break
        try:
            text, reasoning = await answer_text(hub, c)
        except HubError:
            continue  # deleted meanwhile
        parts: list[dict[str, Any]] = []
        if reasoning:
            parts.append({"type": "reasoning", "text": reasoning, "state": "done"})
        parts.append({"type": "text", "text": text, "state": "done"})
        out.append({"id": message_id(c.id), "role": "assistant", "parts": parts})
        last = name
    return out, last


async def history(hub: Hub, chat: str, grant: Grant, user: str, regenerate: bool) -> list[Message]:
    msgs: list[Message] = []
    items = await answers(hub, chat, grant)
    if regenerate and items:
        items = items[:-1]  # the answer being regenerated is not part of the conversation
    for c in items:
        if c.status == "open":
            continue
        if c.meta.labels.get("user") is not None:
            msgs.append(Message("user", c.meta.labels["user"]))
        try:
            text, _ = await answer_text(hub, c)
        except HubError:
            continue
        msgs.append(Message("assistant", text))
    msgs.append(Message("user", user))
    return msgs


def user_text(messages: list[Any]) -> str:
    """The text of the last user message in the AI SDK's ``messages`` (parts of type text)."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            parts = m.get("parts") or []
            return "".join(
                str(p.get("text", "")) for p in parts if isinstance(p, dict) and p.get("type") == "text"
            )[:MAX_USER_CHARS]
    raise HubError("bad_request", "messages has no user message")


async def start(
    hub: Hub,
    gen: Generator,
    tasks: set[asyncio.Task[Any]],
    grant: Grant,
    chat: str,
    messages: list[Any],
    trigger: str,
    body: dict[str, Any],
) -> StreamHandle:
    """Create the answer stream and start the generator on it; returns at once."""
    check_chat_id(chat)
    regenerate = trigger == "regenerate-message"
    user = user_text(messages)
    # milliseconds first, so names sort in creation order; a random tail, so two never collide
    sid = f"chat/{chat}/{int(time.time() * 1000):013d}-{secrets.token_hex(3)}"
    grant.check("write", sid)
    convo = await history(hub, chat, grant, user, regenerate)
    s = await hub.create(sid, labels={"chat": chat, "user": user, "format": "ui"})

    async def append(stream: str, chunks: list[bytes], producer: str, seq: int) -> None:
        await hub.append(stream, chunks, producer, seq)

    async def close(stream: str, status: str, error: str | None) -> None:
        await hub.close(stream, status, error)  # type: ignore[arg-type]

    req = ChatRequest(chat, sid, convo, trigger, body, messages)
    runner = Runner(gen, req, message_id(sid), append, close)
    hub.watch_cancel(sid, runner.stop)
    await hub.hold(sid, runner)  # the runner is the answer's producer: its lease lapses only with it
    task = asyncio.create_task(runner.run())
    tasks.add(task)

    def done(t: asyncio.Task[Any]) -> None:
        tasks.discard(t)
        hub.unwatch_cancel(sid, runner.stop)
        hub.release(runner)

    task.add_done_callback(done)
    return s
