"""The demo: a chat page at ``/`` and a built-in simulated model (the admin dashboard is
hub/protocols/analytics.py's, served with or without the demo).

``POST /demo/ask {"chat": id, "prompt": text}`` starts an answer in stream ``chat/<id>/<n>`` and
returns its id at once; the answer is produced by ``hub.producers.simulated.run_answer`` through the hub's
own WebSocket API, exactly as an external LLM backend would, so Stop, reload and resume are real.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
from aiohttp import web

from hub.core.config import Config
from hub.core.errors import HubError
from hub.core.service import HUB
from hub.core.tasks import TaskSet
from hub.producers.simulated import run_answer
from hub.protocols.chats import check_chat_id

STATIC = Path(__file__).parent / "static"  # the demo's pages; the browser library is hub/static
TASKS = web.AppKey("demo_tasks", TaskSet)
ANSWERING: web.AppKey[set[str]] = web.AppKey("demo_answering")  # streams whose answer task runs


def page(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    return handler


class Ask(msgspec.Struct):
    chat: str
    prompt: str
    rate: float = 70.0  # simulated tokens per second (tests speed it up)


def setup(app: web.Application, config: Config) -> None:
    if not config.demo:
        return
    tasks = app[TASKS] = TaskSet()
    answering: set[str] = set()
    app[ANSWERING] = answering
    app.router.add_get("/", page("index.html"))
    app.router.add_static("/demo/static/", STATIC, show_index=False)
    app.router.add_post("/demo/ask", ask)

    async def stop_tasks(app: web.Application) -> None:
        answers = list(answering)  # before aclose: each task takes its stream out as it ends
        await tasks.aclose()
        # aiohttp stops reading every connection before on_shutdown runs, so a cancelled answer's
        # own close over the WebSocket never arrives: end it here, durably, as the Producer would.
        hub = app[HUB]
        for stream in answers:
            with contextlib.suppress(HubError):
                if not (await hub.get(stream)).ended:
                    await hub.close(stream, "cancelled", "the hub shut down mid-answer")

    app.on_shutdown.insert(0, stop_tasks)


async def ask(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    try:
        body = msgspec.json.decode(await request.read(), type=Ask)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise HubError("bad_request", f"expected {{chat, prompt}}: {e}") from None
    check_chat_id(body.chat)
    prefix = f"chat/{body.chat}/"
    # milliseconds first, so ids sort in creation order; a random tail, so concurrent asks never collide
    stream = f"{prefix}{int(time.time() * 1000):013d}-{secrets.token_hex(3)}"
    token = hub.auth.mint(write=[stream], ttl=600) if hub.auth.enabled else None
    url = str(
        request.url.with_scheme("ws" if request.url.scheme == "http" else "wss")
        .with_path("/ws")
        .with_query({})
    )
    await hub.create(stream, labels={"chat": body.chat, "prompt": body.prompt[:500]})
    answering: set[str] = request.app[ANSWERING]
    answering.add(stream)
    task = request.app[TASKS].spawn(
        run_answer(
            url,
            stream,
            body.prompt,
            token=token,
            tokens_per_s=min(max(body.rate, 1.0), 1000.0),
            labels={"chat": body.chat},
        )
    )
    task.add_done_callback(lambda _: answering.discard(stream))
    return web.json_response({"stream": stream, "chat": body.chat}, status=201)
