"""The demo chat in Chromium: reload, network loss, two tabs, Stop, and the SSE fallback.

Every test ends by comparing the page's rendered answer with the producer's full text as the hub
stored it: equal means no chunk was lost, shown twice or out of order.
"""

from __future__ import annotations

import asyncio
import time

from .conftest import DemoHub, Pages
from .demo_page import DemoPage, prompt_for

RATE = 100  # tokens/s; with answers of 160-260 tokens (prompt_for), 1.6-2.6 s each


async def wait_hub(pred: object, timeout: float = 20.0, what: str = "condition") -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_reload_mid_answer_resumes_with_the_exact_text(demo_hub: DemoHub, pages: Pages) -> None:
    demo = DemoPage(await pages.new(), demo_hub.http)
    await demo.open("reload", rate=RATE)
    prompt = prompt_for("How do resumable streams survive a reload?")
    sid = await demo.ask(prompt)
    await demo.wait_offset(sid, 15)
    assert await demo.status(sid) == "streaming"
    assert (await demo_hub.read(sid))["status"] == "open", "the answer ended before the reload"

    await demo.page.reload()
    await demo.wait_status(sid, "done")

    assert await demo.text(sid) == await demo_hub.final_text(sid)
    assert await demo.prompt(sid) == prompt  # the chat's history is re-rendered from the hub
    # the reloaded page resumed from the offset it had saved, it did not replay from 0
    assert demo_hub.hub.resume_counts.get(sid, 0) >= 1
    assert (await demo.client_stats())["duplicatesDropped"] == 0


async def test_network_loss_mid_answer_resumes_without_duplicates(demo_hub: DemoHub, pages: Pages) -> None:
    demo = DemoPage(await pages.new(), demo_hub.http)
    await demo.open("offline", rate=RATE, heartbeat=300)
    sid = await demo.ask(prompt_for("Explain backoff with jitter", range(220, 320)))
    await demo.wait_offset(sid, 10)
    stream = demo_hub.hub.store.get(sid)

    await pages.context.set_offline(True)
    await demo.page.wait_for_function("window.demo.client.state === 'reconnecting'")
    seen = await demo.held(sid)
    # stay offline while the producer writes on: at least 25 chunks the page has not seen (or the end)
    await wait_hub(lambda: stream.next_offset >= seen + 25 or stream.ended, what="appends while offline")
    # and long enough for the heartbeat to give the old socket up (the model may be faster than that)
    await demo.page.wait_for_function("window.demo.client.stats.deadConnections >= 1")
    assert await demo.held(sid) < stream.next_offset, "the page missed nothing while offline"
    await pages.context.set_offline(False)

    await demo.wait_status(sid, "done")
    assert await demo.text(sid) == await demo_hub.final_text(sid)
    stats = await demo.client_stats()
    assert stats["reconnects"] >= 1, stats
    assert stats["gaps"] == 0
    assert await demo.page.evaluate("window.demo.client.state") == "live"


async def test_two_tabs_on_one_chat_show_the_same_answer(demo_hub: DemoHub, pages: Pages) -> None:
    first = DemoPage(await pages.new(), demo_hub.http)
    await first.open("twotabs", rate=RATE)
    second = DemoPage(await pages.new(), demo_hub.http)
    await second.open("twotabs", rate=RATE)
    # asked in the first tab: the second learns of it from the hub (the chat "watch"), not a poll
    sid = await first.ask(prompt_for("Why keep an offset per stream?"))
    await first.wait_offset(sid, 5)
    await second.wait_offset(sid, 1)
    assert await second.status(sid) == "streaming"

    # a third tab opened mid-answer finds it in the chat's history and joins it live
    third = DemoPage(await pages.new(), demo_hub.http)
    await third.open("twotabs", rate=RATE)
    await third.wait_offset(sid, 1)

    text = None
    for tab in (first, second, third):
        await tab.wait_status(sid, "done")
        text = text or await demo_hub.final_text(sid)
        assert await tab.text(sid) == text


async def test_stop_cancels_the_producer(demo_hub: DemoHub, pages: Pages) -> None:
    demo = DemoPage(await pages.new(), demo_hub.http)
    await demo.open("stop", rate=40)
    sid = await demo.ask(prompt_for("Tell me everything about message queues"))
    await demo.wait_offset(sid, 5)
    assert await demo.page.is_visible("#streaming")

    await demo.page.click("#stop")
    await demo.wait_status(sid, "cancelled", timeout=10_000)

    body = await demo_hub.read(sid)
    assert body["status"] == "cancelled"
    assert await demo.text(sid) == "".join(body["chunks"])
    # a cancelled stream is closed: nothing more can be appended, the text cannot grow
    async with demo_hub.session.post(f"{demo_hub.http}/streams/{sid}", json={"data": "more"}) as r:
        assert r.status == 409
    assert await demo.page.is_hidden("#streaming")
    assert await demo.page.is_visible("#send")


async def test_sse_transport_resumes_after_reload(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    demo = DemoPage(page, demo_hub.http)
    await demo.open("sse", rate=RATE, transport="sse")
    sid = await demo.ask(prompt_for("Stream this over Server-Sent Events"))
    await demo.wait_offset(sid, 15)
    assert (await demo_hub.read(sid))["status"] == "open"

    await page.reload()
    await demo.wait_status(sid, "done")
    assert await demo.text(sid) == await demo_hub.final_text(sid)
    assert await demo.transport() == "sse"
    assert sockets == [], "SSE mode opened a WebSocket"
    assert demo_hub.hub.resume_counts.get(sid, 0) >= 1


async def test_blocked_websocket_falls_back_to_sse(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    # a proxy that refuses upgrades: every WebSocket fails before it opens
    await page.add_init_script(
        """window.WebSocket = class {
          constructor(url) {
            this.url = url; this.readyState = 0;
            setTimeout(() => { this.readyState = 3; this.onerror?.(new Event("error"));
                               this.onclose?.({ code: 1006, reason: "" }); }, 5);
          }
          send() { throw new Error("not open"); }
          close() { this.readyState = 3; }
        };"""
    )
    demo = DemoPage(page, demo_hub.http)
    await demo.open("blocked", rate=200)
    await page.wait_for_function("window.demo.client.transport === 'sse'")
    sid = await demo.ask(prompt_for("Does this work behind a strict proxy?", range(60, 120)))
    await demo.wait_status(sid, "done")
    assert await demo.text(sid) == await demo_hub.final_text(sid)
    assert (await demo.client_stats())["fallbacks"] == 1
    await page.wait_for_function("window.demo.client.state === 'live'")
