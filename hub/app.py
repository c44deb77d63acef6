"""The aiohttp application: routes, error mapping, startup and graceful shutdown."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from hub import demo
from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.service import HUB, Hub
from hub.protocols import admin, aisdk, analytics, chats, cors, durable, health
from hub.protocols.http_errors import errors
from hub.protocols.native import http as http_api
from hub.protocols.native.ws import close_all, setup_heartbeat, ws_handler

log = logging.getLogger("hub")
STATIC = Path(__file__).parent / "static"


def make_app(config: Config) -> web.Application:
    admin_token = config.admin_token or secrets.token_urlsafe(18)
    config.admin_token = admin_token
    auth = Auth(
        config.jwt_secret, admin_token, config.jwt_algorithm, config.jwt_issuer, config.allowed_origins
    )
    app = web.Application(
        middlewares=[cors.preflight, errors], client_max_size=config.max_message_bytes + 4096
    )
    app.on_response_prepare.append(cors.on_prepare)
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
    if config.heartbeat_s:
        setup_heartbeat(app, config.heartbeat_s)
    app.router.add_routes(http_api.routes)
    durable.setup(app)  # the Durable Streams protocol on /v1/stream/{path}
    app.router.add_routes(admin.routes)
    analytics.setup(app)  # the dashboard (/admin) and its JSON, /admin/usage
    chats.setup(app)  # /chats/{chat} and the WebSocket "watch" op
    app.router.add_routes(health.routes)  # /healthz, /readyz
    aisdk.setup(app, config)  # the AI SDK's chat transports under config.aisdk_prefix
    demo.setup(app, config)
    app.router.add_static("/static/", STATIC, show_index=False)
    return app
