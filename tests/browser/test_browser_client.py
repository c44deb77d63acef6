"""resumable.js against a scripted WebSocket (pages/blank.html): its invariants, frame by frame.

No hub traffic: the page replaces ``WebSocket`` with a fake the test drives, so duplicates, overlaps,
gaps, stale frames, resets, drops and missing pongs happen exactly when the script says.
"""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

from .conftest import DemoHub, Pages
from .demo_page import DemoPage, prompt_for

FAST = {
    "persist": False,
    "backoffBaseMs": 1,
    "backoffMaxMs": 2,
    "heartbeatMs": 60000,
    "unsubscribeLingerMs": 0,
}


async def harness(demo_hub: DemoHub, pages: Pages) -> Page:
    page = await pages.new()
    await page.goto(f"{demo_hub.http}/test/pages/blank.html")
    return page


async def test_duplicates_overlaps_and_gaps_never_reach_the_app(demo_hub: DemoHub, pages: Pages) -> None:
    page = await harness(demo_hub, pages)
    r: dict[str, Any] = await page.evaluate(
        """async (options) => {
      const { connect } = await import("/static/resumable.js");
      const c = connect("/ws", options);
      const got = [];
      c.subscribe("s", { onChunk: (d, o) => got.push([o, d]) });
      await tick();
      const ws = sockets[0];
      ws.open();
      const first = ws.sent.filter((m) => m.op === "subscribe");
      ws.push({ op: "subscribed", stream: "s", offset: 0, epoch: "e1", next: 0, status: "open" });
      ws.push({ op: "chunks", stream: "s", offset: 0, data: ["a", "b"] });
      ws.push({ op: "chunks", stream: "s", offset: 1, data: ["b", "c"] });  // overlap: only "c" is new
      ws.push({ op: "chunks", stream: "s", offset: 0, data: ["a"] });       // duplicate
      ws.push({ op: "chunks", stream: "s", offset: 5, data: ["x"] });       // gap: 3 and 4 are missing
      ws.push({ op: "chunks", stream: "s", offset: 6, data: ["y"] });       // stale, while resubscribing
      const resub = ws.sent.filter((m) => m.op === "subscribe").slice(1);
      ws.push({ op: "subscribed", stream: "s", offset: 3, epoch: "e1", next: 7, status: "open" });
      ws.push({ op: "chunks", stream: "s", offset: 3, data: ["d", "e", "f"] });
      ws.push({ op: "end", stream: "s", offset: 6, status: "done" });
      await tick();
      return { first, resub, got, text: c.getStream("s").text, status: c.getStream("s").status,
               stats: { ...c.stats }, last: ws.sent[ws.sent.length - 1] };
    }""",
        FAST,
    )
    assert r["first"] == [{"op": "subscribe", "stream": "s", "from": 0}]
    assert r["resub"] == [{"op": "subscribe", "stream": "s", "from": 3, "epoch": "e1"}]
    assert r["got"] == [[0, "a"], [1, "b"], [2, "c"], [3, "d"], [4, "e"], [5, "f"]]
    assert (r["text"], r["status"]) == ("abcdef", "done")
    assert r["stats"]["gaps"] == 1
    assert r["stats"]["duplicatesDropped"] == 2
    assert r["last"] == {"op": "unsubscribe", "stream": "s"}  # frees the hub's slot after the end


async def test_reconnect_resumes_from_next_and_reset_starts_over(demo_hub: DemoHub, pages: Pages) -> None:
    page = await harness(demo_hub, pages)
    r: dict[str, Any] = await page.evaluate(
        """async (options) => {
      const { connect } = await import("/static/resumable.js");
      const c = connect("/ws", options);
      const states = [];
      c.onState((s) => states.push(s));
      let shown = "";
      const resets = [];
      c.subscribe("s", { onChunk: (d) => { shown += d; }, onReset: (x) => { resets.push(x.epoch); shown = ""; } });
      await tick();
      sockets[0].open();
      sockets[0].push({ op: "subscribed", stream: "s", offset: 0, epoch: "e1", next: 0, status: "open" });
      sockets[0].push({ op: "chunks", stream: "s", offset: 0, data: ["he", "ll"] });
      sockets[0].drop();
      while (sockets.length < 2) await tick(1);
      const ws = sockets[1];
      ws.open();
      const resumed = ws.sent.find((m) => m.op === "subscribe");
      ws.push({ op: "reset", stream: "s", epoch: "e2" });  // the hub lost data we may have seen
      ws.push({ op: "subscribed", stream: "s", offset: 0, epoch: "e2", next: 3, status: "open" });
      ws.push({ op: "chunks", stream: "s", offset: 0, data: ["wo", "rl", "d"] });
      return { resumed, resets, shown, text: c.getStream("s").text, epoch: c.getStream("s").epoch,
               states, stats: { ...c.stats } };
    }""",
        FAST,
    )
    assert r["resumed"] == {"op": "subscribe", "stream": "s", "from": 2, "epoch": "e1"}
    assert r["resets"] == ["e2"]
    assert r["shown"] == r["text"] == "world"
    assert r["epoch"] == "e2"
    assert r["states"][:3] == ["connecting", "live", "reconnecting"] and r["states"][-1] == "live"
    assert r["stats"]["reconnects"] == 1 and r["stats"]["resets"] == 1


