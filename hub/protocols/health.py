"""``/healthz`` (the process answers) and ``/readyz`` (it can take writes), for load balancers and
orchestrators; no auth, no stream data, nothing a token could unlock.

``/readyz`` is 503 while the hub shuts down or when the data dir cannot take a durable write (a probe
file written, fsynced and removed in a worker thread); a load balancer then sends producers elsewhere
while readers of what is already stored are still served.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from aiohttp import web

from hub.core.service import HUB

routes = web.RouteTableDef()
PROBE = ".readyz-probe"


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    checks: dict[str, str] = {}
    try:
        await asyncio.get_running_loop().run_in_executor(None, _probe, hub.config.data_dir)
        checks["storage"] = "ok"
    except OSError as e:
        checks["storage"] = f"cannot write {hub.config.data_dir}: {e.strerror or e}"
    checks["hub"] = "shutting down" if hub.closing else "ok"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


def _probe(root: Path) -> None:
    path = root / PROBE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ok")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.unlink(path)
