"""WebSocket protocol against the real hub: replay-then-live, resume, end, appends, cancel, errors."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from .conftest import WS, wait_for


async def produce(ws: WS, stream: str, tokens: list[str], producer: str = "p1") -> None:
    """Append every token (pipelined) with producer id + seq, wait for every ack, then close."""
    for i, t in enumerate(tokens):
        await ws.send(op="append", stream=stream, data=t, id=i, producer=producer, seq=i)
    acked = set()
    while len(acked) < len(tokens):
        f = await ws.recv()
        assert f["op"] == "ack", f
        acked.add(f["id"])
    await ws.send(op="close", stream=stream, status="done", id="close")
    assert (await ws.recv_op("ack"))["id"] == "close"


def tokens(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", " cat", " sat", ".", "\n", " on", " mat", " é", " 🚀"]
    return [rng.choice(words) + str(i % 7) for i in range(n)]


async def test_two_subscribers_receive_identical_sequences(hub, connect):
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="s", id=0)
    await prod.recv_op("ack")
    a, b = await connect(hub.ws_url), await connect(hub.ws_url)
    await a.send(op="subscribe", stream="s", **{"from": 0})
    await b.send(op="subscribe", stream="s", **{"from": 0})
    toks = tokens(500)
    results = await asyncio.gather(a.collect("s"), b.collect("s"), produce(prod, "s", toks))
    (ga, ea), (gb, eb) = results[0], results[1]
    assert ga == gb == list(enumerate(toks))
    assert ea["status"] == eb["status"] == "done" and ea["offset"] == 500


async def test_subscribe_while_appends_race_the_replay(hub, connect):
    """Subscribers join at random moments during a fast producer: no gap, no duplicate, no reorder."""
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="race", id=0)
    await prod.recv_op("ack")
    toks = tokens(2000, seed=1)
    producing = asyncio.create_task(produce(prod, "race", toks))
    subs = []
    for k in range(6):
        await wait_for(lambda k=k: hub.hub.store.get("race").next_offset >= k * 300, what="progress")
        ws = await connect(hub.ws_url)
        start = random.Random(k).randint(0, hub.hub.store.get("race").next_offset)
        await ws.send(op="subscribe", stream="race", **{"from": start})
        subs.append((start, asyncio.create_task(ws.collect("race"))))
    await producing
    for start, task in subs:
        got, end = await task
        assert got == list(enumerate(toks))[start:]
        assert end["offset"] == len(toks)


async def test_disconnect_at_random_point_and_resume_gets_exactly_the_rest(hub, connect):
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="r", id=0)
    await prod.recv_op("ack")
    toks = tokens(800, seed=2)
    producing = asyncio.create_task(produce(prod, "r", toks))
    got: list[tuple[int, str]] = []
    rng = random.Random(3)
    status = None
    while status is None:
        ws = await connect(hub.ws_url)
        await ws.send(op="subscribe", stream="r", **{"from": len(got)})
        assert (await ws.recv_op("subscribed"))["offset"] == len(got)
        cut = rng.randint(1, 150)
        while cut > 0:
            f = await ws.recv()
            if f["op"] == "end":
                status = f["status"]
                break
            if f["op"] == "chunks":
                assert f["offset"] == len(got)
                got += [(f["offset"] + i, d) for i, d in enumerate(f["data"])]
                cut -= len(f["data"])
        await ws.ws.close()
    await producing
    assert got == list(enumerate(toks))
    assert hub.hub.counters.reconnects >= 1


async def test_late_subscriber_after_end_gets_everything_and_status(hub, connect):
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="late", id=0)
    await prod.recv_op("ack")
    toks = tokens(300, seed=4)
    for i, t in enumerate(toks):
        await prod.send(op="append", stream="late", data=t, id=i)
    for _ in toks:
        await prod.recv_op("ack")
    await prod.send(op="close", stream="late", status="error", error="model overloaded", id="c")
    await prod.recv_op("ack")
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream="late")
    got, end = await ws.collect("late")
    assert got == list(enumerate(toks))
    assert end == {
        "op": "end",
        "stream": "late",
        "offset": 300,
        "status": "error",
        "error": "model overloaded",
    }
    # from the very end: only the end frame
    await ws.send(op="subscribe", stream="late", **{"from": 300})
    got, end = await ws.collect("late")
    assert got == [] and end["status"] == "error"


async def test_fifty_concurrent_streams_interleaved(hub, connect):
    prods = [await connect(hub.ws_url) for _ in range(5)]
    names = [f"many/{i}" for i in range(50)]
    for i, n in enumerate(names):
        await prods[i % 5].send(op="create", stream=n, id=n)
    for p in prods:
        for _ in range(10):
            await p.recv_op("ack")
    sub = await connect(hub.ws_url)
    for n in names:
        await sub.send(op="subscribe", stream=n)
    expected = {n: [f"{n}:{k}" for k in range(40)] for n in names}

    async def run(p: WS, mine: list[str]) -> None:
        for k in range(40):
            for n in mine:
                await p.send(op="append", stream=n, data=expected[n][k], id=f"{n}:{k}")
        for _ in range(40 * len(mine)):
            await p.recv_op("ack")
        for n in mine:
            await p.send(op="close", stream=n, id=f"close:{n}")
        for _ in mine:
            await p.recv_op("ack")

    got: dict[str, list[str]] = {n: [] for n in names}
    ended: set[str] = set()

    async def read_all() -> None:
        while len(ended) < len(names):
            f = await sub.recv(timeout=20)
            if f["op"] == "chunks":
                assert f["offset"] == len(got[f["stream"]])
                got[f["stream"]] += f["data"]
            elif f["op"] == "end":
                ended.add(f["stream"])

    await asyncio.gather(read_all(), *(run(p, names[i::5]) for i, p in enumerate(prods)))
    assert got == expected


async def test_idempotent_ws_append_retry_after_reconnect(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="idem", data="a", id=1, producer="P", seq=1, create=True)
    assert (await ws.recv_op("ack"))["offset"] == 0
    await ws.send(op="append", stream="idem", data="b", id=2, producer="P", seq=2)
    first = await ws.recv_op("ack")
    await ws.ws.close()
    # the producer never saw the ack (say), reconnects and retries seq 2, then goes on
    ws2 = await connect(hub.ws_url)
    await ws2.send(op="append", stream="idem", data="b", id=3, producer="P", seq=2)
    retry = await ws2.recv_op("ack")
    assert retry["offset"] == first["offset"] == 1 and retry["duplicate"] is True
    await ws2.send(op="append", stream="idem", data="c", id=4, producer="P", seq=3)
    assert (await ws2.recv_op("ack"))["offset"] == 2
    assert hub.hub.store.get("idem").read(0) == [b"a", b"b", b"c"]


async def test_cancel_reaches_the_producer(hub, connect):
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="c", id=0)
    await prod.recv_op("ack")
    reader = await connect(hub.ws_url)
    await reader.send(op="subscribe", stream="c")
    await reader.recv_op("subscribed")
    await reader.send(op="cancel", stream="c")
    f = await prod.recv_op("cancel")
    assert f == {"op": "cancel", "stream": "c"}
    # later acks carry the flag too, so a producer that missed the frame still learns
    await prod.send(op="append", stream="c", data="x", id=1)
    assert (await prod.recv_op("ack"))["cancelled"] is True
    await prod.send(op="close", stream="c", status="cancelled", id=2)
    await prod.recv_op("ack")
    got, end = await reader.collect("c")
    assert got == [(0, "x")] and end["status"] == "cancelled"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "malformed_frame"),
        ('{"op": "launch"}', "unknown_op"),
        ("[1, 2]", "malformed_frame"),
        ('{"op": "subscribe", "stream": 5}', "malformed_frame"),
        ('{"op": "subscribe", "stream": "x", "from": -1}', "invalid_offset"),
        ('{"op": "subscribe", "stream": "x", "from": 1e300}', "invalid_offset"),  # docs: not an integer
        ('{"op": "subscribe", "stream": "nope"}', "stream_not_found"),
        ('{"op": "append", "stream": "nope", "data": "x"}', "stream_not_found"),
        ('{"op": "append", "stream": "x", "data": {"a": 1}}', "malformed_frame"),
        ('{"op": "subscribe", "stream": ""}', "invalid_stream_id"),
        ('{"op": "subscribe", "stream": "a\\u0000b"}', "invalid_stream_id"),
    ],
)
async def test_bad_frames_get_a_typed_error_and_the_connection_survives(hub, connect, frame, code):
    ws = await connect(hub.ws_url)
    await ws.ws.send_str(frame)
    f = await ws.recv_op("error")
    assert f["code"] == code, f
    await ws.send(op="ping", t=7)
    assert (await ws.recv_op("pong"))["t"] == 7


async def test_future_offset_closed_stream_and_oversized_chunk(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="e", data="x", id=1, create=True)
    await ws.recv_op("ack")
    await ws.send(op="subscribe", stream="e", **{"from": 5})
    assert (await ws.recv_op("error"))["code"] == "offset_out_of_range"
    await ws.send(op="append", stream="e", data="y" * (hub.config.max_chunk_bytes + 1), id=2)
    err = await ws.recv_op("error")
    assert err["code"] == "chunk_too_large" and err["id"] == 2
    await ws.send(op="close", stream="e", id=3)
    await ws.recv_op("ack")
    await ws.send(op="append", stream="e", data="z", id=4)
    err = await ws.recv_op("error")
    assert err["code"] == "stream_closed" and err["id"] == 4
    assert hub.hub.store.get("e").read(0) == [b"x"]  # nothing acknowledged was lost, nothing else written


async def test_oversized_frame_closes_only_that_connection(hub, connect):
    bystander = await connect(hub.ws_url)
    ws = await connect(hub.ws_url)
    await ws.ws.send_str("x" * (hub.config.max_message_bytes + 10))
    m = await ws.ws.receive(timeout=10)
    assert ws.ws.close_code == 1009 or m.type.name in ("CLOSE", "CLOSED", "CLOSING")
    await bystander.send(op="ping", t=1)
    assert (await bystander.recv_op("pong"))["t"] == 1


async def test_subscribe_from_now_and_epoch_reset(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="n", data=["a", "b"], id=1, create=True)
    await ws.recv_op("ack")
    await ws.send(op="subscribe", stream="n", **{"from": "now"})
    sub = await ws.recv_op("subscribed")
    assert sub["offset"] == 2
    await ws.send(op="append", stream="n", data="c", id=2)
    f = await ws.recv_op("chunks")
    assert f["offset"] == 2 and f["data"] == ["c"]
    # a client holding offsets from another epoch is told to reset and gets everything again
    await ws.send(op="subscribe", stream="n", **{"from": 3, "epoch": "not-the-epoch"})
    r = await ws.recv_op("reset")
    assert r["epoch"] == sub["epoch"]
    f = await ws.recv_op("chunks")
    assert f["offset"] == 0 and f["data"] == ["a", "b", "c"]


async def test_coalescing_merges_tokens_but_offsets_stay_exact(hub, connect):
    prod = await connect(hub.ws_url)
    await prod.send(op="create", stream="co", id=0)
    await prod.recv_op("ack")
    ws = await connect(hub.ws_url)
    await ws.send(op="subscribe", stream="co", coalesce_ms=50)
    await ws.recv_op("subscribed")
    toks = tokens(300, seed=9)
    frames = 0
    collecting = asyncio.create_task(ws.collect("co"))
    await produce(prod, "co", toks)
    got, _ = await collecting
    assert got == list(enumerate(toks))
    frames = hub.hub.fanout.stats.frames
    assert frames < len(toks)  # merged into fewer frames


async def test_finished_subscriptions_do_not_count_against_the_limit(start_hub, connect):
    """Regression (found by bench.soak): ended subscriptions stayed in the connection's table forever."""
    hub = await start_hub(max_subscriptions=4)
    ws = await connect(hub.ws_url)
    for i in range(12):
        sid = f"fin/{i}"
        await ws.send(op="append", stream=sid, data="x", id=i, create=True)
        await ws.recv_op("ack")
        await ws.send(op="close", stream=sid, id=f"c{i}")
        await ws.recv_op("ack")
        await ws.send(op="subscribe", stream=sid)
        got, end = await ws.collect(sid)
        assert got == [(0, "x")] and end["status"] == "done"
    conn = next(iter(hub.hub.connections))
    assert conn.subs == {}  # type: ignore[attr-defined]


