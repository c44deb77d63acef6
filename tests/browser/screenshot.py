"""Take docs/demo.png: the demo chat mid-answer, in Debian's Chromium (not a test).

.venv/bin/python -m tests.browser.screenshot [out.png]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from aiohttp import web
from playwright.async_api import async_playwright

from hub.app import make_app
from hub.core.config import Config
from hub.protocols import chats

from .conftest import CHROMIUM, CHROMIUM_ARGS
from .demo_page import DemoPage, prompt_for

ROOT = Path(__file__).resolve().parents[2]


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Config(demo=True, data_dir=Path(tmp), admin_token="admin-secret"))
        if not any(r.canonical == "/chats/{chat}" for r in app.router.resources()):
            app.router.add_routes(chats.routes)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
                demo = DemoPage(page, f"http://127.0.0.1:{port}")
                await demo.open("screenshot", rate=400)
                first = await demo.ask(
                    prompt_for("What is a resumable stream?", range(60, 90), invisible=True)
                )
                await demo.wait_status(first, "done")
                await page.goto(f"http://127.0.0.1:{port}/?chat=screenshot&rate=40")
                second = await demo.ask(
                    prompt_for("How does a reload resume the answer?", range(300, 400), invisible=True)
                )
                await demo.wait_offset(second, 85)
                await page.screenshot(path=str(out))
                await page.click("#stop")
                await browser.close()
        finally:
            await runner.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "demo.png"))
