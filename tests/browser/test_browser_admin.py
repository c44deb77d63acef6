"""The read-only admin page (/admin?token=...) and the /chats listing the demo page reads."""

from __future__ import annotations

from .conftest import DemoHub, Pages


async def test_admin_page_renders_live_stats(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/admin?token=admin-secret")
    await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'live'")
    appends = page.locator(".card[data-key=appends] .v")
    assert await appends.text_content() == "0"
    assert await page.locator(".card[data-key=fsync_policy] .v").text_content() == "interval"

    async with demo_hub.session.post(
        f"{demo_hub.http}/streams/admin/test?create=1", json={"data": ["a", "b"]}
    ) as r:
        assert r.status == 200
    # the page refreshes by itself once a second
    await page.wait_for_function("document.querySelector('.card[data-key=appends] .v')?.textContent === '1'")
    assert await page.locator(".card[data-key=streams] .v").text_content() == "1"


async def test_admin_page_without_a_valid_token_says_so(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/admin?token=wrong")
    await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'closed'")
    assert "refused this admin token" in (await page.locator("#notice").text_content() or "")
    assert await page.locator(".card").count() == 0


async def test_chats_lists_a_chats_streams_in_order_with_prompts(demo_hub: DemoHub) -> None:
    http, s = demo_hub.http, demo_hub.session
    asked = []
    for prompt in ["first question", "second question"]:
        async with s.post(f"{http}/demo/ask", json={"chat": "c1", "prompt": prompt, "rate": 1000}) as r:
            assert r.status == 201
            asked.append((await r.json())["stream"])
    async with s.post(f"{http}/demo/ask", json={"chat": "other", "prompt": "elsewhere", "rate": 1000}) as r:
        assert r.status == 201

    async with s.get(f"{http}/chats/c1") as r:
        assert r.status == 200
        body = await r.json()
    assert body["chat"] == "c1"
    assert [i["stream"] for i in body["streams"]] == asked
    assert [i["labels"]["prompt"] for i in body["streams"]] == ["first question", "second question"]
    for i in body["streams"]:
        assert i["status"] in ("open", "done")
        assert isinstance(i["next"], int) and isinstance(i["epoch"], str)

    async with s.get(f"{http}/chats/c1", params={"limit": 1}) as r:
        assert [i["stream"] for i in (await r.json())["streams"]] == asked[1:]
    async with s.get(f"{http}/chats/nobody") as r:
        assert r.status == 200 and (await r.json())["streams"] == []
    async with s.get(f"{http}/chats/bad%20id") as r:
        assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
    async with s.get(f"{http}/chats/c1", params={"limit": 0}) as r:
        assert r.status == 400
