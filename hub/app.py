"""The aiohttp application: routes, error mapping, startup and graceful shutdown."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from hub import demo
from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.service import HUB, Hub
from hub.protocols import admin, aisdk, chats, durable
from hub.protocols.http_errors import errors
from hub.protocols.native import http as http_api
from hub.protocols.native.ws import close_all, ws_handler

log = logging.getLogger("hub")
STATIC = Path(__file__).parent / "static"


CORS_PATHS = ("/streams", "/chats")
CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Producer-Id, Producer-Seq, Last-Event-ID",
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def _cors_origin(request: web.Request) -> str | None:
    """The Access-Control-Allow-Origin for this request, or None (no CORS for it)."""
    origin = request.headers.get("Origin")
    prefix = request.app[HUB].config.aisdk_prefix.rstrip("/")
    if origin is None or not request.path.startswith((*CORS_PATHS, prefix)):
        return None
    allowed = [o.rstrip("/") for o in request.app[HUB].config.allowed_origins]
    if not allowed:
        return "*"
    return origin if origin.rstrip("/") in allowed else None


@web.middleware
async def cors_preflight(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """CORS for the stream and chat HTTP APIs, so a page on another origin can use them (and SSE).
    Credentials are bearer tokens, never cookies, so no origin can act with a user's ambient
    authority; with ``allowed_origins`` set, only those origins are let in. (Durable Streams under
    /v1 sends its own CORS headers.)"""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        allow = _cors_origin(request)
        if allow is not None:
            return web.Response(status=204, headers={"Access-Control-Allow-Origin": allow, **CORS_HEADERS})
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches SSE responses, whose headers go out before the handler ends."""
    allow = _cors_origin(request)
    if allow is not None:
        response.headers.setdefault("Access-Control-Allow-Origin", allow)
        response.headers.setdefault("Vary", "Origin")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def make_app(config: Config) -> web.Application:
    admin_token = config.admin_token or secrets.token_urlsafe(18)
    config.admin_token = admin_token
    auth = Auth(
        config.jwt_secret, admin_token, config.jwt_algorithm, config.jwt_issuer, config.allowed_origins
    )
    app = web.Application(
        middlewares=[cors_preflight, errors], client_max_size=config.max_message_bytes + 4096
    )
    app.on_response_prepare.append(cors_headers)
    hub = app[HUB] = Hub(config, auth)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await hub.start()
        yield
        await hub.stop()

    async def on_shutdown(app: web.Application) -> None:
        hub.closing = True
        await close_all(hub)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    app.router.add_get("/ws", ws_handler)
    app.router.add_routes(http_api.routes)
    durable.setup(app)  # the Durable Streams protocol on /v1/stream/{path}
    app.router.add_routes(admin.routes)
    chats.setup(app)  # /chats/{chat} and the WebSocket "watch" op
    aisdk.setup(app, config)  # the AI SDK's chat transports under config.aisdk_prefix
    app.router.add_get("/healthz", healthz)
    demo.setup(app, config)
    app.router.add_static("/static/", STATIC, show_index=False)
    return app
