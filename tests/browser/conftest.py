"""Browser fixtures: Debian's Chromium, driven by Playwright, against the real hub with the demo on.

The hub runs in-process on 127.0.0.1 (ephemeral port) over a tmp data dir, with the read-only
``/chats`` routes and two test-only static routes: ``/test/pages/`` (this directory's pages) and
``/test/node_modules/`` (React from ``react-fixture``, installed by ``npm ci``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from hub.app import make_app
from hub.core.config import Config
from hub.core.service import HUB, Hub
from hub.protocols import chats

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HERE = Path(__file__).parent
NODE_MODULES = HERE / "react-fixture" / "node_modules"


@dataclass
class DemoHub:
    server: TestServer
    hub: Hub
    config: Config
    session: aiohttp.ClientSession

    @property
    def http(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def read(self, stream: str) -> dict[str, Any]:
        """The stream as the hub has it: every chunk, its status and epoch."""
        async with self.session.get(f"{self.http}/streams/{stream}", params={"from": 0, "limit": 10000}) as r:
            assert r.status == 200, await r.text()
            body: dict[str, Any] = await r.json()
            return body

    async def final_text(self, stream: str) -> str:
        body = await self.read(stream)
        assert body["status"] != "open", f"{stream} is still open"
        assert body["next"] == body["end"], "more than one read's worth of chunks"
        return "".join(body["chunks"])


def _has_route(app: web.Application, path: str) -> bool:
    return any(r.canonical == path for r in app.router.resources())


@pytest.fixture
async def demo_hub(tmp_path: Path) -> AsyncIterator[DemoHub]:
    config = Config(demo=True, data_dir=tmp_path / "data", admin_token="admin-secret")
    app = make_app(config)
    if not _has_route(app, "/chats/{chat}"):  # until hub/app.py mounts hub/chats.py itself
        app.router.add_routes(chats.routes)
    app.router.add_static("/test/pages/", HERE / "pages")
    if NODE_MODULES.is_dir():
        app.router.add_static("/test/node_modules/", NODE_MODULES)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    async with aiohttp.ClientSession() as session:
        yield DemoHub(server, app[HUB], config, session)
    await server.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests drive Debian's Chromium "
            "(apt-get install -y chromium; .ci/run does it), never a downloaded browser",
            pytrace=False,
        )
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Pages:
    """Opens pages in one browser context and fails the test on any uncaught page error."""

    context: BrowserContext
    errors: list[str] = field(default_factory=list)

    async def new(self) -> Page:
        page = await self.context.new_page()
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        return page


@pytest.fixture
async def pages(browser: Browser) -> AsyncIterator[Pages]:
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    context.set_default_timeout(20_000)
    p = Pages(context)
    yield p
    await context.close()
    assert not p.errors, f"uncaught errors in the page: {p.errors}"