async def test_per_stream_bookkeeping_ends_with_the_stream(hub, connect):
    """Regression (found by bench.soak): a long-lived producer connection kept every stream's cancel
    registration until it disconnected."""
    ws = await connect(hub.ws_url)
    for i in range(20):
        await ws.send(op="append", stream=f"book/{i}", data="x", id=i, create=True)
        await ws.recv_op("ack")
        await ws.send(op="cancel", stream=f"book/{i}")
        await ws.recv_op("cancel")
        await ws.send(op="close", stream=f"book/{i}", status="cancelled", id=f"c{i}")
        await ws.recv_op("ack")
    conn = next(iter(hub.hub.connections))
    assert conn.produced == set()  # type: ignore[attr-defined]
    assert len(hub.hub.cancel_listeners) == 0 and hub.hub.cancel_requested == set()


async def test_subscribe_and_cancel_echo_their_request_ids(hub, connect):
    ws = await connect(hub.ws_url)
    await ws.send(op="append", stream="ids", data="x", id=1, create=True)
    await ws.recv_op("ack")
    await ws.send(op="subscribe", stream="ids", id="s1")
    assert (await ws.recv_op("subscribed"))["id"] == "s1"
    await ws.send(op="subscribe", stream="nope", id="s2")
    err = await ws.recv_op("error")
    assert err["id"] == "s2" and err["code"] == "stream_not_found"
    await ws.send(op="cancel", stream="ids", id="c1")
    ack = await ws.recv_op("ack")
    assert ack["id"] == "c1" and ack["stream"] == "ids"
    await ws.send(op="cancel", stream="nope", id="c2")
    err = await ws.recv_op("error")
    assert err["id"] == "c2" and err["code"] == "stream_not_found"


