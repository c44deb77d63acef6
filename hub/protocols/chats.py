"""Chats: a conversation is the streams named ``chat/<chat>/<answer>``, one per assistant answer.

    GET    /chats/{chat}?limit=N   {"chat", "streams": [{"stream", "status", "error", "next", "epoch",
                                   "created", "closed", "labels"}, ...]}: oldest first, at most the newest
                                   N (default 200, at most 1000), only streams the caller may read
    DELETE /chats/{chat}           delete every stream of the chat (needs write on each); 204
    WS {"op": "watch", "chat"}     a ``chat`` snapshot, then a ``chat_event`` (created / ended /
                                   deleted) the moment any device starts, finishes or removes an answer

So a page that reloads, or a second device, finds the live answer of a chat and attaches to it
without any bookkeeping of the app's own. An unknown chat is an empty list, not a 404. A chat
expires with its streams (their TTL); deleting the chat deletes them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, cast

import msgspec
from aiohttp import web

from hub.core.auth import Grant, bearer
from hub.core.errors import HubError
from hub.core.registry import Registry
from hub.core.service import HUB, Hub
from hub.protocols.native.messages import ChatEvent, ChatStream
from storage import Status, StreamHandle

routes = web.RouteTableDef()

_CHAT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


def check_chat_id(chat: str) -> str:
    if not _CHAT.match(chat):
        raise HubError("bad_request", "chat id must be 1-64 letters, digits, - or _")
    return chat


def chat_of(stream_id: str) -> str | None:
    parts = stream_id.split("/", 2)
    if len(parts) == 3 and parts[0] == "chat" and parts[2] and _CHAT.match(parts[1]):
        return parts[1]
    return None


def describe(s: StreamHandle) -> ChatStream:
    info = s.info()
    return ChatStream(
        info.id, cast(Status, info.status), info.chunks, info.created, info.closed, info.error, info.labels
    )


async def snapshot(hub: Hub, chat: str, grant: Grant, limit: int = DEFAULT_LIMIT) -> list[ChatStream]:
    return [describe(s) for s in await chat_streams_of(hub, chat, grant, limit)]


async def chat_streams_of(
    hub: Hub, chat: str, grant: Grant, limit: int = DEFAULT_LIMIT
) -> list[StreamHandle]:
    """The chat's streams the grant may read, oldest first, at most the newest ``limit``."""
    ids = [i for i in await hub.list_streams(f"chat/{chat}/") if grant.can("read", i)]
    out = []
    for sid in ids[-limit:]:  # the demo's <NNNN-ms> names sort in creation order
        try:
            out.append(await hub.get(sid))
        except HubError:
            continue  # deleted or expired between the listing and the read
    out.sort(key=lambda s: (s.meta.created, s.id))
    return out


class ChatWatchers:
    """Who watches which chat; fed by the store's create / end / delete hooks."""

    def __init__(self, hub: Hub) -> None:
        self.watchers: Registry[str] = Registry()
        hub.watch(
            created=lambda s: self._emit(s.id, lambda c: self._event(c, "created", s)),
            ended=lambda s: self._emit(s.id, lambda c: self._event(c, "ended", s)),
            deleted=lambda sid: self._emit(sid, lambda c: ChatEvent(c, "deleted", sid)),
        )

    @staticmethod
    def _event(chat: str, kind: Literal["created", "ended"], s: StreamHandle) -> ChatEvent:
        d = describe(s)
        return ChatEvent(chat, kind, s.id, d.status, d.next, d.error, d.labels)

    def _emit(self, stream_id: str, make: Callable[[str], ChatEvent]) -> None:
        chat = chat_of(stream_id)
        if chat and self.watchers.has(chat):
            self.watchers.emit(chat, make(chat))

    def watch(self, chat: str, cb: Callable[[ChatEvent], None]) -> None:
        self.watchers.add(chat, cb)

    def unwatch(self, chat: str, cb: Callable[[ChatEvent], None]) -> None:
        self.watchers.discard(chat, cb)


CHATS = web.AppKey("chats", ChatWatchers)


def setup(app: web.Application) -> None:
    app[CHATS] = ChatWatchers(app[HUB])
    app.router.add_routes(routes)


@routes.get("/chats/{chat}")
async def chat_streams(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    chat = check_chat_id(request.match_info["chat"])
    raw = request.query.get("limit", "")
    try:
        limit = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise HubError("bad_request", f"limit must be an integer, not {raw[:40]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HubError("bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    grant = hub.auth.grant(bearer(request))
    items = []
    for s in await chat_streams_of(hub, chat, grant, limit):
        item = msgspec.to_builtins(describe(s))
        item.setdefault("closed", None)
        item.setdefault("error", None)
        item.setdefault("labels", {})
        item["epoch"] = s.epoch
        items.append(item)
    body = {"chat": chat, "streams": items}
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")


@routes.delete("/chats/{chat}")
async def delete_chat(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    chat = check_chat_id(request.match_info["chat"])
    grant = hub.auth.grant(bearer(request))
    ids = await hub.list_streams(f"chat/{chat}/")
    for sid in ids:
        grant.check("write", sid)  # all or nothing: refuse before deleting anything
    for sid in ids:
        try:
            await hub.delete(sid)
        except HubError as e:
            if e.code not in ("stream_not_found", "stream_gone"):
                raise
    return web.Response(status=204)
