"""Chats: find the live answer from any device (watch), stop it, delete a chat, fork a stream."""

from __future__ import annotations

import asyncio

from hub.client import Producer, Subscriber

from .conftest import wait_for


async def test_watch_learns_of_answers_started_from_another_device(hub, connect, session):
    phone = await connect(hub.ws_url)
    laptop = await connect(hub.ws_url)
    await laptop.send(op="append", stream="chat/c1/0001", data="earlier answer", id=1, create=True)
    await laptop.recv_op("ack")
    await laptop.send(op="close", stream="chat/c1/0001", id=2)
    await laptop.recv_op("ack")

    await phone.send(op="watch", chat="c1")
    snap = await phone.recv_op("chat")
    assert [s["stream"] for s in snap["streams"]] == ["chat/c1/0001"]
    assert snap["streams"][0]["status"] == "done" and snap["streams"][0]["next"] == 1

    await laptop.send(op="create", stream="chat/c1/0002", id=3, labels={"prompt": "hi"})
    ev = await phone.recv_op("chat_event")
    assert ev["event"] == "created" and ev["stream"] == "chat/c1/0002" and ev["labels"] == {"prompt": "hi"}
    # the phone attaches to the live answer at once
    await phone.send(op="subscribe", stream="chat/c1/0002")
    for i, tok in enumerate(["Hel", "lo"]):
        await laptop.send(op="append", stream="chat/c1/0002", data=tok, id=10 + i)
    await laptop.send(op="close", stream="chat/c1/0002", id=20)
    got, end = await phone.collect("chat/c1/0002")
    assert "".join(d for _, d in got) == "Hello" and end["status"] == "done"
    ev = await phone.recv_op("chat_event")
    assert ev["event"] == "ended" and ev["status"] == "done" and ev["next"] == 2

    # other chats are not reported
    await laptop.send(op="create", stream="chat/other/0001", id=30)
    await laptop.recv_op("ack")
    async with session.delete(f"{hub.http}/chats/c1") as r:
        assert r.status == 204
    evs = [await phone.recv_op("chat_event") for _ in range(2)]
    assert sorted(e["stream"] for e in evs) == ["chat/c1/0001", "chat/c1/0002"]
    assert {e["event"] for e in evs} == {"deleted"}
    async with session.get(f"{hub.http}/chats/c1") as r:
        assert (await r.json())["streams"] == []
    async with session.get(f"{hub.http}/streams/chat/c1/0001") as r:
        assert r.status == 410
    async with session.get(f"{hub.http}/chats/other") as r:
        assert [s["stream"] for s in (await r.json())["streams"]] == ["chat/other/0001"]


async def test_watch_only_reports_streams_the_token_may_read(start_hub, session):
    hub = await start_hub(jwt_secret="j" * 32)
    auth = hub.hub.auth
    alice = auth.mint(read=["chat/c2/a*"], write=["chat/c2/a*"])
    ws = await session.ws_connect(hub.ws_url + "?token=" + alice)
    await ws.send_json({"op": "watch", "chat": "c2"})
    assert (await ws.receive_json(timeout=5))["op"] == "chat"
    admin = auth.mint(write=["*"])
    async with session.put(
        f"{hub.http}/streams/chat/c2/b-secret", headers={"Authorization": f"Bearer {admin}"}
    ):
        pass
    async with session.put(
        f"{hub.http}/streams/chat/c2/a-mine", headers={"Authorization": f"Bearer {admin}"}
    ):
        pass
    ev = await ws.receive_json(timeout=5)
    assert ev["stream"] == "chat/c2/a-mine"  # the other stream's creation was never sent
    async with session.delete(f"{hub.http}/chats/c2", headers={"Authorization": f"Bearer {alice}"}) as r:
        assert r.status == 403  # all or nothing: alice may not delete b-secret
    await ws.close()


async def test_stop_reaches_the_producer_keeps_the_partial_answer_and_a_disconnect_is_not_a_stop(
    hub, session
):
    stopped = asyncio.Event()

    async def on_cancel() -> None:
        stopped.set()

    tokens: list[str] = []
    async with Producer(hub.ws_url, "chat/c3/0001", on_cancel=on_cancel) as p:
        reader = Subscriber(hub.ws_url, "chat/c3/0001")
        it = reader.__aiter__()
        for i in range(5):
            tokens.append(f"t{i} ")
            await p.append(tokens[-1])
        assert (await it.__anext__()).data == "t0 "
        await reader.disconnect()  # a tab closing or a network drop is not a Stop
        for i in range(5, 10):
            tokens.append(f"t{i} ")
            await p.append(tokens[-1])
        assert not p.cancelled
        watcher = Subscriber(hub.ws_url, "chat/c3/0001")
        async with session.post(f"{hub.http}/streams/chat/c3/0001/cancel") as r:
            assert r.status == 202
        await asyncio.wait_for(stopped.wait(), 5)
        assert p.cancelled
    assert await watcher.text() == "".join(tokens)  # the partial answer is kept
    assert watcher.status == "cancelled"


async def test_fork_shares_sealed_segments_and_continues_independently(start_hub, session):
    hub = await start_hub(segment_bytes=2048)
    base = hub.http
    toks = [f"<{i:04d}>" for i in range(1200)]
    async with session.put(f"{base}/streams/chat/f/0001"):
        pass
    for i in range(0, len(toks), 100):
        async with session.post(f"{base}/streams/chat/f/0001", json={"data": toks[i : i + 100]}) as r:
            assert r.status == 200
    src = hub.hub.store.get("chat/f/0001")
    await wait_for(lambda: sum(s.sealed for s in src.log.segments) >= 3, what="sealing")
    async with session.post(
        f"{base}/streams/chat/f/0001/fork", json={"stream": "chat/f/0002", "upto": 1000}
    ) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    assert body["next"] == 1000 and body["shared_segments"] >= 3
    fork = hub.hub.store.get("chat/f/0002")
    shared = [seg.path for seg in fork.log.segments if seg.sealed]
    assert all(p.stat().st_nlink == 2 for p in shared)  # the same inode as the source's: no copy
    async with session.post(f"{base}/streams/chat/f/0002", json={"data": ["<regen>"]}) as r:
        assert (await r.json())["offset"] == 1000
    async with session.get(f"{base}/streams/chat/f/0002?from=0&limit=5000") as r:
        assert (await r.json())["chunks"] == toks[:1000] + ["<regen>"]
    async with session.get(f"{base}/streams/chat/f/0001?from=0&limit=5000") as r:
        assert (await r.json())["chunks"] == toks  # the source is untouched
    # deleting the source leaves the fork whole; after a restart too
    async with session.delete(f"{base}/streams/chat/f/0001") as r:
        assert r.status == 204
    data = hub.config.data_dir
    await hub.server.close()
    again = await start_hub(data_dir=data, segment_bytes=2048)
    s = again.hub.store.get("chat/f/0002")
    assert s.read(0, 5000) == [t.encode() for t in [*toks[:1000], "<regen>"]]
    assert s.info().labels["forked_from"] == "chat/f/0001"
    async with session.post(f"{again.http}/streams/nope/fork", json={"stream": "x"}) as r:
        assert r.status == 404
    async with session.post(
        f"{again.http}/streams/chat/f/0002/fork", json={"stream": "y", "upto": 99999}
    ) as r:
        assert r.status == 416
