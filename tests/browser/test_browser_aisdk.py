"""The real AI SDK in Chromium (``ai`` + ``@ai-sdk/react``, pinned in aisdk-fixture's lockfile):
``useChat({resume: true})`` against the hub, over DefaultChatTransport and WebSocketChatTransport.

The page (aisdk-fixture/src/chat.jsx) is bundled with esbuild from the fixture's node_modules at
test time and served by the hub under test. Answers come from the generator API
(tests/integration/aisdk_gens.py:paced): a reasoning part, then ``w0 w1 ...`` paced words.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Page

from hub.app import make_app
from hub.core.config import Config
from hub.core.service import HUB, Hub
from hub.protocols.aisdk.answers import answer_text
from hub.protocols.aisdk.ws import ChatSocket
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


@contextlib.asynccontextmanager
async def serve(tmp_path: Path, bundle: Path, **cfg: Any) -> AsyncIterator[AiHub]:
    config = Config(data_dir=tmp_path / "data", generator="tests.integration.aisdk_gens:paced", **cfg)
    app = make_app(config)
    app.router.add_static("/aisdk/", bundle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield AiHub(server, app[HUB])
    finally:
        await server.close()


@pytest.fixture
async def ai_hub(tmp_path: Path, bundle: Path) -> AsyncIterator[AiHub]:
    async with serve(tmp_path, bundle) as hub:
        yield hub


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


async def wait_hub(pred: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("outage", ["socket_survives", "socket_lost"])
async def test_websocket_offline_mid_answer_shows_the_answer_once(
    tmp_path: Path, bundle: Path, pages: Pages, outage: str
) -> None:
    """The page loses the network mid-answer while the model writes on, then comes back: either
    the WebSocket outlived the outage (the hub's heartbeat is 20 s) and the frames held back
    arrive, or the hub gave the socket up (heartbeat 0.5 s), useChat reports the lost connection
    and the page resumes (``resume`` replays the answer, the SDK resets the partial message).
    Either way the page shows the whole answer exactly once, equal to the text the hub stored."""
    lost = outage == "socket_lost"
    async with serve(tmp_path, bundle, heartbeat_s=0.5 if lost else 20.0) as ai_hub:
        hub = ai_hub.hub
        page = await pages.new()
        chat = f"off{int(lost)}"
        await page.goto(ai_hub.url(chat, "ws", delay=0.03))
        await page.wait_for_selector("#prompt")
        await ask(page, "tell me")
        await wait_words(page, 10)
        sid = (await hub.list_streams(f"chat/{chat}/"))[0]
        s = await hub.get(sid)

        await pages.context.set_offline(True)
        shown = len((await assistant_texts(page))[0].split())
        # the model writes on while the page is offline: at least 25 words it has not seen (or the end)
        await wait_hub(lambda: s.next_offset >= shown + 6 + 25 or s.ended, "appends while offline")

        def sockets() -> int:
            return sum(isinstance(c, ChatSocket) for c in hub.connections)

        if lost:  # and long enough for the hub's heartbeat to give the dead socket up
            await wait_hub(lambda: sockets() == 0, "the hub to drop the offline socket")
        else:
            assert sockets() == 1
        assert len((await assistant_texts(page))[0].split()) < s.next_offset - 6, "offline missed nothing"
        await pages.context.set_offline(False)

        await wait_words(page, N - 2)
        await final_state(page)
        await wait_hub(lambda: s.ended, "the answer to end")
        stored, reasoning = await answer_text(hub, s)
        assert s.status == "done" and stored == WORDS + " "
        assert await assistant_texts(page) == [WORDS]  # one assistant message, each word once
        assert await page.locator("li.msg.assistant .reasoning").all_inner_texts() == [reasoning]
        resumed = await page.evaluate("window.__resumedOnline || 0")
        assert resumed >= 1 if lost else resumed == 0
