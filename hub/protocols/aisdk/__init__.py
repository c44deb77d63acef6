"""The Vercel AI SDK's transports, served by the hub: ``DefaultChatTransport`` over HTTP
(``http``: send, resume, stop) and ``WebSocketChatTransport`` (``ws``). ``chunks`` maps an
answer's chunks to UI message chunks; ``answers`` finds a chat's active answer and starts new
ones with the configured generator (``hub.producers.generator``)."""

from __future__ import annotations

from aiohttp import web

from hub.core.config import Config
from hub.producers.generator import Generator


def setup(app: web.Application, config: Config) -> None:
    from hub.protocols import cors
    from hub.protocols.aisdk import http, ws

    gen: Generator | None = None
    if config.generator:
        from hub.producers.generator import load

        gen = load(config.generator)
    elif config.llm_base_url:
        from hub.producers.openai_compat import from_config

        gen = from_config(config)
    # a page on another origin (a Vite dev server, say) may call these with a bearer token
    app[cors.EXTRA] = (cors.Policy((config.aisdk_prefix.rstrip("/"),), "Authorization, Content-Type", 600),)
    http.setup(app, config.aisdk_prefix, gen)
    ws.setup(app, config.aisdk_prefix)