async def test_permessage_deflate_is_off_unless_configured(start_hub):
    """Every browser offers permessage-deflate; aiohttp's zlib state would cost ~100 KiB per tab."""
    for compress, expected in ((False, None), (True, "permessage-deflate")):
        running = await start_hub(ws_compress=compress)
        async with aiohttp.ClientSession() as s, s.ws_connect(running.ws_url, compress=15) as ws:
            ext = ws._response.headers.get("Sec-WebSocket-Extensions")
            assert (ext.split(";")[0] if ext else None) == expected
            await ws.send_json({"op": "ping", "t": 7})
            reply = await ws.receive_json(timeout=5)
            assert reply["op"] == "pong" and reply["t"] == 7


async def test_an_idle_connection_holds_no_writer_task(hub, connect):
    """The outbox's writer runs only while frames are queued, and a later frame starts it again."""
    ws = await connect(hub.ws_url)
    await ws.send(op="create", stream="idle/w", id=0)
    await ws.recv_op("ack")
    await ws.send(op="subscribe", stream="idle/w", id=1)
    await ws.recv_op("subscribed")
    conn = next(iter(hub.hub.connections))
    outbox = conn.outbox  # type: ignore[attr-defined]
    await wait_for(lambda: outbox._writer is None, what="the writer task to end")
    assert outbox._q is None
    assert conn.subs["idle/w"]._task is None  # type: ignore[attr-defined]  # replay done: live
    await ws.send(op="ping", t=1)
    assert (await ws.recv_op("pong"))["t"] == 1
