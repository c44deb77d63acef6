"""The React hooks (hub/static/react.js) on a page that loads React 18's UMD build, in StrictMode."""

from __future__ import annotations

import json

import pytest

from .conftest import NODE_MODULES, DemoHub, Pages
from .demo_page import prompt_for


@pytest.fixture(autouse=True)
def _react_installed() -> None:
    if not (NODE_MODULES / "react" / "umd" / "react.development.js").exists():
        pytest.fail(
            f"React is not installed in {NODE_MODULES.parent}: run `npm ci` there (.ci/run does it)",
            pytrace=False,
        )


async def test_chat_and_stream_hooks_resume_after_reload(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/test/pages/react.html?chat=hooks&rate=100")
    await page.wait_for_function("document.querySelector('#chat')?.dataset.status === 'idle'")
    assert await page.get_attribute("#chat", "data-connection") == "live"

    prompt = prompt_for("What does useResumableChat do?")
    await page.fill("#prompt", prompt)
    await page.click("#ask")
    answer = page.locator(".answer").last
    await answer.wait_for()
    sid = await answer.get_attribute("data-stream")
    assert sid
    sel = f".answer[data-stream={json.dumps(sid)}]"
    await page.wait_for_function("s => Number(document.querySelector(s)?.dataset.offset) >= 15", arg=sel)
    assert (await demo_hub.read(sid))["status"] == "open"

    await page.reload()
    await page.wait_for_function("s => document.querySelector(s)?.dataset.status === 'done'", arg=sel)
    await page.wait_for_function("() => document.querySelector('#single')?.dataset.status === 'done'")

    text = await demo_hub.final_text(sid)
    assert await page.locator(f"{sel} .text").evaluate("e => e.textContent") == text
    assert await page.locator("#single").evaluate("e => e.textContent") == text
    assert await page.locator(f"{sel} .prompt").evaluate("e => e.textContent") == prompt
    assert await page.evaluate("window.client.stats.duplicatesDropped") == 0


async def test_stop_from_the_chat_hook(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/test/pages/react.html?chat=hookstop&rate=40")
    await page.wait_for_function("document.querySelector('#chat')?.dataset.status === 'idle'")
    await page.fill("#prompt", prompt_for("Stop me"))
    await page.click("#ask")
    await page.wait_for_function("Number(document.querySelector('.answer')?.dataset.offset) >= 3")
    await page.click("#stop")
    await page.wait_for_function("document.querySelector('.answer')?.dataset.status === 'cancelled'")
    sid = await page.locator(".answer").get_attribute("data-stream")
    assert sid
    body = await demo_hub.read(sid)
    assert body["status"] == "cancelled"
    assert await page.locator(".answer .text").evaluate("e => e.textContent") == "".join(body["chunks"])
