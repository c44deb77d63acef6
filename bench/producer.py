"""One Python producer over WebSocket to a local hub: acknowledged tokens per second, pipelined.

    python -m bench.producer --quick      # 20,000 tokens per run
    python -m bench.producer              # 200,000 tokens per run

The hub runs as a subprocess on 127.0.0.1 (``--fsync interval``, the 5 ms group commit); this process
is the producer (``hub.client.Producer``). Tokens are 4 bytes. Three runs over fresh streams:

* ``await each``: the pre-pipelining way, ``await (await p.append(t))`` per token (the baseline);
* ``pipelined``: ``await p.append(t)`` per token, window 4, then ``flush``: the headline;
* ``coalesced``: the same with ``coalesce_ms=10, coalesce_tokens=64``: fewer, larger chunks;
* ``paced``: pipelined at 2,000 tokens/s, for the ack latency at a model's pace rather than flat out;
* ``http``: ``hub.client.HttpProducer`` flat out, like ``pipelined`` but over plain HTTP (one request
  in flight; tokens appended meanwhile batch into the next request).

``producer_tokens_per_s`` counts tokens acknowledged durable, from the first append to the last ack.
``producer_ack_p99_ms`` is the 99th percentile of append-call-to-ack per token in the pipelined run
flat out (the time a token waits for a window slot included; ``paced`` shows it at a model's pace). ``coalesced_frames_per_s`` is the append frames
per second the coalesced run sends: what a hub pays per producer. ``http_producer_tokens_per_s`` is
``producer_tokens_per_s`` for the ``http`` run. Every run is bounded in tokens and
in time (``--max-s``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import HubProcess, git_revision, note, pct, table
from hub.client import HttpProducer, Producer


@dataclass
class Run:
    name: str
    tokens: int
    seconds: float
    frames: int
    ack_ms: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds


async def run(
    url: str, name: str, n: int, max_s: float, await_each: bool, rate: float = 0.0, **opts: Any
) -> Run:
    lat: list[float] = []
    cls = HttpProducer if url.startswith("http") else Producer
    async with cls(url, f"bench/{name}", **opts) as p:
        t0 = time.perf_counter()
        deadline = t0 + max_s
        sent = 0
        for i in range(n):
            tok = f"{i % 10000:04d}"  # 4 bytes
            ts = time.perf_counter()
            fut = await p.append(tok)
            if await_each:
                await fut
                lat.append((time.perf_counter() - ts) * 1000)
            else:
                fut.add_done_callback(lambda _, ts=ts: lat.append((time.perf_counter() - ts) * 1000))
            sent += 1
            if rate and i % 20 == 19:
                await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.perf_counter()))
            if i % 256 == 255:
                await asyncio.sleep(0)  # a model yields between tokens; it also lets acks in
                if time.perf_counter() > deadline:
                    break
        await p.flush()
        dt = time.perf_counter() - t0
        frames = p.frames_sent if isinstance(p, Producer) else p.requests_sent
    return Run(name, sent, dt, frames, lat)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="20,000 tokens per run instead of 200,000")
    ap.add_argument("--max-s", type=float, default=30.0, help="stop a run after this many seconds")
    a = ap.parse_args()
    n = 20_000 if a.quick else 200_000
    print(f"# bench.producer ({git_revision('hub/client')}, load {os.getloadavg()[0]:.2f})")
    with tempfile.TemporaryDirectory(prefix="bench-producer-") as tmp:
        async with HubProcess(Path(tmp) / "data", fsync="interval") as hub:
            note(f"hub on {hub.url}")
            base = await run(hub.ws_url, "each", 1000 if a.quick else 5000, a.max_s, True)
            note(f"await each: {base.tokens_per_s:,.0f} tokens/s")
            piped = await run(hub.ws_url, "pipelined", n, a.max_s, False)
            note(f"pipelined: {piped.tokens_per_s:,.0f} tokens/s")
            coal = await run(hub.ws_url, "coalesced", n, a.max_s, False, coalesce_ms=10.0, coalesce_tokens=64)
            note(f"coalesced: {coal.tokens_per_s:,.0f} tokens/s")
            paced = await run(hub.ws_url, "paced", 4000 if a.quick else 20000, a.max_s, False, rate=2000.0)
            note(f"paced: {paced.tokens_per_s:,.0f} tokens/s")
            http = await run(hub.url, "http", n, a.max_s, False)
            note(f"http: {http.tokens_per_s:,.0f} tokens/s")
    rows = [
        [
            r.name,
            f"{r.tokens:,}",
            f"{r.tokens_per_s:,.0f}",
            f"{r.frames:,}",
            f"{r.frames_per_s:,.0f}",
            f"{pct(r.ack_ms, 50):.2f}",
            f"{pct(r.ack_ms, 99):.2f}",
        ]
        for r in (base, piped, coal, paced, http)
    ]
    print(
        table(
            "one producer, 4-byte tokens, fsync interval (5 ms group commit)",
            ["run", "tokens", "tokens/s", "frames", "frames/s", "ack p50 ms", "ack p99 ms"],
            rows,
            [
                "await each: one token per frame, each waits for its ack (the old Producer.append)",
                "pipelined: window 4; tokens waiting for a slot share the next frame",
                "coalesced: coalesce_ms=10, coalesce_tokens=64 (one chunk per 64 tokens or 10 ms)",
                "paced: pipelined at 2,000 tokens/s (a fast model): the ack latency a token sees",
                "http: HttpProducer, one request in flight, tokens batch meanwhile (frames = requests)",
                f"pipelined / await each = {piped.tokens_per_s / base.tokens_per_s:.1f}x",
            ],
        )
    )
    print()
    print(f"producer_tokens_per_s: {piped.tokens_per_s:.0f}")
    print(f"producer_ack_p99_ms: {pct(piped.ack_ms, 99):.2f}")
    print(f"coalesced_frames_per_s: {coal.frames_per_s:.0f}")
    print(f"http_producer_tokens_per_s: {http.tokens_per_s:.0f}")


if __name__ == "__main__":
    asyncio.run(main())
