"""Two devices on one chat: two browser contexts (separate storage, separate connections), as a
laptop and a phone would be. An answer started on one shows up live on the other without a reload;
Stop on the other stops it for both; a reload of either mid-answer continues it."""

from __future__ import annotations

from .conftest import DemoHub
from .demo_page import DemoPage, prompt_for

RATE = 60


async def test_two_devices_share_a_chat_live_and_stop_for_both(demo_hub: DemoHub, browser) -> None:
    errors: list[str] = []
    laptop_ctx = await browser.new_context(viewport={"width": 1000, "height": 700})
    phone_ctx = await browser.new_context(viewport={"width": 400, "height": 800})
    for ctx in (laptop_ctx, phone_ctx):
        ctx.set_default_timeout(20_000)
    try:
        laptop_page, phone_page = await laptop_ctx.new_page(), await phone_ctx.new_page()
        for p in (laptop_page, phone_page):
            p.on("pageerror", lambda e, p=p: errors.append(f"{p.url}: {e}"))
        laptop, phone = DemoPage(laptop_page, demo_hub.http), DemoPage(phone_page, demo_hub.http)
        await laptop.open("devices", rate=RATE)
        await phone.open("devices", rate=RATE)

        # 1. asked on the laptop, streaming on the phone at once: no reload, no poll
        sid = await laptop.ask(prompt_for("How do two devices share one answer?", range(300, 400)))
        await laptop.wait_offset(sid, 3)
        await phone.wait_offset(sid, 3)
        assert await phone.status(sid) == "streaming"

        # 2. the phone reloads mid-answer and continues it
        await phone.page.reload()
        await phone.wait_offset(sid, await phone.held(sid) + 3)

        # 3. Stop on the phone stops the answer for both; the partial answer is kept
        await phone.page.click("#stop")
        await phone.wait_status(sid, "cancelled", timeout=10_000)
        await laptop.wait_status(sid, "cancelled", timeout=10_000)
        body = await demo_hub.read(sid)
        assert body["status"] == "cancelled" and len(body["chunks"]) > 0
        text = "".join(body["chunks"])
        assert await laptop.text(sid) == await phone.text(sid) == text

        # 4. a second answer, asked on the phone, reaches the laptop; the laptop reloads mid-way
        sid2 = await phone.ask(prompt_for("And a second question?", range(200, 260)))
        await laptop.wait_offset(sid2, 3)
        await laptop.page.reload()
        await laptop.wait_status(sid2, "done")
        await phone.wait_status(sid2, "done")
        final = await demo_hub.final_text(sid2)
        assert await laptop.text(sid2) == await phone.text(sid2) == final
        assert await laptop.text(sid) == text  # the stopped answer is still there after the reload
    finally:
        await laptop_ctx.close()
        await phone_ctx.close()
    assert errors == []
