"""Chaos checker: kill -9 the real hub at random moments under load and check a Jepsen-style history.

    python -m bench.chaos --runs 100            # the long run
    python -m bench.chaos --runs 3 --quick      # what CI runs (tests/integration/test_chaos.py)

One *run* is: the hub (a subprocess on 127.0.0.1, file store, tiny segments so rolls and seals happen
all the time, short TTLs so retention deletes streams) serves for a random 0.2-1.2 s while producers
(the real ``hub.client.Producer``) append to many streams and subscribers (``hub.client.Subscriber``)
read them; then it gets SIGKILL and is started again on the same data dir. Producers and subscribers
reconnect by themselves. Every acknowledged append is recorded as (stream, offset, text). At the end
every stream is closed and read back, and the history is checked:

* ``acked_lost``: an acknowledged chunk missing from its offset (or with other text there);
* ``duplicates``: a producer token stored twice (each token is unique, so a retry written twice shows);
* ``reorders``: a token stored before one its producer appended earlier;
* subscribers' final text must equal the stored text, and closed streams keep their status;
* streams expired by retention must answer 410 ``stream_gone`` whole, never a partial stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.common import HubProcess, Progress
from bench.redisproc import RedisServer
from hub.client import ClientError, Producer, Subscriber


@dataclass
class History:
    acked: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # stream -> (offset, token)
    sent: dict[str, list[str]] = field(default_factory=dict)  # stream -> tokens in append order
    received: dict[str, str] = field(default_factory=dict)  # subscriber's final text
    statuses: dict[str, str] = field(default_factory=dict)
    ttl_streams: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


async def produce(
    url: str, sid: str, h: History, stop: asyncio.Event, rate: float, ttl: float | None
) -> None:
    h.acked[sid], h.sent[sid] = [], []
    rng = random.Random(sid)
    try:
        async with Producer(url, sid, ttl=ttl, backoff=(0.05, 0.5), max_attempts=200) as p:
            n = 0
            while not stop.is_set():
                tok = f"<{sid}#{n}>"
                h.sent[sid].append(tok)
                off = await (await p.append(tok))  # recorded only once acknowledged
                h.acked[sid].append((off, tok))
                n += 1
                await asyncio.sleep(rng.uniform(0.5, 1.5) / rate)
        h.statuses[sid] = "done"
    except ClientError as e:
        h.errors.append(f"producer {sid}: {e}")


async def subscribe(url: str, sid: str, h: History) -> None:
    while not h.acked.get(sid):  # subscribe once the producer has created the stream
        await asyncio.sleep(0.01)
    try:
        sub = Subscriber(url, sid, backoff=(0.05, 0.5), max_attempts=400)
        h.received[sid] = await sub.text()
        if sub.status != "done":
            h.errors.append(f"subscriber {sid}: ended with {sub.status}")
    except ClientError as e:
        h.errors.append(f"subscriber {sid}: {e}")


async def read_back(base: str, sid: str) -> tuple[int, list[str], str | None]:
    out: list[str] = []
    async with aiohttp.ClientSession() as s:
        while True:
            async with s.get(f"{base}/streams/{sid}", params={"from": str(len(out)), "limit": "10000"}) as r:
                if r.status != 200:
                    return r.status, out, None
                body = await r.json()
            out += body["chunks"]
            if body["next"] >= body["end"]:
                return 200, out, body["status"]


@dataclass
class Verdict:
    acked_lost: int = 0
    duplicates: int = 0
    reorders: int = 0
    subscriber_mismatch: int = 0
    status_wrong: int = 0
    partial_gone: int = 0
    acked_total: int = 0
    notes: list[str] = field(default_factory=list)


def check(sid: str, status: int, stored: list[str], final: str | None, h: History, v: Verdict) -> None:
    acked = h.acked.get(sid, [])
    v.acked_total += len(acked)
    if status == 410 and sid in h.ttl_streams:
        return  # expired whole by retention: allowed
    if status != 200:
        v.partial_gone += 1
        v.notes.append(f"{sid}: read back answered {status}")
        return
    for off, tok in acked:
        if off >= len(stored) or stored[off] != tok:
            v.acked_lost += 1
            v.notes.append(
                f"{sid}: acked {tok} at {off}, stored {stored[off] if off < len(stored) else None!r}"
            )
    seen: set[str] = set()
    order = {tok: i for i, tok in enumerate(h.sent.get(sid, []))}
    last = -1
    for tok in stored:
        if tok in seen:
            v.duplicates += 1
            v.notes.append(f"{sid}: {tok} stored twice")
        seen.add(tok)
        i = order.get(tok, -1)
        if i < last:
            v.reorders += 1
            v.notes.append(f"{sid}: {tok} stored after a later token")
        last = max(last, i)
    if sid in h.received and h.received[sid] != "".join(stored):
        v.subscriber_mismatch += 1
        v.notes.append(f"{sid}: subscriber text differs from the stored text")
    if sid in h.statuses and final != h.statuses[sid]:
        v.status_wrong += 1
        v.notes.append(f"{sid}: status {final}, expected {h.statuses[sid]}")


async def chaos(
    runs: int,
    streams: int,
    subscribers: int,
    rate: float,
    fsync: str,
    seed: int,
    progress: bool = True,
    store: str = "file",
) -> tuple[Verdict, History, int]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="rhub-chaos-") as tmp, contextlib.ExitStack() as stack:
        args: list[str] = []
        if store == "redis":  # the hub is killed, its redis-server (AOF always) lives on
            redis = stack.enter_context(RedisServer(Path(tmp) / "redis", appendfsync="always"))
            args = ["--store", redis.url]
        # 2 KiB segments: rolls and seals all the time, so kills land in the middle of them
        hub = HubProcess(
            Path(tmp) / "data",
            fsync=fsync,
            env={"RHUB_SEGMENT_BYTES": "2048"},
            log=Path(tmp) / "hub.log",
            args=args,
        )
        url, base = hub.ws_url, hub.url
        await hub.start()
        h = History()
        stop = asyncio.Event()
        ids = [f"chaos/{i}" for i in range(streams)]
        ttl_ids = set(ids[: max(1, streams // 10)])  # these expire shortly after close: retention races kills
        h.ttl_streams = ttl_ids
        prods = [
            asyncio.create_task(produce(url, s, h, stop, rate, 0.3 if s in ttl_ids else None)) for s in ids
        ]
        subs = [
            asyncio.create_task(subscribe(url, s, h)) for s in ids[len(ttl_ids) : len(ttl_ids) + subscribers]
        ]
        bar = Progress("kill -9 runs", runs) if progress else None
        try:
            for r in range(runs):
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                hub.kill()
                await hub.start()
                if bar is not None:
                    bar.update(r + 1, f"acked {sum(len(a) for a in h.acked.values()):,}")
            stop.set()
            done, pending = await asyncio.wait(prods + subs, timeout=120)
            for t in pending:
                t.cancel()
                h.errors.append("a client did not finish within 120 s")
            v = Verdict()
            for sid in ids:
                status, stored, final = await read_back(base, sid)
                check(sid, status, stored, final, h, v)
        finally:
            stop.set()
            for t in prods + subs:
                t.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*prods, *subs, return_exceptions=True)
            if bar is not None:
                bar.close()
            await hub.stop()
        return v, h, hub.starts - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100, help="kill -9 / restart cycles")
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--subscribers", type=int, default=50)
    ap.add_argument("--rate", type=float, default=20.0, help="tokens/s per producer")
    ap.add_argument("--fsync", default="interval", choices=["always", "interval", "never"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="20 streams, 10 subscribers (for CI)")
    ap.add_argument("--store", default="file", choices=["file", "redis"], help="the hub's engine")
    a = ap.parse_args()
    if a.quick:
        a.streams, a.subscribers = min(a.streams, 20), min(a.subscribers, 10)
    t0 = time.perf_counter()
    v, h, kills = asyncio.run(chaos(a.runs, a.streams, a.subscribers, a.rate, a.fsync, a.seed, store=a.store))
    dt = time.perf_counter() - t0
    print(f"{'kills':<22}{kills:>10}")
    print(f"{'streams':<22}{a.streams:>10}")
    print(f"{'acked appends':<22}{v.acked_total:>10}")
    print(f"{'acked lost':<22}{v.acked_lost:>10}")
    print(f"{'duplicates':<22}{v.duplicates:>10}")
    print(f"{'reorders':<22}{v.reorders:>10}")
    print(f"{'subscriber mismatch':<22}{v.subscriber_mismatch:>10}")
    print(f"{'wrong status':<22}{v.status_wrong:>10}")
    print(f"{'partial/unreadable':<22}{v.partial_gone:>10}")
    print(f"{'client errors':<22}{len(h.errors):>10}")
    print(f"{'seconds':<22}{dt:>10.1f}")
    for n in (v.notes + h.errors)[:20]:
        print("  ", n)
    print(f"chaos_runs: {kills}")
    print(f"acked_lost: {v.acked_lost}")
    print(f"duplicates: {v.duplicates}")
    print(f"reorders: {v.reorders}")
    bad = v.acked_lost + v.duplicates + v.reorders + v.subscriber_mismatch + v.status_wrong + v.partial_gone
    sys.exit(1 if bad or h.errors else 0)


if __name__ == "__main__":
    main()
