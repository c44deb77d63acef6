"""Cross-origin rules for every HTTP API of the hub, in one place, so a page on another origin can
use them (and SSE). Never for ``/admin``, ``/metrics`` or the WebSocket (which checks Origin itself).

Credentials are bearer tokens, never cookies, so no origin can act with a user's ambient authority.
Which origins get a grant is the WebSocket's own rule, ``Auth.origin_allowed``: the hub's own origin,
then ``allowed_origins`` (``*`` = any), or localhost when that list is unset. A grant always names the
origin, never ``*``. A request from any other origin is refused with 403 before it does anything (a
form post or a text/plain fetch needs no preflight, so hiding the answer is not enough); its
preflights are answered without a grant, so the browser sends nothing. Each API has a ``Policy``: its paths, what a preflight allows, which
response headers a page may read, and (Durable Streams) the browser-safety headers on every answer.
Headers are added in ``on_response_prepare``, so they also reach error answers and SSE responses,
whose headers go out before the handler ends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from hub.core.errors import HubError
from hub.core.service import HUB
from hub.protocols.durable.wire import ALLOW_HEADERS, EXPOSE, PREFIX
from hub.protocols.http_errors import error_response


@dataclass(frozen=True)
class Policy:
    prefixes: tuple[str, ...]
    allow_headers: str  # what a preflight allows (unless it echoes the asked ones)
    max_age: int
    expose: str | None = None
    echo_request_headers: bool = False  # Durable Streams: allow whatever headers the preflight asks for
    safety_headers: bool = False  # nosniff and CORP on every answer, cross-origin or not
    every_options: bool = False  # answer any OPTIONS (not only preflights), even from an origin not allowed


NATIVE = Policy(
    ("/streams", "/chats"),
    "Authorization, Content-Type, Producer-Id, Producer-Seq, Last-Event-ID",
    600,
)
DURABLE = Policy(
    (PREFIX,),
    ALLOW_HEADERS,
    86400,
    expose=EXPOSE,
    echo_request_headers=True,
    safety_headers=True,
    every_options=True,
)
POLICIES = (DURABLE, NATIVE)
METHODS = "GET, HEAD, POST, PUT, DELETE, OPTIONS"
# Where a request from an origin not allowed is refused outright (the WebSocket's check, for /ws too).
GUARDED = ("/streams", "/chats", PREFIX, "/demo", "/ws")


EXTRA = web.AppKey("cors_extra_policies", tuple)  # policies an app adds (the AI SDK's configurable prefix)


def policy_for(path: str, extra: tuple[Policy, ...] = ()) -> Policy | None:
    return next((p for p in (*POLICIES, *extra) if path.startswith(p.prefixes)), None)


def allow_origin(request: web.Request) -> str | None:
    """The ``Access-Control-Allow-Origin`` for this request: its origin, or None (no CORS)."""
    origin = request.headers.get("Origin")
    if origin is None or not request.app[HUB].auth.origin_allowed(origin, request.host):
        return None
    return origin


def _cors(request: web.Request, policy: Policy) -> dict[str, str]:
    allow = allow_origin(request)
    if allow is None:
        return {}
    h = {"Access-Control-Allow-Origin": allow, "Vary": "Origin"}
    if policy.expose:
        h["Access-Control-Expose-Headers"] = policy.expose
    return h


@web.middleware
def preflight(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Awaitable[web.StreamResponse]:
    """Refuse a disallowed Origin on the guarded routes, answer CORS preflights, else pass through.

    A plain function returning the handler's awaitable, not a coroutine: a coroutine middleware's
    frame stays on the stack for as long as its handler runs, ~0.4 KiB under every open WebSocket."""
    early = _early_answer(request)
    return handler(request) if early is None else _answered(early)


async def _answered(response: web.StreamResponse) -> web.StreamResponse:
    return response


def _early_answer(request: web.Request) -> web.StreamResponse | None:
    origin = request.headers.get("Origin")
    extra = request.app.get(EXTRA, ())
    guarded = GUARDED + tuple(prefix for p in extra for prefix in p.prefixes)  # an app's routes too
    if origin is not None and request.method != "OPTIONS" and request.path.startswith(guarded):
        hub = request.app[HUB]
        if not hub.auth.origin_allowed(origin, request.host):
            hub.counters.errors += 1
            return error_response(
                HubError("forbidden", f"origin {origin!r} is not allowed (--allowed-origins)")
            )
    policy = policy_for(request.path, extra) if request.method == "OPTIONS" else None
    if policy is not None:
        is_preflight = "Access-Control-Request-Method" in request.headers
        cors = _cors(request, policy)
        if policy.every_options or (is_preflight and cors):
            asked = request.headers.get("Access-Control-Request-Headers")
            allow_headers = asked if asked and policy.echo_request_headers else policy.allow_headers
            headers = {
                "Access-Control-Allow-Methods": METHODS,
                "Access-Control-Allow-Headers": allow_headers,
                "Access-Control-Max-Age": str(policy.max_age),
            }
            return web.Response(status=204, headers=headers)  # CORS headers: in on_prepare below
    return None


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    policy = policy_for(request.path, request.app.get(EXTRA, ()))
    if policy is None:
        return
    if policy.safety_headers:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    for k, v in _cors(request, policy).items():
        response.headers.setdefault(k, v)
