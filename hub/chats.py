"""Read-only chat listing: the streams of one chat, in order, so a page can re-render a conversation.

GET /chats/{chat}?limit=N    {"chat": id, "streams": [{"stream", "status", "error", "next", "epoch",
                             "created", "closed", "labels"}, ...]}, oldest first, at most the newest N
                             (default 200, at most 1000); only streams the caller may read.

A chat is the streams under the prefix ``chat/<chat>/`` (the layout ``POST /demo/ask`` writes; the
``prompt`` label holds the question). An unknown chat is an empty list, not a 404, so a client can
tell "no messages yet" from "this hub has no /chats endpoint".
"""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from storage import StorageError

from .protocol import HubError
from .state import HUB
from .ws import bearer

routes = web.RouteTableDef()

_CHAT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
DEFAULT_LIMIT = 200
MAX_LIMIT = 1000


@routes.get("/chats/{chat}")
async def chat_streams(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    chat = request.match_info["chat"]
    if not _CHAT.match(chat):
        raise HubError("bad_request", "chat id must be 1-64 letters, digits, - or _")
    raw = request.query.get("limit", "")
    try:
        limit = int(raw) if raw else DEFAULT_LIMIT
    except ValueError:
        raise HubError("bad_request", f"limit must be an integer, not {raw[:40]!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise HubError("bad_request", f"limit must be between 1 and {MAX_LIMIT}")
    grant = hub.auth.grant(bearer(request))
    items = []
    ids = [i for i in hub.store.list(f"chat/{chat}/") if grant.can("read", i)]
    # ids sort in creation order for the demo's <NNNN-ms> names: open only the newest ``limit``
    for sid in ids[-limit:]:
        try:
            info = hub.store.get(sid).info()
        except StorageError:
            continue  # deleted or expired between the listing and the read
        items.append(
            {
                "stream": sid,
                "status": info.status,
                "error": info.error,
                "next": info.chunks,
                "epoch": info.epoch,
                "created": info.created,
                "closed": info.closed,
                "labels": info.labels,
            }
        )
    items.sort(key=lambda i: (i["created"], i["stream"]))
    body = {"chat": chat, "streams": items}
    return web.Response(body=msgspec.json.encode(body), content_type="application/json")
