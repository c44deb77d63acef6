"""Take docs/dashboard.png: the admin dashboard after half a minute of traffic, in Debian's Chromium
(not a test; the test is test_browser_dashboard.py).

.venv/bin/python -m tests.browser.dashboard_screenshot [out.png] [seconds]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from playwright.async_api import async_playwright

from hub.app import make_app
from hub.core.config import Config

from .conftest import CHROMIUM, CHROMIUM_ARGS
from .dashboard_traffic import Traffic

ROOT = Path(__file__).resolve().parents[2]


async def main(out: Path, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = make_app(Config(demo=True, data_dir=Path(tmp), admin_token="admin-secret"))
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session, async_playwright() as pw:
                traffic = Traffic(base, session)
                await traffic.start()
                browser = await pw.chromium.launch(
                    executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                )
                page = await browser.new_page(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
                await page.goto(f"{base}/admin?token=admin-secret")
                await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'live'")
                await asyncio.sleep(seconds)  # history for the charts to show
                await page.screenshot(
                    path=str(out), clip={"x": 0, "y": 0, "width": 1280, "height": 1180}, full_page=True
                )
                await browser.close()
                await traffic.stop()
        finally:
            await runner.cleanup()
    print(f"wrote {out}")


if __name__ == "__main__":
    asyncio.run(
        main(
            Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png",
            float(sys.argv[2]) if len(sys.argv) > 2 else 30.0,
        )
    )
