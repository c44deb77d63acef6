"""The real AI SDK in Chromium (``ai`` + ``@ai-sdk/react``, pinned in aisdk-fixture's lockfile):
``useChat({resume: true})`` against the hub, over DefaultChatTransport and WebSocketChatTransport.

The page (aisdk-fixture/src/chat.jsx) is bundled with esbuild from the fixture's node_modules at
test time and served by the hub under test. Answers come from the generator API
(tests/integration/aisdk_gens.py:paced): a reasoning part, then ``w0 w1 ...`` paced words.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from hub.app import make_app
from hub.core.config import Config
from hub.core.service import HUB, Hub
from tests.browser.conftest import Pages

FIXTURE = Path(__file__).parent / "aisdk-fixture"
N = 150


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    esbuild = FIXTURE / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.fail(f"run `npm ci` in {FIXTURE} (make test does it)", pytrace=False)
    out = tmp_path_factory.mktemp("aisdk-page")
    subprocess.run(
        [
            str(esbuild),
            "src/chat.jsx",
            "--bundle",
            "--format=iife",
            "--jsx=automatic",
            '--define:process.env.NODE_ENV="production"',
            f"--outfile={out / 'chat.js'}",
            "--log-level=warning",
        ],
        cwd=FIXTURE,
        check=True,
        timeout=120,
    )
    (out / "index.html").write_text((FIXTURE / "src" / "index.html").read_text())
    return out


class AiHub:
    def __init__(self, server: TestServer, hub: Hub) -> None:
        self.server, self.hub = server, hub

    def url(self, chat: str, transport: str = "http", delay: float = 0.02, extra: str = "") -> str:
        base = str(self.server.make_url("/aisdk/index.html"))
        return f"{base}?chat={chat}&transport={transport}&n={N}&delay={delay}{extra}"


@pytest.fixture
async def ai_hub(tmp_path: Path, bundle: Path) -> AsyncIterator[AiHub]:
    config = Config(data_dir=tmp_path / "data", generator="tests.integration.aisdk_gens:paced")
    app = make_app(config)
    app.router.add_static("/aisdk/", bundle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield AiHub(server, app[HUB])
    await server.close()


WORDS = "".join(f"w{i} " for i in range(N)).strip()  # innerText trims the last space


async def assistant_texts(page: Page) -> list[str]:
    return await page.locator("li.msg.assistant .text").all_inner_texts()


async def ask(page: Page, text: str) -> None:
    await page.fill("#prompt", text)
    await page.click("#send")


async def wait_words(page: Page, n: int) -> None:
    await page.wait_for_function(
        f"() => [...document.querySelectorAll('li.msg.assistant .text')].some(e => e.textContent.includes('w{n} '))"
    )


async def final_state(page: Page) -> None:
    await page.wait_for_function("() => window.__status === 'ready'")


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_reload_mid_answer_shows_the_answer_exactly_once(
    ai_hub: AiHub, pages: Pages, transport: str
) -> None:
    page = await pages.new()
    await page.goto(ai_hub.url(f"r{transport}", transport))
    await page.wait_for_selector("#prompt")
    await ask(page, "tell me")
    await wait_words(page, 20)
    await page.reload()  # mid-answer: the page comes back with the chat's history, then resumes
    await page.wait_for_selector("#prompt")
    await wait_words(page, N - 2)
    await final_state(page)
    assert await assistant_texts(page) == [WORDS]  # one assistant message, each word once
    assert await page.locator("li.msg.assistant .reasoning").all_inner_texts() == ["thinking"]
    assert await page.locator("li.msg.user").all_inner_texts() == ["tell me"]
    # and once more after the answer ended: history only, no resume, still exactly once
    await page.reload()
    await page.wait_for_selector("#prompt")
    await page.wait_for_function("() => document.querySelectorAll('li.msg.assistant').length === 1")
    assert await assistant_texts(page) == [WORDS]


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_stop_keeps_the_partial_answer(ai_hub: AiHub, pages: Pages, transport: str) -> None:
    page = await pages.new()
    await page.goto(ai_hub.url(f"s{transport}", transport, delay=0.03))
    await page.wait_for_selector("#prompt")
    await ask(page, "go")
    await wait_words(page, 10)
    await page.click("#stop")
    await page.wait_for_function("() => window.__stopped === true")
    sid = (await ai_hub.hub.list_streams("chat/s" + transport + "/"))[0]
    s = await ai_hub.hub.get(sid)
    assert s.status == "cancelled"  # the stop endpoint returns once the partial is saved
    stored = s.next_offset
    shown = (await assistant_texts(page))[0]
    assert shown.startswith("w0 w1 ") and len(shown.split()) < N
    await page.reload()
    await page.wait_for_selector("#prompt")
    await page.wait_for_function("() => document.querySelectorAll('li.msg.assistant').length === 1")
    after = (await assistant_texts(page))[0]
    assert after.startswith(shown)  # the partial is kept, whole (it may hold the words in flight)
    assert len(after.split()) == stored - 6  # start, 3 reasoning, text-start, text-end: 6 non-words
    assert await page.locator("li.msg.assistant").count() == 1


async def test_websocket_abort_alone_reaches_the_producer(ai_hub: AiHub, pages: Pages) -> None:
    """No stop endpoint: the transport's own ``abort`` frame (sent by ``stop()``) ends the answer."""
    page = await pages.new()
    await page.goto(ai_hub.url("abort1", "ws", delay=0.03, extra="&stopvia=abort"))
    await page.wait_for_selector("#prompt")
    await ask(page, "go")
    await wait_words(page, 10)
    await page.click("#stop")
    sid = (await ai_hub.hub.list_streams("chat/abort1/"))[0]
    s = await ai_hub.hub.get(sid)
    deadline = time.monotonic() + 10
    while not s.ended and time.monotonic() < deadline:  # abort is one-way: poll for its effect
        await asyncio.sleep(0.02)
    assert s.status == "cancelled" and s.next_offset < N
    await page.reload()
    await page.wait_for_selector("#prompt")
    await page.wait_for_function("() => document.querySelectorAll('li.msg.assistant').length === 1")
    assert (await assistant_texts(page))[0].startswith("w0 w1 w2 ")
