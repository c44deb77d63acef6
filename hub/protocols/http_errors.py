"""The one HTTP error middleware: a ``HubError`` raised by any handler (the service has already made
every storage error one) becomes ``{"error": {"code", "message"}}`` with the status of the code's
table and the error's headers. A handler of another protocol marks its requests with its dialect
(``use_dialect``), so the same failure is answered as that protocol documents it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web

from hub.core.errors import Dialect, HubError, for_dialect
from hub.core.service import HUB

DIALECT = web.RequestKey("error_dialect", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def use_dialect(request: web.Request, dialect: Dialect) -> None:
    request[DIALECT] = dialect


def error_response(err: HubError) -> web.Response:
    body = msgspec.json.encode({"error": {"code": err.code, "message": err.message}})
    headers = {"Content-Type": "application/json", "Cache-Control": "no-store", **err.headers}
    return web.Response(status=err.status, body=body, headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HubError as e:
        request.app[HUB].counters.errors += 1
        dialect: Dialect = "durable" if request.get(DIALECT) == "durable" else "native"
        return error_response(for_dialect(e, dialect))
