"""Soak: many short stream lifecycles against one hub; memory, file descriptors and tasks stay flat.

    python -m bench.soak --quick        # 100,000 lifecycles
    python -m bench.soak --lifecycles 300000

A lifecycle, as a chat app lives it: create a stream (deleted by retention 1 s after it ends),
subscribe from 1-3 clients, append a few chunks, and end it (done, or cancelled by a reader's Stop);
one lifecycle in ten loses a subscriber's connection half way. Lifecycles run 64 at a time over a
pool of long-lived WebSocket connections, like browser tabs. The hub (a subprocess on 127.0.0.1)
is sampled through /admin/stats. The key figures compare two samples taken at rest (every lifecycle
finished, retention done, no seal pending): one after the first 10% of the lifecycles, one at the end.
Samples under load (peak RSS, peak fds) are printed too; they track the streams alive at that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import HubProcess, Progress

DEBUG = False
FSYNC = "interval"


class Conn:
    """One multiplexed WebSocket: requests by id, frames routed by stream."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count()
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.streams: dict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for m in self.ws:
            if m.type != aiohttp.WSMsgType.TEXT:
                break
            f = m.json()
            if f["op"] in ("ack", "error") and f.get("id") in self.pending:
                fut = self.pending.pop(f["id"])
                if not fut.done():
                    fut.set_result(f)
            elif "stream" in f:
                self.streams[f["stream"]].put_nowait(f)

    async def request(self, **msg: Any) -> dict[str, Any]:
        rid = msg["id"] = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[rid] = fut
        await self.ws.send_json(msg)
        return await asyncio.wait_for(fut, 30)

    async def read_until_end(self, sid: str, stop_after: int | None = None) -> int:
        """Chunks received until the end frame (or until ``stop_after`` chunks)."""
        q = self.streams[sid]
        n = 0
        try:
            while True:
                f = await asyncio.wait_for(q.get(), 30)
                if f["op"] == "chunks":
                    n += len(f["data"])
                    if stop_after is not None and n >= stop_after:
                        return n
                elif f["op"] in ("end", "error"):
                    if f["op"] == "error" and DEBUG:
                        print("error frame", f, file=sys.stderr)
                    return n
        finally:
            self.streams.pop(sid, None)


async def lifecycle(
    i: int,
    rng: random.Random,
    prod: Conn,
    subs: list[Conn],
    session: aiohttp.ClientSession,
    url: str,
    counts: dict[str, int],
) -> None:
    sid = f"soak/{i}"
    ack = await prod.request(op="create", stream=sid, ttl=1.0)
    assert ack["op"] == "ack", ack
    readers = rng.sample(subs, rng.randint(1, 3))
    drop = rng.random() < 0.1
    extra: aiohttp.ClientWebSocketResponse | None = None
    for c in readers:
        await c.ws.send_json({"op": "subscribe", "stream": sid})
    if drop:  # a tab that loses its network half way
        extra = await session.ws_connect(url)
        await extra.send_json({"op": "subscribe", "stream": sid})
    tasks = [asyncio.create_task(c.read_until_end(sid)) for c in readers]
    n = rng.randint(3, 12)
    for k in range(n):
        a = await prod.request(op="append", stream=sid, data=f"tok{k} ")
        assert a["op"] == "ack", a
        if drop and extra is not None and k == n // 2:
            await extra.close()
            counts["disconnects"] += 1
    if rng.random() < 0.3:
        await readers[0].ws.send_json({"op": "cancel", "stream": sid})
        status = "cancelled"
        counts["cancelled"] += 1
    else:
        status = "done"
    await prod.request(op="close", stream=sid, status=status)
    got = await asyncio.gather(*tasks)
    if any(g != n for g in got):
        counts["short_reads"] += 1
    counts["lifecycles"] += 1


