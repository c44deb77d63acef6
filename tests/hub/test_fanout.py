"""The fan-out state machine (hub/core/fanout.py) without sockets: a real file engine in a tmp dir,
the real ``Outbox``, and in place of the WebSocket a fake socket whose sends the test holds and
releases. Every test checks the invariant that matters: the frames a subscriber gets, laid end to
end, are exactly the stream's chunks from its offset on, once each, in order, then the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hub.core.fanout import Fanout, Subscription
from hub.core.outbox import Outbox
from storage import Engine, StreamHandle, open_engine


class Socket:
    """What the outbox writes to: records decoded frames; ``hold()`` makes sends wait (a stalled
    reader) until ``release()``."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._open = asyncio.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    async def send(self, frame: str) -> None:
        await self._open.wait()
        self.frames.append(msgspec.json.decode(frame))

    def chunks(self) -> list[tuple[int, str]]:
        """(offset, text) of every chunk delivered, in delivery order."""
        return [
            (f["offset"] + i, d) for f in self.frames if f["op"] == "chunks" for i, d in enumerate(f["data"])
        ]

    def ops(self) -> list[str]:
        return [f["op"] for f in self.frames]


async def until(cond: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    e = open_engine(str(tmp_path / "data"), fsync="never")
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
async def wire() -> AsyncIterator[tuple[Socket, Outbox]]:
    sock = Socket()
    outbox = Outbox(sock.send, max_bytes=1 << 20)
    writer = asyncio.create_task(outbox.run())
    yield sock, outbox
    outbox.close()
    sock.release()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer


def tokens(a: int, b: int) -> list[bytes]:
    return [f"t{i};".encode() for i in range(a, b)]


def expected(a: int, b: int) -> list[tuple[int, str]]:
    return [(i, f"t{i};") for i in range(a, b)]


async def stream_with(engine: Engine, sid: str, n: int) -> StreamHandle:
    s = await engine.create(sid)
    if n:
        await s.append(tokens(0, n))
    return s


async def test_replay_then_live_without_gap_or_duplicate(engine: Engine, wire: tuple[Socket, Outbox]) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "a", 10)
    fo = Fanout()
    sub = fo.subscribe(s, outbox, 4)
    for i in range(10, 40):  # appends race the replay
        await s.append(tokens(i, i + 1))
    await until(lambda: len(sock.chunks()) == 36, "all chunks")
    assert sock.chunks() == expected(4, 40)
    assert sub.mode == "live" and fo.stats.resumes == 1 and fo.count("a") == 1


async def test_a_closed_stream_replays_then_ends(engine: Engine, wire: tuple[Socket, Outbox]) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "b", 3)
    await s.close("error", "model crashed")
    fo = Fanout()
    sub = fo.subscribe(s, outbox, 1)
    await until(lambda: "end" in sock.ops(), "the end")
    assert sock.chunks() == expected(1, 3)
    assert sock.frames[-1] == {
        "op": "end",
        "stream": "b",
        "offset": 3,
        "status": "error",
        "error": "model crashed",
    }
    assert sub.finished.is_set() and sub.mode == "done" and fo.count() == 0


async def test_a_live_subscriber_gets_the_end_once_caught_up(
    engine: Engine, wire: tuple[Socket, Outbox]
) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "c", 2)
    fo = Fanout()
    done: list[bool] = []
    sub = fo.subscribe(s, outbox, 2)
    sub.on_done = lambda: done.append(True)
    await until(lambda: sub.mode == "live", "live")
    await s.append(tokens(2, 5), close=True)
    await until(lambda: "end" in sock.ops(), "the end")
    assert sock.chunks() == expected(2, 5)
    assert sock.frames[-1]["offset"] == 5 and sock.frames[-1]["status"] == "done"
    assert done == [True] and fo.count() == 0


