"""The Redis engine beyond the contract: its layout in Redis, the producer window, sealing, the
chat index, cross-hub live fan-out between two engines on one redis-server, cancellation safety.

Two engine objects on one server with one key prefix are two hubs: nothing is shared between them
but Redis.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from bench.redisproc import RedisServer
from storage import (
    PRODUCER_WINDOW,
    CloseInfo,
    SequenceError,
    SequenceGap,
    StreamClosed,
    StreamGone,
    StreamHandle,
    open_engine,
)
from storage.redis import RedisEngine
from storage.redis.keys import Space, tag

Make = Callable[..., Awaitable[RedisEngine]]


@pytest.fixture
async def make_redis(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Make]:
    made: list[RedisEngine] = []

    async def make(**kw: object) -> RedisEngine:
        kw.setdefault("prefix", redis_prefix)
        kw.setdefault("retention_every", 0.05)
        kw.setdefault("seal_delay_s", 0.0)
        eng = open_engine(redis_server.url, **kw)
        assert isinstance(eng, RedisEngine)
        await eng.start()
        made.append(eng)
        return eng

    yield make
    for e in made:
        await e.stop()


@pytest.fixture
async def r(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


class Recorder:
    def __init__(self) -> None:
        self.runs: list[tuple[int, list[bytes]]] = []
        self.ended: list[CloseInfo] = []
        self.gone = 0
        self.resets: list[str] = []
        self.reset_at: list[int] = []  # len(runs) at each reset: offsets restart meaning there
        self.changed = asyncio.Event()

    def on_chunks(self, stream: StreamHandle, offset: int, chunks: list[bytes]) -> None:
        self.runs.append((offset, list(chunks)))
        self.changed.set()

    def on_end(self, stream: StreamHandle, info: CloseInfo) -> None:
        self.ended.append(info)
        self.changed.set()

    def on_gone(self, stream: StreamHandle) -> None:
        self.gone += 1
        self.changed.set()

    def on_reset(self, stream: StreamHandle, epoch: str) -> None:
        self.resets.append(epoch)
        self.reset_at.append(len(self.runs))
        self.changed.set()

    @property
    def offsets(self) -> list[int]:
        return [off + i for off, run in self.runs for i in range(len(run))]

    @property
    def chunks(self) -> list[bytes]:
        return [c for _, run in self.runs for c in run]

    async def until(self, cond: Callable[[], object], timeout: float = 15.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():
                self.changed.clear()
                await self.changed.wait()


async def read_all(s: StreamHandle) -> list[bytes]:
    out: list[bytes] = []
    while got := await s.read_chunks(len(out)):
        out += got
    return out


async def poll(cond: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.02)


# --- layout and scripts -----------------------------------------------------------------------


async def test_one_hash_slot_per_stream_and_explicit_ids(make_redis: Make, r: aioredis.Redis) -> None:
    eng = await make_redis()
    s = await eng.create("a{b}c:d")  # braces and colons in an id do not change the hash tag
    await s.append([b"x", b"y"])
    k = eng.space.stream("a{b}c:d")
    t = "{" + tag("a{b}c:d") + "}"
    assert all(t in key for key in (k.meta, k.data, k.sealed, k.tomb, k.channel))
    entries = await r.xrange(k.data)
    assert [e for e, _ in entries] == [b"0-1", b"0-2"]  # entry id 0-<offset+1>
    assert int(await r.hget(k.meta, "n")) == 2


async def test_producer_window(make_redis: Make) -> None:
    eng = await make_redis()
    s = await eng.create("w")
    results = [await s.append([f"c{q}".encode()], "p", q) for q in range(1, 8)]
    for q in range(8 - PRODUCER_WINDOW, 8):  # the last PRODUCER_WINDOW appends answer as retries
        again = await s.append([f"c{q}".encode()], "p", q)
        assert again.duplicate and (again.offset, again.count) == (results[q - 1].offset, 1)
    with pytest.raises(SequenceError) as older:
        await s.append([b"c2"], "p", 7 - PRODUCER_WINDOW)
    assert older.value.code == "sequence_error"
    with pytest.raises(SequenceGap):
        await s.append([b"c9"], "p", 9)
    new_epoch = await s.append([b"e1"], "p", 100, epoch=1)  # a newer epoch starts anywhere
    assert not new_epoch.duplicate and new_epoch.offset == 7
    assert await read_all(s) == [f"c{q}".encode() for q in range(1, 8)] + [b"e1"]


async def test_sealed_answer_is_one_value_and_still_answers(make_redis: Make, r: aioredis.Redis) -> None:
    eng = await make_redis()
    s = await eng.create("chat/c1/a1", labels={"k": "v"})
    words = [f"tok{i} ".encode() for i in range(300)]
    for i in range(0, 300, 10):
        await s.append(words[i : i + 10], "p", i // 10 + 1)
    await s.close("done")
    k = eng.space.stream("chat/c1/a1")
    await poll(lambda: r.exists(k.sealed))
    assert await r.exists(k.meta, k.data) == 0
    sealed_size = await r.strlen(k.sealed)
    assert sealed_size < sum(map(len, words)) / 2  # zstd, lengths apart from the text
    fresh = await make_redis()  # another hub reads it from the sealed value
    s2 = await fresh.get_stream("chat/c1/a1")
    assert (s2.status, s2.next_offset, s2.meta.labels) == ("done", 300, {"k": "v"})
    assert await read_all(s2) == words and await s2.read_chunks(295, 2) == words[295:297]
    retry = await s2.append(words[290:300], "p", 30)
    assert retry.duplicate and (retry.offset, retry.count) == (290, 10)
    with pytest.raises(StreamClosed):
        await s2.append([b"late"])
    st = await s2.producer_state("p")
    assert st is not None and (st.seq, st.first_offset, st.count) == (30, 290, 10)
    await fresh.set_labels("chat/c1/a1", {"k": "w"})
    assert (await eng.get_stream("chat/c1/a1")).meta.labels == {"k": "w"}
    await eng.delete("chat/c1/a1")
    with pytest.raises(StreamGone):
        await fresh.get_stream("chat/c1/a1")


async def test_chats_have_their_own_sorted_set(make_redis: Make, r: aioredis.Redis) -> None:
    eng = await make_redis()
    for sid in ("chat/a/1", "chat/a/2", "chat/a-b/1", "chat/b/1", "chatter", "other"):
        await eng.create(sid)
    sp: Space = eng.space
    assert await r.zrange(sp.chat_index("chat/a/"), 0, -1) == [b"chat/a/1", b"chat/a/2"]
    assert await r.zrange(sp.ids, 0, -1) == [b"chatter", b"other"]
    assert await eng.list_streams("chat/a/") == ["chat/a/1", "chat/a/2"]
    assert await eng.list_streams("chat/") == ["chat/a-b/1", "chat/a/1", "chat/a/2", "chat/b/1"]
    assert await eng.list_streams("chat", limit=3) == ["chat/a-b/1", "chat/a/1", "chat/a/2"]
    assert await eng.list_streams("") == sorted(
        ["chat/a/1", "chat/a/2", "chat/a-b/1", "chat/b/1", "chatter", "other"]
    )
    await eng.delete("chat/b/1")
    assert await r.zrange(sp.chats, 0, -1) == [b"chat/a-b/", b"chat/a/"]  # an empty chat leaves the set


async def test_retention_sets_redis_expiry_and_leaves_a_tombstone(
    make_redis: Make, r: aioredis.Redis
) -> None:
    # expire() by hand only, and no seal in between (the fixture's is immediate): whether the seal
    # had run decided the outcome, as the script judged an unsealed stream's deadline by the clock
    # instead of by expire()'s ``now`` (a flake under load)
    eng = await make_redis(retention_every=3600, seal_delay_s=3600)
    s = await eng.create("ttl", ttl=30.0)
    await s.append([b"x"])
    k = eng.space.stream("ttl")
    assert await r.pttl(k.meta) == -1  # open: a ttl counts from the close
    await s.close()
    assert 0 < await r.pttl(k.meta) <= (30 + 60) * 1000  # deadline + grace
    assert await eng.expire() == []
    import time

    assert await eng.expire(now=time.time() + 31) == ["ttl"]
    assert await r.exists(k.tomb) == 1 and await r.exists(k.meta, k.data, k.sealed) == 0
    with pytest.raises(StreamGone):
        await eng.get_stream("ttl")


# --- cross-hub live fan-out ---------------------------------------------------------------------


async def test_listener_on_b_gets_appends_through_a_in_order_once(make_redis: Make) -> None:
    a, b = await make_redis(), await make_redis()
    sa = await a.create("x")
    sb = await b.get_stream("x")
    rec = Recorder()
    sb.listen(rec)
    await b._subscribed(sb)  # type: ignore[attr-defined]
    want = [f"{i}".encode() for i in range(300)]
    for i in range(0, 300, 30):  # ten producers' worth of concurrent appends
        await asyncio.gather(*(sa.append([c]) for c in want[i : i + 30]))
    await sa.close("done")
    await rec.until(lambda: rec.ended)
    assert rec.offsets == list(range(300))
    assert rec.chunks == await read_all(sa)
    assert [e.status for e in rec.ended] == ["done"] and sb.status == "done"


async def test_wait_and_events_fire_on_b_for_changes_through_a(make_redis: Make) -> None:
    a, b = await make_redis(), await make_redis()
    created: list[str] = []
    ended: list[tuple[str, str]] = []
    deleted: list[str] = []
    b.on_create.append(lambda s: created.append(s.id))
    b.on_end.append(lambda s: ended.append((s.id, s.status)))
    b.on_delete.append(deleted.append)
    sa = await a.create("ev")
    sb = await b.get_stream("ev")
    waiter = asyncio.ensure_future(sb.wait(0, timeout=15))
    await asyncio.sleep(0)
    await sa.append([b"one"])
    assert await waiter is True and sb.next_offset == 1
    assert await sb.wait(5, timeout=0.05) is False
    await sa.close("error", "boom")
    await poll(lambda: asyncio.sleep(0, result=bool(ended)))
    await a.delete("ev")
    await poll(lambda: asyncio.sleep(0, result=bool(deleted)))
    assert (created, ended, deleted) == (["ev"], [("ev", "error")], ["ev"])
    with pytest.raises(StreamGone):
        await sb.read_chunks(0)


async def test_live_traffic_uses_one_pubsub_connection_whatever_the_streams(
    make_redis: Make, r: aioredis.Redis
) -> None:
    a, b = await make_redis(), await make_redis(max_connections=4)
    recs = []
    for i in range(60):
        sa = await a.create(f"many/{i}")
        sb = await b.get_stream(f"many/{i}")
        rec = Recorder()
        sb.listen(rec)
        recs.append((sa, rec))
    await asyncio.gather(*(sa.append([b"hi"]) for sa, _ in recs))
    for _, rec in recs:
        await rec.until(lambda rec=rec: rec.chunks == [b"hi"])  # type: ignore[misc]
    clients = await r.client_list()
    pubsub = [c for c in clients if int(c.get("sub", 0)) > 0]
    assert len(pubsub) == 2  # one per engine, for 60 listened streams
    assert b.stats()["live_channels"] == 61  # 60 streams + the events channel, on that one connection


async def test_a_lost_pubsub_connection_catches_up_from_the_stream(
    make_redis: Make, r: aioredis.Redis
) -> None:
    a, b = await make_redis(), await make_redis()
    sa = await a.create("lost")
    sb = await b.get_stream("lost")
    rec = Recorder()
    sb.listen(rec)
    await b._subscribed(sb)  # type: ignore[attr-defined]
    for i in range(50):
        await sa.append([f"{i}".encode()])
        if i in (10, 30):
            await r.client_kill_filter(_type="pubsub")  # every pub/sub connection drops
    await sa.close()
    await rec.until(lambda: rec.ended)
    assert rec.offsets == list(range(50))
    assert b.stats()["live_reconnects"] + b._live.connects >= 2  # type: ignore[union-attr]


# --- cancellation (the CVE-2023-28858 class: a cancelled command's reply reaching another caller) ---


async def test_cancelled_commands_never_answer_another_caller(make_redis: Make) -> None:
    eng = await make_redis(max_connections=4)
    streams = []
    for i in range(8):
        s = await eng.create(f"cx/{i}")
        await s.append([f"{i}:{j}".encode() for j in range(40)])
        streams.append(s)
    appender = await eng.create("cx/appends")
    rng = random.Random(7)
    landed: list[tuple[int, bytes]] = []
    wrong: list[str] = []

    async def reader(i: int) -> None:
        got = await streams[i].read_chunks(5, 10)
        if got != [f"{i}:{j}".encode() for j in range(5, 15)]:
            wrong.append(f"stream {i} got {got[:2]!r}")

    async def writer(n: int) -> None:
        data = f"w{n}".encode()
        res = await appender.append([data])
        landed.append((res.offset, data))

    async def cancel_round(n: int) -> None:
        tasks = [asyncio.ensure_future(reader(rng.randrange(8))) for _ in range(12)]
        tasks += [asyncio.ensure_future(writer(n * 100 + k)) for k in range(4)]
        await asyncio.sleep(rng.random() * 0.004)  # cancel at random points of the commands' flight
        for t in tasks:
            if rng.random() < 0.5:
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async with asyncio.timeout(60):  # a leaked connection would block the pool: fail, do not hang
        for n in range(40):
            await cancel_round(n)
    assert wrong == []
    got = await read_all(appender)
    for off, data in landed:  # every acknowledged append is where its reply said
        assert got[off] == data
    assert len(set(got)) == len(got)  # a cancelled append landed once or not at all
    assert len(landed) > 20  # the test did exercise appends


async def test_a_live_handle_answers_lookups_without_a_round_trip_and_learns_labels(make_redis: Make) -> None:
    """A stream listened to on hub B is kept current by its notifications, so B's get_stream
    answers from memory (a producer's appends each look their stream up); labels set through hub A
    reach it on the stream's channel."""
    a, b = await make_redis(), await make_redis()
    await a.create("lb", labels={"v": "1"})
    sb = await b.get_stream("lb")
    rec = Recorder()
    sb.listen(rec)
    await b._subscribed(sb)  # type: ignore[attr-defined]
    async with asyncio.timeout(10):
        while not sb._fresh:  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
    calls = b._pipe.calls  # type: ignore[attr-defined]
    assert await b.get_stream("lb") is sb
    assert b._pipe.calls == calls  # type: ignore[attr-defined]  # no script ran
    await a.set_labels("lb", {"v": "2"})
    async with asyncio.timeout(10):
        while (await b.get_stream("lb")).meta.labels != {"v": "2"}:
            await asyncio.sleep(0.01)
    assert sb.meta.epoch == (await a.get_stream("lb")).epoch  # the meta note keeps B's epoch
    sb.unlisten(rec)
    assert (await b.get_stream("lb")).meta.labels == {"v": "2"}  # not listened to: loaded again


async def test_concurrent_appends_share_round_trips_in_call_order(make_redis: Make) -> None:
    """The script pipe sends what queued during a round trip as one batch: appends to many streams
    share round trips, and each stream's appends still land in the order they were made."""
    eng = await make_redis()
    streams = [await eng.create(f"pipe/{i}") for i in range(16)]
    pipe = eng._pipe  # type: ignore[attr-defined]
    batches, calls = pipe.batches, pipe.calls
    results = await asyncio.gather(*(s.append([f"{i}".encode()], "p", i) for i in range(20) for s in streams))
    assert pipe.calls - calls == 16 * 20 and pipe.batches - batches < (16 * 20) // 4
    for s in streams:
        assert await read_all(s) == [f"{i}".encode() for i in range(20)]
    assert sorted(r.offset for r in results) == sorted(list(range(20)) * 16)