async def run(total: int, concurrency: int, progress: bool = True) -> dict[str, Any]:
    samples: list[tuple[int, dict[str, Any]]] = []
    quiet: dict[str, dict[str, Any]] = {}  # samples at rest after the first 10% and at the end
    counts: dict[str, int] = defaultdict(int)
    with tempfile.TemporaryDirectory(prefix="rhub-soak-") as tmp:
        hub = HubProcess(Path(tmp) / "data", fsync=FSYNC, log=Path(tmp) / "hub.log")
        url = hub.ws_url
        await hub.start()
        t0 = time.perf_counter()
        bar = Progress("lifecycles", total) if progress else None
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
                prods = [Conn(await session.ws_connect(url)) for _ in range(8)]
                subs = [Conn(await session.ws_connect(url)) for _ in range(24)]
                rng = random.Random(1)
                next_i = 0
                running: set[asyncio.Task[None]] = set()
                sample_every = max(1, total // 100)

                async def sample(done: int) -> None:
                    samples.append((done, await hub.admin_stats(session)))

                async def quiesce(label: str) -> dict[str, Any]:
                    """Let every lifecycle finish and retention remove its streams, then sample."""
                    deadline = time.monotonic() + 60
                    while True:
                        await sample(counts["lifecycles"] + counts["errors"])
                        st = samples[-1][1]
                        if st["streams"] == 0 or time.monotonic() > deadline:
                            break
                        await asyncio.sleep(0.5)
                    await asyncio.sleep(3.0)  # past the seal delay: nothing queued, nothing sealing
                    await sample(counts["lifecycles"] + counts["errors"])
                    quiet[label] = samples[-1][1]
                    return quiet[label]

                checkpoint = max(1, total // 10)
                while next_i < total or running:
                    limit = checkpoint if "first" not in quiet else total
                    while next_i < limit and len(running) < concurrency:
                        t = asyncio.create_task(
                            lifecycle(next_i, rng, prods[next_i % 8], subs, session, url, counts)
                        )
                        running.add(t)
                        next_i += 1
                    if not running:  # the first 10% are done: the first quiet checkpoint
                        await quiesce("first")
                        continue
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for t in done:
                        if t.exception() is not None:
                            counts["errors"] += 1
                            if counts["errors"] <= 3:
                                print(f"\nlifecycle failed: {t.exception()!r}", file=sys.stderr)
                    finished = counts["lifecycles"] + counts["errors"]
                    if finished // sample_every > len(samples) - 1 or not samples:
                        await sample(finished)
                        if bar is not None:
                            s = samples[-1][1]
                            bar.update(
                                finished,
                                f"rss {s['rss_bytes'] / 2**20:.1f} MB  fds {s['open_fds']}  tasks {s['tasks']}"
                                f"  streams {s['streams']}",
                            )
                await quiesce("last")
                for c in prods + subs:
                    await c.ws.close()
        finally:
            if bar is not None:
                bar.close()
            await hub.stop()
    dt = time.perf_counter() - t0
    first, last = quiet["first"], quiet["last"]
    peak = max(samples, key=lambda x: x[1]["rss_bytes"])[1]
    return {
        "seconds": dt,
        "counts": dict(counts),
        "rss_growth_mb": (last["rss_bytes"] - first["rss_bytes"]) / 2**20,
        "open_fds_growth": last["open_fds"] - first["open_fds"],
        "tasks_growth": last["tasks"] - first["tasks"],
        "first": first,
        "last": last,
        "peak_rss_mb": peak["rss_bytes"] / 2**20,
        "peak_fds": max(x[1]["open_fds"] for x in samples),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lifecycles", type=int, default=300_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="100,000 lifecycles")
    a = ap.parse_args()
    n = 100_000 if a.quick else a.lifecycles
    r = asyncio.run(run(n, a.concurrency))
    c = r["counts"]
    f, last = r["first"], r["last"]
    print(f"{'at rest':<24}{'after 10%':>14}{'at the end':>14}")
    for key in ("rss_bytes", "open_fds", "tasks", "streams", "streams_loaded", "connections", "subscribers"):
        a_, b_ = f.get(key, 0), last.get(key, 0)
        if key == "rss_bytes":
            print(f"{'rss (MB)':<24}{a_ / 2**20:>14.1f}{b_ / 2**20:>14.1f}")
        else:
            print(f"{key:<24}{a_:>14}{b_:>14}")
    print(
        f"lifecycles {c.get('lifecycles', 0)} in {r['seconds']:.0f} s ({c.get('lifecycles', 0) / r['seconds']:.0f}/s);"
        f" cancelled {c.get('cancelled', 0)}, mid-way disconnects {c.get('disconnects', 0)},"
        f" short reads {c.get('short_reads', 0)}, errors {c.get('errors', 0)}"
    )
    print(f"under load: peak rss {r['peak_rss_mb']:.1f} MB, peak open fds {r['peak_fds']}")
    print(f"soak_lifecycles: {c.get('lifecycles', 0)}")
    print(f"rss_growth_mb: {r['rss_growth_mb']:.1f}")
    print(f"open_fds_growth: {r['open_fds_growth']}")
    print(f"tasks_growth: {r['tasks_growth']}")


if __name__ == "__main__":
    main()