async def test_a_missing_pong_replaces_the_connection(demo_hub: DemoHub, pages: Pages) -> None:
    page = await harness(demo_hub, pages)
    r: dict[str, Any] = await page.evaluate(
        """async () => {
      const { connect } = await import("/static/resumable.js");
      const c = connect("/ws", { persist: false, backoffBaseMs: 1, backoffMaxMs: 2,
                                 heartbeatMs: 5, heartbeatTimeoutMs: 20 });
      await tick();
      sockets[0].open();
      const ping = sockets[0].sent.find((m) => m.op === "ping");
      sockets[0].push({ op: "pong", t: ping.t });     // answered: the next ping follows
      while (sockets[0].sent.filter((m) => m.op === "ping").length < 2) await tick(1);
      while (sockets.length < 2) await tick(1);       // not answered: dropped and replaced
      return { first: sockets[0].readyState, dead: c.stats.deadConnections, state: c.state };
    }"""
    )
    assert r["first"] == 3
    assert r["dead"] == 1
    assert r["state"] in ("reconnecting", "connecting")


async def test_a_late_subscriber_gets_the_text_already_held(demo_hub: DemoHub, pages: Pages) -> None:
    page = await harness(demo_hub, pages)
    r: dict[str, Any] = await page.evaluate(
        """async (options) => {
      const { connect } = await import("/static/resumable.js");
      const c = connect("/ws", options);
      c.subscribe("s", {});
      await tick();
      sockets[0].open();
      sockets[0].push({ op: "subscribed", stream: "s", offset: 0, epoch: "e", next: 0, status: "open" });
      sockets[0].push({ op: "chunks", stream: "s", offset: 0, data: ["one ", "two "] });
      const late = [];
      c.subscribe("s", { onChunk: (d, o) => late.push(o) });
      await tick();
      sockets[0].push({ op: "chunks", stream: "s", offset: 2, data: ["three"] });
      const subs = sockets[0].sent.filter((m) => m.op === "subscribe").length;
      return { late, subs };
    }""",
        FAST,
    )
    assert r["late"] == [0, 1, 2]
    assert r["subs"] == 1  # one wire subscription for both listeners


async def test_a_stale_epoch_in_session_storage_is_reset_by_the_hub(demo_hub: DemoHub, pages: Pages) -> None:
    """The real hub: a saved position whose epoch the hub no longer has gets `reset`, not a gap."""
    demo = DemoPage(await pages.new(), demo_hub.http)
    await demo.open("epoch", rate=1000)
    sid = await demo.ask(prompt_for("Reset me", range(60, 120)))
    await demo.wait_status(sid, "done")
    # pretend this tab saw other data under an older epoch, and that the stream was still open
    await demo.page.evaluate(
        """(sid) => {
      window.demo.client.flush();
      const key = "resumable:v1:" + sid;
      const rec = JSON.parse(sessionStorage.getItem(key));
      rec.e = "0000000000000000";
      rec.c = rec.c.slice(0, 10).map(() => "?");
      rec.o = rec.b + rec.c.length;
      delete rec.s;
      sessionStorage.setItem(key, JSON.stringify(rec));
      window.removeEventListener("pagehide", window.demo.client._onHide);
      window.removeEventListener("beforeunload", window.demo.client._onHide);
    }""",
        sid,
    )
    await demo.page.reload()
    await demo.wait_status(sid, "done")
    assert await demo.text(sid) == await demo_hub.final_text(sid)
    assert (await demo.client_stats())["resets"] == 1


async def test_chat_watch_resyncs_on_reconnect_and_falls_back_to_polling(
    demo_hub: DemoHub, pages: Pages
) -> None:
    page = await harness(demo_hub, pages)
    r: dict[str, Any] = await page.evaluate(
        """async (options) => {
      const { connect } = await import("/static/resumable.js");
      const c = connect("/ws", options);
      const seen = [];
      c.watchChat("abc", { onSnapshot: (s) => seen.push(["snapshot", s.length]),
                           onEvent: (e) => seen.push([e.event, e.stream]),
                           onUnsupported: () => seen.push(["poll"]) });
      await tick();
      sockets[0].open();
      const first = sockets[0].sent.find((m) => m.op === "watch");
      sockets[0].push({ op: "chat", chat: "abc", streams: [] });
      sockets[0].push({ op: "chat_event", chat: "abc", event: "created", stream: "chat/abc/1" });
      sockets[0].drop();
      while (sockets.length < 2) await tick(1);
      sockets[1].open();
      const again = sockets[1].sent.find((m) => m.op === "watch");
      sockets[1].push({ op: "chat", chat: "abc", streams: [{ stream: "chat/abc/1" }] });
      sockets[1].push({ op: "error", code: "unknown_op", message: "no" });  // not pending: ignored
      const old = connect("/ws", options);  // a hub that predates "watch"
      old.watchChat("xyz", { onUnsupported: () => seen.push(["poll"]) });
      await tick();
      sockets[2].open();
      sockets[2].push({ op: "error", code: "unknown_op", message: "unknown op" });
      return { first, again, seen };
    }""",
        FAST,
    )
    assert r["first"] == r["again"] == {"op": "watch", "chat": "abc"}
    assert r["seen"] == [["snapshot", 0], ["created", "chat/abc/1"], ["snapshot", 1], ["poll"]]
