"""Load with slow consumers: thousands of connections, hundreds that never read.

    python -m bench.load                 # 5,000 connections: 300 never read, 100 fast, the rest idle
    python -m bench.load --quick         # 1,000 connections
    python -m bench.load --quick --trace DIR          # + where the idle connections' memory goes
    python -m bench.load --quick --idle-compress 15   # idle clients offer permessage-deflate (browsers)

The hub runs as a subprocess on 127.0.0.1; this process holds every connection. A producer appends
1 KiB chunks carrying their send time to a hot stream at a fixed rate; fast subscribers measure
delivery latency. Phase A runs without the never-reading sockets, phase B with them (each subscribed
to the hot stream with a 4 KiB receive buffer, so the hub's socket buffers fill and its per-connection
outboxes hit their bound). The hub's RSS is read from /proc before and after. Idle connections
subscribe to a quiet stream and only answer the hub's heartbeat pings, as an idle tab does. With
``--trace`` the hub runs under tracemalloc (``bench.traced_hub``) and a breakdown of what the idle
connections hold is printed before the final lines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import traced_hub
from bench.common import HubProcess, git_revision, note, pct, progress


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def never_reader(port: int, stream: str, start: str = '"now"') -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    payload = f'{{"op":"subscribe","stream":"{stream}","from":{start}}}'.encode()
    mask = os.urandom(4)
    s.sendall(
        bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )
    return s


async def answer_pings(ws: aiohttp.ClientWebSocketResponse) -> None:
    """An idle tab still answers the hub's heartbeat pings, and aiohttp's client does that only inside
    ``receive``: without this reader the hub closes an idle connection after about 30 s."""
    async for _ in ws:
        pass


async def settle(session: aiohttp.ClientSession, base: str) -> None:
    """One HTTP round trip after the last subscribe: every frame sent before it has been handled
    (one event loop, frames in order per connection; a short pause covers the other connections)."""
    await asyncio.sleep(0.5)
    async with session.get(f"{base}/healthz") as r:
        await r.read()


async def phase(
    url: str, session: aiohttp.ClientSession, fast: int, seconds: float, rate: float
) -> list[float]:
    lat: list[float] = []
    stop = asyncio.Event()

    async def reader() -> None:
        async with session.ws_connect(url) as ws:
            await ws.send_json({"op": "subscribe", "stream": "load/hot", "from": "now"})
            while not stop.is_set():
                try:
                    m = await ws.receive(timeout=1)
                except TimeoutError:
                    continue
                if m.type != aiohttp.WSMsgType.TEXT:
                    return
                if '"op":"chunks"' in m.data:
                    now = time.time_ns()
                    for part in m.data.split("@")[1::2]:
                        lat.append((now - int(part)) / 1e6)

    readers = [asyncio.create_task(reader()) for _ in range(fast)]
    await asyncio.sleep(1.0)  # let them subscribe
    async with session.ws_connect(url) as prod:
        t_end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < t_end:
            await prod.send_json(
                {"op": "append", "stream": "load/hot", "data": f"@{time.time_ns()}@" + "x" * 1000, "id": i}
            )
            i += 1
            await asyncio.sleep(1 / rate)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*readers, return_exceptions=True)
    return lat


async def run(
    connections: int,
    slow: int,
    fast: int,
    seconds: float,
    rate: float,
    trace: Path | None = None,
    idle_compress: int = 0,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="rhub-load-") as tmp:
        entry = ("-m", "bench.traced_hub", str(trace)) if trace is not None else ("-m", "hub")
        hub = HubProcess(Path(tmp) / "data", fsync="interval", log=Path(tmp) / "hub.log", entry=entry)
        port, url = hub.port, hub.ws_url
        await hub.start()
        pid = hub.pid
        slow_socks: list[socket.socket] = []
        conn = aiohttp.TCPConnector(limit=0)
        try:
            async with aiohttp.ClientSession(connector=conn) as session:
                async with session.put(f"{hub.url}/streams/load/hot"):
                    pass
                async with session.put(f"{hub.url}/streams/load/quiet"):
                    pass
                rss0 = rss_kb(pid)
                idle_n = connections - slow - fast
                idle = []
                idle_readers: list[asyncio.Task[None]] = []
                warm = min(50, idle_n // 10)  # --trace: the baseline follows these (lazy set-up, caches)
                with progress("idle connections", idle_n) as bar:
                    for k in range(idle_n):
                        if trace is not None and k == warm:
                            await settle(session, hub.url)
                            await traced_hub.take(pid, trace, 1)
                        ws = await session.ws_connect(url, compress=idle_compress)
                        await ws.send_json({"op": "subscribe", "stream": "load/quiet"})
                        idle.append(ws)
                        idle_readers.append(asyncio.create_task(answer_pings(ws)))
                        bar.update(k + 1)
                await settle(session, hub.url)
                rss_idle = rss_kb(pid)
                report = ""
                if trace is not None:
                    await traced_hub.take(pid, trace, 2)
                    report = traced_hub.breakdown(trace, 1, 2, idle_n - warm)
                note("phase A: fast subscribers only")
                lat_a = await phase(url, session, fast, seconds, rate)
                loop = asyncio.get_running_loop()
                for _ in range(slow):
                    slow_socks.append(await loop.run_in_executor(None, never_reader, port, "load/hot"))
                note(f"phase B: + {slow} never-reading sockets")
                lat_b = await phase(url, session, fast, seconds, rate)
                rss_b = rss_kb(pid)
                stats = await hub.admin_stats(session)
                idle_lost = sum(t.done() for t in idle_readers)
                for ws in idle:
                    await ws.close()
                await asyncio.gather(*idle_readers, return_exceptions=True)
        finally:
            for s in slow_socks:
                s.close()
            await hub.stop()
    return {
        "connections": connections,
        "rss_start_mb": rss0 / 1024,
        "rss_idle_mb": rss_idle / 1024,
        "rss_loaded_mb": rss_b / 1024,
        "rss_per_conn_kb": (rss_b - rss0) / connections,
        "fast_p50_ms_a": pct(lat_a, 50) if lat_a else math.nan,
        "fast_p99_ms_a": pct(lat_a, 99) if lat_a else math.nan,
        "fast_p50_ms_b": pct(lat_b, 50) if lat_b else math.nan,
        "fast_p99_ms_b": pct(lat_b, 99) if lat_b else math.nan,
        "samples_a": len(lat_a),
        "samples_b": len(lat_b),
        "slow_drops": stats["slow_consumer_drops"],
        "subscribers": stats["subscribers"],
        "idle_lost": idle_lost,
        "idle_kb_per_conn": (rss_idle - rss0) / max(1, idle_n),
        "trace_report": report,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--slow", type=int, default=300)
    ap.add_argument("--fast", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=float, default=100, help="hot-stream appends per second")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--trace",
        type=Path,
        metavar="DIR",
        help="run the hub under tracemalloc (bench.traced_hub), snapshots into DIR, and print where the "
        "idle connections' memory goes (RSS then includes the tracing overhead)",
    )
    ap.add_argument(
        "--idle-compress",
        type=int,
        default=0,
        metavar="WBITS",
        help="idle connections offer permessage-deflate with this window (15 = what browsers offer; "
        "0 = none, the default)",
    )
    a = ap.parse_args()
    if a.quick:
        a.connections, a.slow, a.fast, a.seconds = 1000, 100, 50, 5
    load0 = os.getloadavg()[0]
    r = asyncio.run(run(a.connections, a.slow, a.fast, a.seconds, a.rate, a.trace, a.idle_compress))
    print(
        f"# bench.load{' (quick)' if a.quick else ''} - {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"{git_revision('hub', 'storage')}, load average {load0:.2f} at start / {os.getloadavg()[0]:.2f} at end"
    )
    print(f"{'':<34}{'without slow':>14}{'with slow':>14}")
    print(f"{'fast subscriber p50 (ms)':<34}{r['fast_p50_ms_a']:>14.2f}{r['fast_p50_ms_b']:>14.2f}")
    print(f"{'fast subscriber p99 (ms)':<34}{r['fast_p99_ms_a']:>14.2f}{r['fast_p99_ms_b']:>14.2f}")
    print(f"{'latency samples':<34}{r['samples_a']:>14}{r['samples_b']:>14}")
    print(
        f"hub RSS: {r['rss_start_mb']:.1f} MB at start, {r['rss_idle_mb']:.1f} MB with "
        f"{a.connections - a.slow - a.fast} idle connections, {r['rss_loaded_mb']:.1f} MB at the end; "
        f"slow-consumer drops {r['slow_drops']}, subscribers at the end {r['subscribers']}, "
        f"idle connections the hub closed {r['idle_lost']}"
    )
    idle_n = a.connections - a.slow - a.fast
    if r["trace_report"]:
        print(r["trace_report"])
        print(
            "  * hub RSS above includes tracemalloc's memory and its snapshots: compare with a run without --trace"
        )
    else:
        print(f"idle subscribed connection: {r['idle_kb_per_conn']:.1f} KB of hub RSS each ({idle_n} idle)")
    print(f"load_connections: {a.connections}")
    print(f"rss_per_conn_kb: {r['rss_per_conn_kb']:.1f}")
    print(f"fast_p99_ms_without_slow: {r['fast_p99_ms_a']:.2f}")
    print(f"fast_p99_ms_with_slow: {r['fast_p99_ms_b']:.2f}")


if __name__ == "__main__":
    main()
