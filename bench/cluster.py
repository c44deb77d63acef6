"""Hubs side by side on Redis: ``python -m bench.cluster [--quick]``.

One real redis-server (AOF on, ``appendfsync everysec``), two hubs on it (``--store redis://...``),
and in the same run one hub on the file store as the baseline. Figures (the ``key: value`` lines):

* ``cross_hub_p99_ms``: an append acknowledged at hub A -> the same chunk received by a WebSocket
  subscriber of hub B (both clocks are this process's), p99 over every chunk and B subscriber;
* ``cluster_vs_single``: chunk deliveries per second, two hubs on Redis (subscribers split A/B) vs one
  hub on files, the same producer load and subscriber count;
* ``redis_bytes_per_answer`` / ``raw_bytes_per_answer``: Redis ``used_memory`` growth per finished,
  sealed short answer (its meta, index entries and one zstd value) vs its text;
* ``redis_append_vs_xadd``: the engine's appends/s (one Lua script each: producer check, XADD, meta,
  PUBLISH) vs bare ``redis.asyncio`` XADD, same server, same durability, same concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import redis.asyncio as aioredis

from bench.common import HubProcess, note, pct, table
from bench.redisproc import RedisServer
from bench.textgen import llm_answers, llm_tokens
from storage.redis import RedisEngine


async def subscriber(
    session: aiohttp.ClientSession,
    url: str,
    stream: str,
    n: int,
    times: dict[int, float] | None,
    ready: list[int],
) -> int:
    got = 0
    async with session.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(msgspec.json.encode({"op": "subscribe", "stream": stream, "from": 0}).decode())
        ready.append(1)
        async with asyncio.timeout(120):
            async for m in ws:
                f = msgspec.json.decode(m.data)
                if f.get("op") == "chunks":
                    now = time.perf_counter()
                    if times is not None:
                        for i in range(len(f["data"])):
                            times.setdefault(f["offset"] + i, now)
                    got += len(f["data"])
                elif f.get("op") in ("end", "error"):
                    break
    return got


async def producer(
    session: aiohttp.ClientSession,
    url: str,
    stream: str,
    toks: list[bytes],
    rate: float,
    acks: dict[int, float],
) -> None:
    async with session.ws_connect(url) as ws:
        sent: dict[int, float] = {}

        async def read_acks() -> None:
            async for m in ws:
                f = msgspec.json.decode(m.data)
                if f.get("op") == "ack" and isinstance(f.get("id"), int):
                    acks[f["offset"]] = time.perf_counter()
                    if len(acks) == len(toks):
                        return
                elif f.get("op") == "error":
                    raise RuntimeError(f"the producer got an error frame: {f}")

        reader = asyncio.create_task(read_acks())
        t0 = time.perf_counter()
        for i, t in enumerate(toks):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            msg = {"op": "append", "stream": stream, "data": t.decode(), "id": i, "producer": "p", "seq": i}
            await ws.send_str(msgspec.json.encode(msg).decode())
        try:
            async with asyncio.timeout(60):
                await reader
        except TimeoutError:
            raise RuntimeError(f"{len(acks)} of {len(toks)} appends acknowledged after 60 s") from None
        await ws.send_str(
            msgspec.json.encode({"op": "close", "stream": stream, "status": "done", "id": "x"}).decode()
        )
        async with asyncio.timeout(30):
            while msgspec.json.decode((await ws.receive()).data).get("id") != "x":
                pass


def _bulk_subscribers(urls: list[str], stream: str, n: int, count: int, out: Any) -> None:
    """In a child process: ``count`` untimed subscribers, round robin over ``urls``; sends
    "ready" once every subscribe is sent, then the total of chunks they got."""

    async def run() -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            tasks = [
                asyncio.create_task(subscriber(session, urls[i % len(urls)], stream, n, None, ready))
                for i in range(count)
            ]
            while sum(ready) < count:
                await asyncio.sleep(0.01)
            out.put("ready")
            return sum(await asyncio.gather(*tasks))

    ready: list[int] = []
    out.put(asyncio.run(run()))


async def fan_run(
    urls_sub: list[str], url_prod: str, subs: int, toks: list[bytes], rate: float, stream: str
) -> tuple[float, list[float]]:
    """(deliveries/s, cross-hub latencies in ms of the subscribers on ``urls_sub[1]`` if any).

    The timed subscribers (at most 50, on hub B) and the producer run in this process; the rest,
    the bulk of the load, in a child process: a client process saturated by a thousand sockets
    would time its own backlog rather than the hubs' latency."""
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        acks: dict[int, float] = {}
        async with session.ws_connect(url_prod) as ws:  # the stream exists before anyone subscribes
            await ws.send_str(msgspec.json.encode({"op": "create", "stream": stream, "id": "c"}).decode())
            while msgspec.json.decode((await ws.receive()).data).get("op") != "ack":
                pass
        timed = min(50, subs // 2) if len(urls_sub) > 1 else 0
        remote_times: list[dict[int, float]] = [{} for _ in range(timed)]
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        # the bulk keeps the split even: B's share less the timed ones, A's share
        urls_bulk = (
            urls_sub
            if timed == 0
            else [urls_sub[0]] * (subs // 2) + [urls_sub[1]] * (subs - subs // 2 - timed)
        )
        child = ctx.Process(target=_bulk_subscribers, args=(urls_bulk, stream, len(toks), subs - timed, out))
        child.start()
        try:
            ready: list[int] = []
            tasks = [
                asyncio.create_task(subscriber(session, urls_sub[1], stream, len(toks), t, ready))
                for t in remote_times
            ]
            assert await asyncio.to_thread(out.get, True, 120) == "ready"
            await asyncio.sleep(1.0)  # every subscription in place before the first chunk
            t0 = time.perf_counter()
            await producer(session, url_prod, stream, toks, rate, acks)
            counts = await asyncio.gather(*tasks)
            bulk = await asyncio.to_thread(out.get, True, 180)
            dt = time.perf_counter() - t0
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
        total = sum(counts) + bulk
        if total != subs * len(toks):
            raise RuntimeError(f"delivered {total} chunks, expected {subs} x {len(toks)}")
        lat = [(t[off] - acks[off]) * 1000 for t in remote_times for off in t if off in acks]
        return total / dt, lat


async def memory_per_answer(url: str, n: int) -> tuple[float, float]:
    eng = RedisEngine(url, prefix="mem:", seal_delay_s=3600.0)
    await eng.start()
    r = aioredis.Redis.from_url(url)
    try:
        answers = llm_answers(n)

        async def store(sid: str, chunks: list[bytes]) -> None:
            s = await eng.create(sid)
            for j in range(0, len(chunks), 8):
                await s.append(chunks[j : j + 8])
            await s.close()
            await eng.seal_stream(s.id)

        for i, chunks in enumerate(answers[:20]):  # warm-up: script cache, client buffers, chat sets
            await store(f"chat/w{i % 50}/a{i}", chunks)
        await r.execute_command("MEMORY", "PURGE")
        before = int((await r.info("memory"))["used_memory"])
        raw = 0
        for i, chunks in enumerate(answers):
            await store(f"chat/c{i % 50}/a{i}", chunks)
            raw += sum(map(len, chunks))
        await r.execute_command("MEMORY", "PURGE")
        after = int((await r.info("memory"))["used_memory"])
        return (after - before) / n, raw / n
    finally:
        await r.aclose()
        await eng.stop()


async def append_vs_xadd(url: str, streams: int, per: int) -> tuple[float, float]:
    eng = RedisEngine(url, prefix="rate:", seal_delay_s=3600.0)
    await eng.start()
    r = aioredis.Redis.from_url(url, max_connections=streams)
    tok = b"x" * 40
    try:
        handles = [await eng.create(f"rate/{i}") for i in range(streams)]
        seqs = [0] * streams

        async def ours(i: int) -> None:
            for _ in range(per):
                seqs[i] += 1
                await handles[i].append([tok], "p", seqs[i])

        async def bare(i: int, base: int) -> None:
            for q in range(per):
                await r.xadd(f"bare:{i}", {"c": tok}, id=f"0-{base + q + 1}")

        # alternating rounds, the best of each: the machine is shared, a single round is noisy
        engine_rate = xadd_rate = 0.0
        for rnd in range(3):
            t0 = time.perf_counter()
            await asyncio.gather(*(ours(i) for i in range(streams)))
            engine_rate = max(engine_rate, streams * per / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            await asyncio.gather(*(bare(i, rnd * per) for i in range(streams)))
            xadd_rate = max(xadd_rate, streams * per / (time.perf_counter() - t0))
        return engine_rate, xadd_rate
    finally:
        await r.aclose()
        await eng.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    subs = 200 if args.quick else 1000
    n_tok = 300 if args.quick else 2000
    rate = 100.0 if args.quick else 200.0
    toks = llm_tokens(n_tok)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with RedisServer(root / "redis", appendfsync="everysec") as srv:
            note(f"redis-server on {srv.url} (AOF everysec)")
            store = ["--store", srv.url]
            async with (
                HubProcess(root / "a", args=store) as a,
                HubProcess(root / "b", args=store) as b,
                HubProcess(root / "files") as single,
            ):
                note(f"fan-out: {subs} subscribers, {n_tok} chunks at {rate:.0f}/s")
                cluster_rate, lat = await fan_run([a.ws_url, b.ws_url], a.ws_url, subs, toks, rate, "bench/x")
                # the same split on one hub: the timed subscribers give the machine's floor (same hub)
                single_rate, lat1 = await fan_run(
                    [single.ws_url, single.ws_url], single.ws_url, subs, toks, rate, "bench/x"
                )
            note("memory per finished answer")
            per_answer, raw_per_answer = await memory_per_answer(srv.url, 300 if args.quick else 2000)
            note("appends/s vs bare XADD")
            ours, bare = await append_vs_xadd(srv.url, 16, 100 if args.quick else 500)
    p50, p99 = pct(lat, 50), pct(lat, 99)
    print(
        table(
            f"bench.cluster{' --quick' if args.quick else ''}: {subs} subscribers, {n_tok} chunks at {rate:.0f}/s",
            ["figure", "value"],
            [
                ["cross-hub latency p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}"],
                ["same-hub latency on files p50 / p99 (ms)", f"{pct(lat1, 50):.1f} / {pct(lat1, 99):.1f}"],
                ["deliveries/s, two hubs on Redis", f"{cluster_rate:,.0f}"],
                ["deliveries/s, one hub on files", f"{single_rate:,.0f}"],
                ["Redis bytes per sealed answer", f"{per_answer:,.0f}"],
                ["raw text bytes per answer", f"{raw_per_answer:,.0f}"],
                ["engine appends/s (16 streams)", f"{ours:,.0f}"],
                ["bare XADD/s (16 streams)", f"{bare:,.0f}"],
                ["load average (1 min), start / end", f"{load0:.2f} / {os.getloadavg()[0]:.2f}"],
            ],
        )
    )
    print(f"cross_hub_p99_ms: {p99:.1f}")
    print(f"cluster_vs_single: {cluster_rate / single_rate:.2f}")
    print(f"redis_bytes_per_answer: {per_answer:.0f}")
    print(f"raw_bytes_per_answer: {raw_per_answer:.0f}")
    print(f"redis_append_vs_xadd: {ours / bare:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
