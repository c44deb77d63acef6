"""Redis faults with a real redis-server of the test's own (tmp dir, AOF on), killed mid-run.

* ``appendfsync always``: kill -9 redis-server under a producer, restart it: every acknowledged
  chunk is there, at the offset its ack named, and the epoch did not change (nothing was lost).
* ``appendfsync everysec``: kill -9 under a producer: whatever was lost, the stream's epoch is
  renewed, and a listener on another hub gets ``reset``: no reader ever continues across a gap.

The producer is the hub's kind: idempotent (id + seq), retrying the same seq on
``storage_unavailable``, resending from the engine's producer state on ``sequence_gap``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from test_redis_engine import Recorder, read_all

from bench.redisproc import RedisServer
from storage import SequenceGap, StorageUnavailable, StreamHandle, open_engine
from storage.redis import RedisEngine

N = 400


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis", appendfsync=request.param)
    srv.start()
    yield srv  # type: ignore[misc]
    srv.kill()


async def engine(srv: RedisServer) -> RedisEngine:
    e = open_engine(srv.url, prefix="f:", seal_delay_s=3600.0)
    assert isinstance(e, RedisEngine)
    await e.start()
    return e


async def produce(
    s: StreamHandle, acked: dict[int, bytes], first_acks: dict[int, bytes] | None = None, n: int = N
) -> int:
    """Append seqs 1..n; returns how many times Redis had lost appends (``sequence_gap``)."""
    seq = 1
    gaps = 0
    epoch0 = s.epoch
    data = {q: f"chunk-{q}".encode() for q in range(1, n + 1)}
    async with asyncio.timeout(120):
        while seq <= n:
            try:
                res = await s.append([data[seq]], "p", seq)
            except StorageUnavailable:
                await asyncio.sleep(0.02)  # Redis is down or restarting: the same seq again
                continue
            except SequenceGap:
                gaps += 1
                st = await s.producer_state("p")  # Redis lost appends: resend from what it has
                seq = st.seq + 1 if st is not None else 1
                continue
            acked[res.offset] = data[seq]
            if first_acks is not None and res.offset not in first_acks and s.epoch == epoch0:
                first_acks[res.offset] = data[seq]
            seq += 1
    return gaps


async def kill_after(srv: RedisServer, acked: dict[int, bytes], after: int, cut: int = 0) -> None:
    """kill -9 redis-server after ``after`` acks; ``cut`` bytes off the AOF's tail stand for what
    ``everysec`` had not fsynced when the machine went down (a process kill alone leaves it in
    the page cache); then start it again on that AOF."""
    async with asyncio.timeout(60):
        while len(acked) < after:
            await asyncio.sleep(0.005)
    srv.kill()
    if cut:
        (aof,) = (srv.dir / "appendonlydir").glob("*.incr.aof")
        size = aof.stat().st_size
        with aof.open("r+b") as f:
            f.truncate(max(0, size - cut))
    await asyncio.to_thread(srv.start)


@pytest.mark.parametrize("server", ["always"], indirect=True)
async def test_appendfsync_always_kill9_loses_nothing_acknowledged(server: RedisServer) -> None:
    a = await engine(server)
    try:
        s = await a.create("f/always")
        epoch = s.epoch
        acked: dict[int, bytes] = {}
        await asyncio.gather(produce(s, acked), kill_after(server, acked, N // 3))
        fresh = await engine(server)
        try:
            s2 = await fresh.get_stream("f/always")
            got = await read_all(s2)
            assert s2.epoch == epoch  # nothing acknowledged was lost: no reset for anyone
            assert len(acked) == N and all(got[off] == data for off, data in acked.items())
            assert got == [f"chunk-{q}".encode() for q in range(1, N + 1)]  # each seq once, in order
        finally:
            await fresh.stop()
    finally:
        await a.stop()


@pytest.mark.parametrize("server", ["everysec"], indirect=True)
@pytest.mark.parametrize("cut", [0, 4000])
async def test_appendfsync_everysec_kill9_surfaces_loss_as_reset(server: RedisServer, cut: int) -> None:
    a, b = await engine(server), await engine(server)
    try:
        s = await a.create("f/everysec")
        epoch = s.epoch
        sb = await b.get_stream("f/everysec")
        rec = Recorder()
        sb.listen(rec)
        await b._subscribed(sb)
        acked: dict[int, bytes] = {}
        first_acks: dict[int, bytes] = {}
        gaps, _ = await asyncio.gather(produce(s, acked, first_acks), kill_after(server, acked, N // 3, cut))
        await s.close()
        await rec.until(lambda: rec.ended)
        fresh = await engine(server)
        try:
            s2 = await fresh.get_stream("f/everysec")
            got = await read_all(s2)
            # the stream was open when Redis died: its epoch is renewed whatever was lost, so a
            # client holding an offset of the old epoch is told to start again
            assert s2.epoch != epoch and rec.resets == [s2.epoch]
            assert got[-1] == f"chunk-{N}".encode()
            if cut:  # data really was lost (the producer had to resend) and readers were told
                assert gaps >= 1
                assert len(got) == N and got == [f"chunk-{q}".encode() for q in range(1, N + 1)]
            # what the listener got: contiguous offsets in the old epoch up to the reset, then
            # contiguous again in the new one (where the hub restarts its clients from 0)
            cut = rec.reset_at[0]
            for part in (rec.runs[:cut], rec.runs[cut:]):
                offsets = [off + i for off, run in part for i in range(len(run))]
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets))) if offsets else True
            # nothing the listener got in the old epoch disagrees with an acknowledgement of it
            old = [(off + i, c) for off, run in rec.runs[:cut] for i, c in enumerate(run)]
            assert all(c == first_acks.get(off, c) for off, c in old)
        finally:
            await fresh.stop()
    finally:
        await b.stop()
        await a.stop()
