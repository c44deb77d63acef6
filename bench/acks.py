"""Acknowledged appends per second with many live streams: the hub over WebSocket vs Redis Streams.

    python -m bench.acks --quick      # 3 s per run (~40 s)
    python -m bench.acks              # 10 s per run

64 producers (``hub.client.Producer``, one WebSocket each), one stream each, 16-byte tokens, each
awaiting its ack before the next (``await (await p.append(t))``): every group commit has up to 64 dirty
streams. The hub is a subprocess on 127.0.0.1 at ``--fsync interval``, ``always`` and ``never``. The
reference is a Debian ``redis-server`` (AOF ``appendfsync always``, then ``everysec``) fed by 64
``redis.asyncio`` clients doing ``XADD`` with the same concurrency. Also one producer alone on an
idle hub at ``interval``: its ack p50 is the floor of a live token's delivery latency (the hub
publishes only durable chunks). Each run is bounded in time.

Ends with ``ws_acked_per_s_interval``, ``_always``, ``_never``, ``redis_acked_per_s_always``,
``_everysec``, ``ws_idle_ack_p50_ms_interval`` and ``hub_fsyncs_per_commit_interval``
(``/admin/stats`` ``commit_fsyncs`` / ``fsyncs``, fsync calls per group commit).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as aioredis

from bench.common import HubProcess, git_revision, note, pct, table
from bench.redisproc import RedisServer
from hub.client import Producer

PRODUCERS = 64
TOKEN = "x" * 16


@dataclass
class Run:
    name: str
    acked: int
    secs: float
    lat: list[float]
    fsyncs_per_commit: float | None = None

    @property
    def rate(self) -> float:
        return self.acked / self.secs


async def _drive(workers: int, secs: float, one: object) -> tuple[int, float, list[float]]:
    lat: list[float] = []
    counts = [0] * workers
    go = asyncio.Event()
    deadline = [0.0]

    async def worker(k: int) -> None:
        await go.wait()
        pc = time.perf_counter
        while (t := pc()) < deadline[0]:
            await one(k)  # type: ignore[operator]
            lat.append((pc() - t) * 1000)
            counts[k] += 1

    tasks = [asyncio.create_task(worker(k)) for k in range(workers)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    deadline[0] = t0 + secs
    go.set()
    await asyncio.gather(*tasks)
    return sum(counts), time.perf_counter() - t0, lat


async def run_hub(tmp: Path, policy: str, producers: int, secs: float) -> Run:
    import aiohttp

    async with HubProcess(tmp / f"hub-{policy}-{producers}", fsync=policy) as hub:
        ps = [Producer(hub.ws_url, f"acks/{policy}/{k}") for k in range(producers)]
        for p in ps:
            await p.start()
        try:
            async with aiohttp.ClientSession() as session:
                before = await hub.admin_stats(session)

                async def one(k: int) -> None:
                    await (await ps[k].append(TOKEN))

                n, dt, lat = await _drive(producers, secs, one)
                after = await hub.admin_stats(session)
        finally:
            for p in ps:
                await p.aclose()
    commits = after["fsyncs"] - before["fsyncs"]
    fpc = None
    if policy != "never" and "commit_fsyncs" in after and commits:
        fpc = (after["commit_fsyncs"] - before["commit_fsyncs"]) / commits
    return Run(f"hub ws {policy}", n, dt, lat, fpc)


async def run_redis(tmp: Path, appendfsync: str, secs: float) -> Run:
    with RedisServer(tmp / f"redis-{appendfsync}", appendfsync=appendfsync) as server:
        clients = [aioredis.from_url(server.url) for _ in range(PRODUCERS)]
        try:

            async def one(k: int) -> None:
                await clients[k].xadd(f"acks/{k}", {"d": TOKEN})

            n, dt, lat = await _drive(PRODUCERS, secs, one)
        finally:
            for c in clients:
                await c.aclose()
    return Run(f"redis appendfsync {appendfsync}", n, dt, lat)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 s per run instead of 10 s")
    a = ap.parse_args()
    secs = 3.0 if a.quick else 10.0
    load0 = os.getloadavg()[0]
    runs: dict[str, Run] = {}
    with tempfile.TemporaryDirectory(prefix="bench-acks-") as td:
        tmp = Path(td)
        for policy in ("interval", "always", "never"):
            note(f"hub fsync={policy}: {PRODUCERS} producers, {secs:.0f} s")
            runs[policy] = await run_hub(tmp, policy, PRODUCERS, secs)
        note("hub fsync=interval: 1 producer (idle disk)")
        runs["idle"] = await run_hub(tmp, "interval", 1, secs)
        for fs in ("always", "everysec"):
            note(f"redis appendfsync {fs}: {PRODUCERS} clients, {secs:.0f} s")
            runs[f"redis-{fs}"] = await run_redis(tmp, fs, secs)
    rows = [
        [
            r.name,
            1 if k == "idle" else PRODUCERS,
            f"{r.rate:,.0f}",
            f"{pct(r.lat, 50):.2f}",
            f"{pct(r.lat, 99):.2f}",
            f"{r.fsyncs_per_commit:.2f}" if r.fsyncs_per_commit is not None else "-",
        ]
        for k, r in runs.items()
    ]
    print(f"# bench.acks ({git_revision('storage', 'hub')}, load average {load0:.2f} at start / "
          f"{os.getloadavg()[0]:.2f} at end)")  # fmt: skip
    print(
        table(
            "acknowledged appends/s, one stream per producer, 16 B tokens, each awaiting its ack",
            ["who", "producers", "acked/s", "ack p50 ms", "ack p99 ms", "fsyncs/commit"],
            rows,
            [
                f"{secs:.0f} s per run; hub = python -m hub serve subprocess, WebSocket producers (hub.client)",
                "redis = redis-server AOF, 64 redis.asyncio clients, XADD to one stream each",
                "fsyncs/commit = /admin/stats commit_fsyncs / fsyncs (group commits) over the run",
            ],
        )
    )
    print()
    for policy in ("interval", "always", "never"):
        print(f"ws_acked_per_s_{policy}: {runs[policy].rate:.0f}")
    print(f"redis_acked_per_s_always: {runs['redis-always'].rate:.0f}")
    print(f"redis_acked_per_s_everysec: {runs['redis-everysec'].rate:.0f}")
    print(f"ws_idle_ack_p50_ms_interval: {pct(runs['idle'].lat, 50):.3f}")
    fpc = runs["interval"].fsyncs_per_commit
    print(f"hub_fsyncs_per_commit_interval: {fpc if fpc is not None else float('nan'):.3f}")


if __name__ == "__main__":
    asyncio.run(main())
