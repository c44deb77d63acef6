"""What the hub logs, and what it never logs: tokens.

Browsers must put their stream token in the query string (``EventSource`` and ``WebSocket`` cannot set
headers), so the access log never prints a query value whose name carries a credential, and never
prints a header at all. ``--access-log``: ``off`` (the default: a busy hub appends thousands of chunks
a second, and one line each is noise and cost), ``on`` (one plain line per request, written when the
response ends, so a WebSocket or SSE line comes when it closes) or ``json`` (the same as one JSON
object per line, for log shippers). Both at INFO on the ``hub.access`` logger, so ``--log-level
warning`` silences them with everything else at INFO.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

SECRET_PARAMS = frozenset({"token", "access_token", "auth", "authorization", "jwt", "key", "secret"})
REDACTED = "[redacted]"
ACCESS = logging.getLogger("hub.access")


def setup_logging(level: str, access_log: str = "off") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if access_log == "json":  # one bare JSON object per line, nothing around it
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        ACCESS.addHandler(handler)
        ACCESS.propagate = False


def redacted_target(request: BaseRequest) -> str:
    """The request's path and query, with every credential-like query value replaced."""
    if not request.query_string:
        return request.path
    parts = []
    for k, v in request.query.items():
        value = REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe="")
        parts.append(f"{quote(k, safe='')}={value}")
    return f"{request.path}?{'&'.join(parts)}"


class PlainAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s HTTP/%d.%d" %d %dB %.1fms',
            request.remote,
            request.method,
            redacted_target(request),
            request.version.major,
            request.version.minor,
            response.status,
            response.body_length,
            time * 1000,
        )


class JsonAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        target = redacted_target(request)
        path, _, query = target.partition("?")
        record = {
            "remote": request.remote,
            "method": request.method,
            "path": path,
            "query": query,
            "status": response.status,
            "bytes": response.body_length,
            "ms": round(time * 1000, 1),
        }
        self.logger.info("%s", json.dumps(record, separators=(",", ":")))


def access_logger(mode: str) -> dict[str, Any]:
    """``web.run_app`` keyword arguments for an ``--access-log`` mode."""
    if mode == "off":
        return {"access_log": None}
    cls = JsonAccessLogger if mode == "json" else PlainAccessLogger
    return {"access_log": ACCESS, "access_log_class": cls}