async def test_a_stalled_reader_drops_to_replay_and_catches_up_exactly(engine: Engine) -> None:
    sock = Socket()
    outbox = Outbox(sock.send, max_bytes=400)
    writer = asyncio.create_task(outbox.run())
    try:
        s = await stream_with(engine, "d", 0)
        fo = Fanout()
        sub = fo.subscribe(s, outbox, 0)
        await until(lambda: sub.mode == "live", "live")
        sock.hold()
        for i in range(0, 300, 10):
            await s.append(tokens(i, i + 10))
            assert outbox.bytes <= 2 * outbox.max_bytes  # bounded, whatever the producer does
        assert fo.stats.slow_drops >= 1 and sub.mode == "replay"
        sock.release()
        await until(lambda: len(sock.chunks()) >= 300, "catch-up")
        assert sock.chunks() == expected(0, 300)
        await until(lambda: sub.mode == "live", "live again")
    finally:
        outbox.close()
        sock.release()
        writer.cancel()


async def test_live_runs_are_trimmed_and_a_gap_forces_replay(
    engine: Engine, wire: tuple[Socket, Outbox]
) -> None:
    """Drive the live state directly with runs storage would never send, to pin each rule."""
    sock, outbox = wire
    s = await stream_with(engine, "e", 5)
    fo = Fanout()
    sub = fo.subscribe(s, outbox, 5)
    await until(lambda: sub.mode == "live", "live")
    sub.on_chunks(3, [b"x3", b"x4", b"x5", b"x6"], {})  # overlaps what it has: only 5 and 6 go out
    await until(lambda: len(sock.chunks()) == 2, "the trimmed run")
    assert sock.chunks() == [(5, "x5"), (6, "x6")] and sub.next == 7
    sub.on_chunks(2, [b"old"], {})  # entirely before ``next``: nothing
    sub.on_chunks(9, [b"gap"], {})  # past ``next``: never deliver across a gap, go and read storage
    assert sub.mode == "replay" and sub.next == 7
    sub.stop()
    assert sock.chunks() == [(5, "x5"), (6, "x6")]


async def test_coalescing_merges_frames_not_content(engine: Engine, wire: tuple[Socket, Outbox]) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "f", 0)
    fo = Fanout()
    sub = fo.subscribe(s, outbox, 0, coalesce_ms=200, coalesce_bytes=1 << 20)
    await until(lambda: sub.mode == "live", "live")
    for i in range(20):
        await s.append(tokens(i, i + 1))
    await until(lambda: len(sock.chunks()) == 20, "the coalesced frame")
    assert sock.chunks() == expected(0, 20)
    assert len(sock.frames) < 20


async def test_a_deleted_stream_ends_its_subscriptions(engine: Engine, wire: tuple[Socket, Outbox]) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "g", 1)
    fo = Fanout()
    sub = fo.subscribe(s, outbox, 0)
    await until(lambda: sub.mode == "live", "live")
    await engine.delete("g")
    await until(lambda: "error" in sock.ops(), "the error")
    assert sock.frames[-1]["code"] == "stream_gone"
    assert sub.mode == "done" and fo.count() == 0


async def test_stop_unregisters_and_nothing_more_is_sent(engine: Engine, wire: tuple[Socket, Outbox]) -> None:
    sock, outbox = wire
    s = await stream_with(engine, "h", 2)
    fo = Fanout()
    subs: list[Subscription] = [fo.subscribe(s, outbox, 0), fo.subscribe(s, outbox, 1)]
    await until(lambda: all(x.mode == "live" for x in subs), "live")
    assert fo.count("h") == 2
    for x in subs:
        x.stop()
    assert fo.count() == 0 and not fo.subs
    await until(lambda: outbox.bytes == 0, "the writer drained")
    n = len(sock.frames)
    await s.append(tokens(2, 4))
    # storage hands durable chunks to listeners before the append returns: a frame would be queued now
    assert outbox.bytes == 0 and len(sock.frames) == n
