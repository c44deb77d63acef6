"""Ops on one stream start in arrival order on a WebSocket, also when some run in a task (a create,
a close, an append that needs the full path) and the ones after them could take the task-free path
(``Hub.append_nowait``): docs/protocol.md, "Order"."""

from __future__ import annotations


async def _create(ws, sid):
    await ws.send(op="create", stream=sid, id="c")
    assert (await ws.recv_op("ack"))["id"] == "c"


async def _replies(ws, n):
    out = {}
    while len(out) < n:
        f = await ws.recv()
        out[f.get("id")] = f
    return out


async def test_create_true_on_existing_stream_then_plain_append_keep_order(start_hub, connect):
    hub = await start_hub(fsync="always")
    ws = await connect(hub.ws_url)
    await _create(ws, "o/a")
    await ws.send(op="append", stream="o/a", data="first", id=1, create=True)
    await ws.send(op="append", stream="o/a", data="second", id=2)
    r = await _replies(ws, 2)
    assert hub.hub.store.get("o/a").read(0, 10) == [b"first", b"second"]
    assert (r[1]["offset"], r[2]["offset"]) == (0, 1)


async def test_append_pipelined_after_close_is_refused(start_hub, connect):
    hub = await start_hub(fsync="always")
    ws = await connect(hub.ws_url)
    await _create(ws, "o/b")
    await ws.send(op="append", stream="o/b", data="a", id=1)
    await ws.send(op="close", stream="o/b", id=2)
    await ws.send(op="append", stream="o/b", data="late", id=3)
    r = await _replies(ws, 3)
    assert (r[3]["op"], r[3].get("code")) == ("error", "stream_closed"), r[3]
    assert hub.hub.store.get("o/b").read(0, 10) == [b"a"]


async def test_sequence_gap_pipelined_before_the_missing_seq_is_still_a_gap(start_hub, connect):
    hub = await start_hub(fsync="always")
    ws = await connect(hub.ws_url)
    await _create(ws, "o/c")
    await ws.send(op="append", stream="o/c", data="s0", id=0, producer="P", seq=0)
    assert (await ws.recv_op("ack"))["id"] == 0
    await ws.send(op="append", stream="o/c", data="s2", id=2, producer="P", seq=2)
    await ws.send(op="append", stream="o/c", data="s1", id=1, producer="P", seq=1)
    r = await _replies(ws, 2)
    assert (r[2]["op"], r[2].get("code")) == ("error", "sequence_gap"), r[2]
