"""Idempotent producers from outside (issue 11, item 2): the retry window, sequence gaps, and that
no refusal or duplicate is answered before the state it was decided from is durable, across a
kill -9 of a real hub process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench.common import HubProcess
from tests.integration.conftest import WS


async def test_pipelined_producer_retries_get_their_original_offsets(hub, connect, session):
    a = await connect(hub.ws_url)
    await a.send(op="create", stream="w", id=0)
    await a.recv_op("ack")
    for seq in range(1, 8):  # pipelined
        await a.send(
            op="append", stream="w", data=[f"s{seq}"] * (2 if seq == 4 else 1), producer="p", seq=seq, id=seq
        )
    first = {}
    while len(first) < 7:
        f = await a.recv_op("ack")
        first[f["id"]] = (f["offset"], f["count"])
    b = await connect(hub.ws_url)  # a retrying producer on a new connection
    for seq in range(3, 8):
        await b.send(op="append", stream="w", data="retry", producer="p", seq=seq, id=seq)
    for _ in range(5):
        f = await b.recv()
        assert f["op"] == "ack" and f["duplicate"] is True, f
        assert (f["offset"], f["count"]) == first[f["id"]]
    await b.send(op="append", stream="w", data="old", producer="p", seq=2, id="old")
    f = await b.recv()
    assert (f["op"], f["code"], f["id"], f["stream"]) == ("error", "sequence_error", "old", "w")
    await b.send(op="append", stream="w", data="gap", producer="p", seq=9, id="gap")
    f = await b.recv()
    assert (f["op"], f["code"], f["id"]) == ("error", "sequence_gap", "gap")
    # HTTP follows the same rules, with the same codes
    h = {"Producer-Id": "p", "Producer-Seq": "6"}
    async with session.post(f"{hub.http}/streams/w", json={"data": "x"}, headers=h) as r:
        body = await r.json()
        assert r.status == 200 and body["duplicate"] is True and body["offset"] == first[6][0]
    h["Producer-Seq"] = "10"
    async with session.post(f"{hub.http}/streams/w", json={"data": "x"}, headers=h) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "sequence_gap"
    h["Producer-Seq"] = "1"
    async with session.post(f"{hub.http}/streams/w", json={"data": "x"}, headers=h) as r:
        assert r.status == 409 and (await r.json())["error"]["code"] == "sequence_error"
    async with session.get(f"{hub.http}/streams/w") as r:
        assert (await r.json())["chunks"] == ["s1", "s2", "s3", "s4", "s4", "s5", "s6", "s7"]


async def _frames_within(ws: WS, seconds: float) -> list[dict[str, Any]]:
    """Whatever arrives within ``seconds`` (the point: nothing should, yet)."""
    out = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            m = await ws.ws.receive(timeout=left)
        except TimeoutError:
            break
        if m.type != aiohttp.WSMsgType.TEXT:
            break
        out.append(msgspec.json.decode(m.data))
    return out


async def _chunks(session: aiohttp.ClientSession, base: str, sid: str) -> list[str]:
    async with session.get(f"{base}/streams/{sid}") as r:
        assert r.status == 200
        out: list[str] = (await r.json())["chunks"]
        return out


async def test_no_decision_before_durable_across_kill_9(tmp_path: Path):
    """The issue's reproduction: A acks seq 1, pipelines seq 2 and 3, drops; B resends 2 and 3 (and a
    gap, seq 5) while A's appends wait for the 2 s group commit; the hub is killed. Nothing B was
    told may be contradicted by what the restarted hub holds, and resending what was not
    acknowledged ends with exactly one, two, three."""

    def process() -> HubProcess:  # a fresh free port per start: another test may take a freed one
        args = ["--fsync-interval-ms", "2000"]
        return HubProcess(tmp_path / "data", fsync="interval", args=args, log=tmp_path / "hub.log")

    hub = process()
    await hub.start()
    try:
        async with aiohttp.ClientSession() as session:
            a = WS(await session.ws_connect(hub.ws_url))
            await a.send(op="append", stream="k", data="one", producer="p", seq=1, create=True, id=1)
            assert (await a.recv_op("ack"))["offset"] == 0
            await a.send(op="append", stream="k", data="two", producer="p", seq=2, id=2)
            await a.send(op="append", stream="k", data="three", producer="p", seq=3, id=3)
            await a.ws.close()
            b = WS(await session.ws_connect(hub.ws_url))
            await b.send(op="append", stream="k", data="two", producer="p", seq=2, id=2)
            await b.send(op="append", stream="k", data="three", producer="p", seq=3, id=3)
            await b.send(op="append", stream="k", data="five", producer="p", seq=5, id=5)
            early = await _frames_within(b, 0.3)
            hub.kill()
        hub = process()  # the same data dir
        await hub.start()
        async with aiohttp.ClientSession() as session:
            held = await _chunks(session, hub.url, "k")
            assert held in (["one"], ["one", "two", "three"])  # a record survives whole or not at all
            acked = set()
            for f in early:  # anything answered before the kill holds after it
                if f["op"] == "ack":
                    assert held[f["offset"]] == {2: "two", 3: "three"}[f["id"]], (f, held)
                    acked.add(f["id"])
                else:  # a gap decided from "last seq 3": that state was durable
                    assert (f["op"], f["code"], f["id"]) == ("error", "sequence_gap", 5), f
                    assert held == ["one", "two", "three"]
            c = WS(await session.ws_connect(hub.ws_url))
            for seq, text in ((2, "two"), (3, "three")):
                if seq not in acked:
                    await c.send(op="append", stream="k", data=text, producer="p", seq=seq, id=seq)
            for _ in range(2 - len(acked)):
                f = await c.recv(timeout=15)
                assert f["op"] == "ack", f
                assert f["offset"] == f["id"] - 1 and f.get("duplicate", False) == (held != ["one"])
            await c.send(op="append", stream="k", data="five", producer="p", seq=5, id=5)
            f = await c.recv(timeout=15)
            assert (f["op"], f["code"]) == ("error", "sequence_gap")  # the window came back with the data
            assert await _chunks(session, hub.url, "k") == ["one", "two", "three"]
            await c.ws.close()
    finally:
        await hub.stop()
