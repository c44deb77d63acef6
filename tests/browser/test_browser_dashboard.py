"""The admin dashboard in Chromium: uPlot charts drawn with the hub's data, the live streams table
filled, and a stream's own page with its timeline (docs/analytics.md)."""

from __future__ import annotations

from pathlib import Path

from .conftest import DemoHub, Pages
from .dashboard_traffic import LIVE, Traffic

# a chart has data: at least one non-null, positive point in one of its series
HAS_DATA = """(name) => {
  const u = window.rhubCharts && window.rhubCharts[name];
  return !!u && u.data.slice(1).some((ys) => ys.some((v) => v != null && v > 0));
}"""


async def test_dashboard_draws_charts_and_lists_live_streams(
    demo_hub: DemoHub, pages: Pages, tmp_path: Path
) -> None:
    traffic = Traffic(demo_hub.http, demo_hub.session)
    await traffic.start()
    try:
        page = await pages.new()
        await page.goto(f"{demo_hub.http}/admin?token=admin-secret")
        await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'live'")
        for name in ("rate", "conns", "lag", "gap", "missed"):
            await page.wait_for_function(HAS_DATA, arg=name)
        # uPlot drew them: one canvas per chart, sized, inside the page's figures
        canvases = await page.eval_on_selector_all(
            ".chart .uplot canvas", "cs => cs.map(c => [c.width, c.height])"
        )
        assert len(canvases) == 6 and all(w > 200 and h > 100 for w, h in canvases)
        # one point a second, since the hub started (at most the last 15 minutes)
        assert 1 <= await page.evaluate("window.rhubCharts.rate.data[0].length") <= 900
        await page.wait_for_function(f"!!document.querySelector('#live tr[data-stream=\"{LIVE}\"]')")
        row = page.locator(f'#live tr[data-stream="{LIVE}"] td')
        assert await row.nth(3).text_content() == "1"  # one subscriber
        assert int(await row.nth(4).text_content() or 0) >= 12
        assert await row.nth(7).text_content() == "1"  # resumed once
        assert "tenant=acme" in (await row.nth(1).text_content() or "")
        shot = tmp_path / "dashboard.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000

        # the stream's own page: chunks over time and the reader's join, leave and resume
        await page.click(f'#live tr[data-stream="{LIVE}"] a')
        await page.wait_for_url("**/admin/stream?id=*")
        await page.wait_for_function(HAS_DATA, arg="timeline")
        kinds = await page.eval_on_selector_all(
            "#events tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)"
        )
        assert sorted(kinds) == ["join", "leave", "resume"]
        assert await page.locator(".chart .uplot canvas").count() == 1
        assert (await page.locator("#title").text_content() or "").startswith(f"{LIVE} · open")
    finally:
        await traffic.stop()


async def test_dashboard_without_a_valid_token_draws_nothing(demo_hub: DemoHub, pages: Pages) -> None:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/admin?token=wrong")
    await page.wait_for_function("document.querySelector('#conn')?.dataset.state === 'closed'")
    assert await page.locator("#dash").is_hidden()
    assert await page.evaluate("Object.keys(window.rhubCharts).length") == 0
