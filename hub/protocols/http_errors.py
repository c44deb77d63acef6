"""The one HTTP error middleware: a ``HubError`` raised by any handler (the service has already made
every storage error one) becomes ``{"error": {"code", "message"}}`` with the status of the code's
table and the error's headers. A handler of another protocol marks its requests with its dialect
(``use_dialect``), so the same failure is answered as that protocol documents it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from hub.core.errors import Dialect, HubError, for_dialect
from hub.core.service import HUB

log = logging.getLogger("hub.http")
DIALECT = web.RequestKey("error_dialect", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def use_dialect(request: web.Request, dialect: Dialect) -> None:
    request[DIALECT] = dialect


def error_response(err: HubError) -> web.Response:
    body = msgspec.json.encode({"error": {"code": err.code, "message": err.message}})
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **err.headers}
    return web.Response(status=err.status, body=body, headers=headers)


def answers_own_errors(handler: Handler) -> Handler:
    """Mark a long-lived handler (a WebSocket's) that answers its own errors before it upgrades: the
    middleware then passes it through without a frame of its own under it (~0.3 KiB per connection
    for the connection's whole life). The mark survives aiohttp's wrapping (``update_wrapper``)."""
    handler.answers_own_errors = True  # type: ignore[attr-defined]
    return handler


@web.middleware
def errors(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    if getattr(handler, "answers_own_errors", False):
        return handler(request)
    return _errors(request, handler)


async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:  # aiohttp's own has a text/plain body: ours is JSON
        limit = request.app[HUB].config.max_message_bytes
        return answer(request, HubError("body_too_large", f"the body is over {limit} bytes"))
    except HubError as e:
        return answer(request, e)
    except ConnectionResetError:
        # the client went away mid-body: nothing to answer and nothing wrong with the hub, so no
        # traceback (the access log still has the request)
        log.debug("client reset %s %s mid-request", request.method, request.path)
        return answer(request, HubError("bad_request", "the connection was reset mid-request"))


def answer(request: web.Request, e: HubError) -> web.Response:
    request.app[HUB].counters.errors += 1
    dialect: Dialect = "durable" if request.get(DIALECT) == "durable" else "native"
    return error_response(for_dialect(e, dialect))
