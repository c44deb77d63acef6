"""The engine contract: the same tests against every storage engine (storage/engine.py's invariants).

Each test talks to the engine only through ``storage.engine.Engine`` / ``StreamHandle``. The
``engine`` fixture (tests/storage/conftest.py) is parametrized by engine kind, so a new engine
passes exactly these tests before the hub may use it.
"""

from __future__ import annotations

import asyncio

import pytest

from storage import (
    CloseInfo,
    Engine,
    InvalidStreamId,
    SequenceError,
    SequenceGap,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamHandle,
    StreamNotFound,
)


async def read_all(s: StreamHandle, start: int = 0, step: int = 3) -> list[bytes]:
    out: list[bytes] = []
    while got := await s.read_chunks(start + len(out), max_chunks=step):
        out += got
    return out


class Recorder:
    """A listener that records what it got, and lets a test wait for it."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, list[bytes]]] = []
        self.ended: list[CloseInfo] = []
        self.gone = 0
        self.changed = asyncio.Event()

    def on_chunks(self, stream: StreamHandle, offset: int, chunks: list[bytes]) -> None:
        self.chunks.append((offset, list(chunks)))
        self.changed.set()

    def on_end(self, stream: StreamHandle, info: CloseInfo) -> None:
        self.ended.append(info)
        self.changed.set()

    def on_gone(self, stream: StreamHandle) -> None:
        self.gone += 1
        self.changed.set()

    async def until(self, cond: object, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not cond():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


async def test_engine_implements_the_protocol(engine: Engine) -> None:
    assert isinstance(engine, Engine)
    s = await engine.create("c/1")
    assert isinstance(s, StreamHandle)


async def test_dense_offsets_read_back_in_order(engine: Engine) -> None:
    s = await engine.create("c/dense", labels={"k": "v"})
    assert (s.next_offset, s.status, s.ended) == (0, "open", False)
    r1 = await s.append([b"a", b"b"])
    r2 = await s.append([b"c"])
    assert (r1.offset, r1.count, r2.offset, r2.count) == (0, 2, 2, 1)
    assert s.next_offset == 3
    assert await read_all(s) == [b"a", b"b", b"c"]
    assert await s.read_chunks(2) == [b"c"]
    assert await s.read_chunks(3) == []
    assert s.meta.labels == {"k": "v"} and s.meta.id == "c/dense" and s.epoch == s.meta.epoch


async def test_get_exists_list(engine: Engine) -> None:
    for sid in ("chat/a/2", "chat/a/1", "chat/b/1"):
        await engine.create(sid)
    assert await engine.list_streams("chat/a/") == ["chat/a/1", "chat/a/2"]
    assert await engine.list_streams("chat/", limit=2) == ["chat/a/1", "chat/a/2"]
    assert await engine.stream_exists("chat/b/1")
    assert not await engine.stream_exists("chat/c/1")
    s = await engine.get_stream("chat/b/1")
    assert s.id == "chat/b/1"
    with pytest.raises(StreamNotFound):
        await engine.get_stream("chat/c/1")
    with pytest.raises(InvalidStreamId):
        await engine.get_stream("")


async def test_create_twice(engine: Engine) -> None:
    s = await engine.create("c/twice")
    await s.append([b"x"])
    with pytest.raises(StreamExists):
        await engine.create("c/twice")
    again = await engine.create("c/twice", exist_ok=True)
    assert again.next_offset == 1


async def test_idempotent_producer(engine: Engine) -> None:
    s = await engine.create("c/idem")
    a = await s.append([b"one"], "p", 1)
    b = await s.append([b"two", b"three"], "p", 2)
    retry = await s.append([b"two", b"three"], "p", 2)
    assert (retry.offset, retry.count, retry.duplicate) == (b.offset, 2, True)
    assert not a.duplicate and not b.duplicate
    with pytest.raises(SequenceError):
        await s.append([b"too old"], "p", 0)
    # the gap and retry-window rules of storage/engine.py are checked by test_producer_window (issue 11)
    st = await s.producer_state("p")
    assert st is not None and (st.seq, st.first_offset, st.count) == (2, 1, 2)
    assert await s.producer_state("nobody") is None
    assert await read_all(s) == [b"one", b"two", b"three"]


async def test_older_producer_epoch_is_fenced(engine: Engine) -> None:
    s = await engine.create("c/fence")
    await s.append([b"new"], "p", 1, epoch=2)
    with pytest.raises(SequenceError):
        await s.append([b"old"], "p", 5, epoch=1)
    assert await read_all(s) == [b"new"]


async def test_close_is_durable_and_final(engine: Engine) -> None:
    s = await engine.create("c/close")
    await s.append([b"partial"])
    await s.close("error", "boom")
    assert (s.status, s.ended) == ("error", True)
    assert s.close_info is not None and s.close_info.error == "boom"
    with pytest.raises(StreamClosed):
        await s.append([b"late"])
    again = await engine.get_stream("c/close")
    assert again.status == "error" and await read_all(again) == [b"partial"]
    info = again.info()
    assert (info.status, info.error, info.chunks) == ("error", "boom", 1)


async def test_append_and_close_in_one_step(engine: Engine) -> None:
    s = await engine.create("c/appclose")
    await s.append([b"last"], close=True)
    assert s.status == "done" and await read_all(s) == [b"last"]


async def test_wait_wakes_on_append_and_on_end(engine: Engine) -> None:
    s = await engine.create("c/wait")
    assert await s.wait(0, timeout=0.05) is False
    waiter = asyncio.ensure_future(s.wait(0, timeout=10))
    await s.append([b"x"])
    assert await waiter is True
    waiter = asyncio.ensure_future(s.wait(1, timeout=10))
    await s.close()
    assert await waiter is True


async def test_listeners_get_each_durable_chunk_once_in_order_then_the_end(engine: Engine) -> None:
    s = await engine.create("c/listen")
    rec = Recorder()
    s.listen(rec)
    await asyncio.gather(*(s.append([f"{i}".encode()]) for i in range(20)))
    await s.close("done")
    await rec.until(lambda: rec.ended)
    flat = [c for off, run in rec.chunks for c in run]
    offsets = [off + i for off, run in rec.chunks for i in range(len(run))]
    assert offsets == list(range(20))
    assert flat == await read_all(s)
    assert [e.status for e in rec.ended] == ["done"]
    s.unlisten(rec)


async def test_delete_answers_gone(engine: Engine) -> None:
    s = await engine.create("c/del")
    rec = Recorder()
    s.listen(rec)
    deleted: list[str] = []
    engine.on_delete.append(deleted.append)
    await engine.delete("c/del")
    assert deleted == ["c/del"]
    await rec.until(lambda: rec.gone)
    with pytest.raises(StreamGone):
        await engine.get_stream("c/del")
    assert not await engine.stream_exists("c/del")


async def test_events(engine: Engine) -> None:
    created: list[str] = []
    ended: list[tuple[str, str]] = []
    engine.on_create.append(lambda s: created.append(s.id))
    engine.on_end.append(lambda s: ended.append((s.id, s.status)))
    s = await engine.create("c/ev")
    await s.close("cancelled")
    assert created == ["c/ev"]
    async with asyncio.timeout(10):
        while not ended:
            await asyncio.sleep(0.01)
    assert ended == [("c/ev", "cancelled")]


async def test_fork_shares_the_prefix(engine: Engine) -> None:
    src = await engine.create("c/src")
    await src.append([b"a", b"b", b"c"])
    await src.close()
    fork = await engine.fork("c/src", "c/fork", upto=2, labels={"why": "regenerate"})
    assert fork.status == "open" and await read_all(fork) == [b"a", b"b"]
    await fork.append([b"z"])
    assert await read_all(fork) == [b"a", b"b", b"z"]
    assert fork.meta.labels["why"] == "regenerate"
    assert await read_all(src) == [b"a", b"b", b"c"]


async def test_open_stream_ids_and_labels(engine: Engine) -> None:
    a = await engine.create("c/open")
    b = await engine.create("c/ended")
    await b.close()
    assert "c/open" in await engine.open_stream_ids()
    assert "c/ended" not in await engine.open_stream_ids()
    await engine.set_labels("c/open", {"tenant": "t1"})
    assert (await engine.get_stream("c/open")).meta.labels == {"tenant": "t1"}
    assert a.id == "c/open"


async def test_restart_keeps_acknowledged_chunks_and_status(make_engine: object) -> None:
    eng = await make_engine()  # type: ignore[operator]
    s = await eng.create("c/restart")
    await s.append([b"kept"], "p", 1)
    await s.close("done")
    epoch = s.epoch
    await eng.stop()
    eng2 = await make_engine()  # type: ignore[operator]
    s2 = await eng2.get_stream("c/restart")
    assert await read_all(s2) == [b"kept"] and s2.status == "done" and s2.epoch == epoch
    assert (await s2.producer_state("p")) is not None


async def test_expiry_after_close(engine: Engine) -> None:
    s = await engine.create("c/ttl", ttl=0.0)
    await s.close()
    async with asyncio.timeout(10):
        while "c/ttl" not in await engine.expire():
            if not await engine.stream_exists("c/ttl"):
                break  # the engine's own retention got there first
            await asyncio.sleep(0.05)
    with pytest.raises(StreamGone):
        await engine.get_stream("c/ttl")


async def test_producer_window(make_engine: object) -> None:
    """The producer rules of storage/engine.py, exactly (issue 11; the Redis engine's Lua states the same):

    * same epoch, seq = last + 1: appended;
    * a seq among the producer's last PRODUCER_WINDOW (5) appends: that append's original offset and
      count, ``duplicate=True``, nothing written;
    * an older seq: ``sequence_error``; seq > last + 1: ``sequence_gap`` (a ``SequenceError`` subclass);
    * an older epoch: ``sequence_error`` (fenced); a newer epoch or an unknown producer starts at any seq;
    * the window survives a restart;
    * a refusal or a duplicate is answered only once the state it was decided from is durable.
    """
    eng = await make_engine()  # type: ignore[operator]
    s = await eng.create("c/window")
    firsts = {}
    for seq in range(1, 8):  # seq 1..7, seq 4 with two chunks
        chunks = [b"s%d" % seq] * (2 if seq == 4 else 1)
        r = await s.append(chunks, "p", seq)
        assert not r.duplicate
        firsts[seq] = (r.offset, r.count)
    end = s.next_offset
    assert end == 8
    for seq in range(3, 8):  # the last five: 3, 4, 5, 6, 7
        r = await s.append([b"retry"], "p", seq)
        assert (r.offset, r.count, r.duplicate) == (*firsts[seq], True)
    assert s.next_offset == end  # nothing written
    for seq in (2, 1, 0):
        with pytest.raises(SequenceError) as e:
            await s.append([b"old"], "p", seq)
        assert e.value.code == "sequence_error"
    with pytest.raises(SequenceGap) as gap:
        await s.append([b"gap"], "p", 9)
    assert gap.value.code == "sequence_gap"
    r = await s.append([b"s8"], "p", 8)
    assert (r.offset, r.duplicate) == (end, False)
    st = await s.producer_state("p")
    assert st is not None and (st.epoch, st.seq, st.first_offset, st.count) == (0, 8, end, 1)
    # epochs: a newer one starts anywhere and fences the older one
    r = await s.append([b"e1"], "p", 100, epoch=1)
    assert not r.duplicate
    with pytest.raises(SequenceError) as fenced:
        await s.append([b"e0"], "p", 9, epoch=0)
    assert fenced.value.code == "sequence_error"
    assert (await s.append([b"e1"], "p", 100, epoch=1)).duplicate
    with pytest.raises(SequenceGap):
        await s.append([b"e1"], "p", 102, epoch=1)
    # a producer the stream does not know starts at any seq; producers are independent
    assert not (await s.append([b"q"], "q", 42)).duplicate
    assert (await s.append([b"q"], "q", 42)).duplicate
    assert await read_all(s) == [b"s1", b"s2", b"s3", b"s4", b"s4", b"s5", b"s6", b"s7", b"s8", b"e1", b"q"]

    # the window survives a restart
    await eng.stop()
    eng2 = await make_engine()  # type: ignore[operator]
    s2 = await eng2.get_stream("c/window")
    assert (await s2.append([b"x"], "p", 100, epoch=1)).offset == 9
    assert (await s2.append([b"x"], "q", 42)).duplicate
    for seq in range(5, 9):  # p's epoch-0 window is gone with its epoch: fenced
        with pytest.raises(SequenceError):
            await s2.append([b"x"], "p", seq)
    s3 = await eng2.create("c/window2")
    for seq in range(1, 9):
        await s3.append([b"w%d" % seq], "r", seq)
    await eng2.stop()
    eng3 = await make_engine()  # type: ignore[operator]
    s3 = await eng3.get_stream("c/window2")
    for seq in range(4, 9):
        r = await s3.append([b"again"], "r", seq)
        assert (r.offset, r.count, r.duplicate) == (seq - 1, 1, True)
    with pytest.raises(SequenceError):
        await s3.append([b"again"], "r", 3)

    # decisions wait for durability: when a refusal or a duplicate arrives, the appends it was
    # decided from are durable (readable), even if they were still in flight when it was asked
    s4 = await eng3.create("c/window3")
    first = asyncio.ensure_future(s4.append([b"one"], "t", 1))
    second = asyncio.ensure_future(s4.append([b"two"], "t", 2))
    await asyncio.sleep(0)  # both started, in order
    try:
        await s4.append([b"one"], "t", 0)
    except SequenceError:
        pass
    else:  # pragma: no cover
        raise AssertionError("seq 0 after seq 2 must be refused")
    assert s4.next_offset == 2
    dup = await s4.append([b"two"], "t", 2)
    assert dup.duplicate and dup.offset == 1 and s4.next_offset == 2
    await asyncio.gather(first, second)
