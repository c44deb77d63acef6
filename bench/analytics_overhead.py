"""What analytics costs on the hot path, in one process: CPU per delivery with the measurements on and
off, on a real Hub over a real file engine (fsync never), 1,000 subscribers on one stream.

    python -m bench.analytics_overhead            # 5 rounds of 2,000 appends each way
    python -m bench.analytics_overhead --quick    # 3 rounds of 500

"Off" swaps the fan-out's ``Analytics`` out and the service's calls for no-ops, so the difference is
everything analytics adds (per append, per run, per subscriber frame). Rounds alternate on and off, so
load from other processes falls on both alike; each figure is the median over rounds. The subscribers'
outboxes are not drained (no sockets): this is the hub's own work, without the kernel's.

Ends with::

    analytics_us_per_delivery_on: <server CPU us per delivered chunk, analytics on>
    analytics_us_per_delivery_off: <the same, off>
    analytics_overhead_pct: <(on - off) / off * 100>
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.outbox import Outbox
from hub.core.service import Hub

SUBSCRIBERS = 1000


async def _nothing(frame: str) -> None:
    pass


def _off(hub: Hub) -> dict[str, Any]:
    saved = {"fanout": hub.fanout.analytics}
    hub.fanout.analytics = None
    for name in ("append_started", "appended", "subscribed"):
        saved[name] = getattr(hub.analytics, name)
        setattr(hub.analytics, name, lambda *a, **k: 0.0)
    return saved


def _on(hub: Hub, saved: dict[str, Any]) -> None:
    hub.fanout.analytics = saved.pop("fanout")
    for name, fn in saved.items():
        setattr(hub.analytics, name, fn)


async def round_(hub: Hub, sid: str, appends: int) -> float:
    """CPU seconds per delivered chunk over ``appends`` appends to a stream with 1,000 subscribers."""
    s = await hub.create(sid)
    subs = [hub.subscribe(s, Outbox(_nothing, max_bytes=1 << 40), 0) for _ in range(SUBSCRIBERS)]
    while any(sub.mode != "live" for sub in subs):
        await asyncio.sleep(0.001)
    before = hub.fanout.stats.deliveries
    chunk = b"tok " * 10
    t0 = time.process_time()
    for _ in range(appends):
        await hub.append(s, [chunk])
    cpu = time.process_time() - t0
    n = hub.fanout.stats.deliveries - before
    for sub in subs:
        sub.stop()
    await hub.delete(sid)
    return cpu / max(1, n)


async def main(rounds: int, appends: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        hub = Hub(Config(data_dir=Path(tmp), fsync="never", archive_delay_s=None), Auth(None, "admin"))
        await hub.start()
        on: list[float] = []
        off: list[float] = []
        try:
            await round_(hub, "warm", appends // 4)
            for i in range(rounds):
                on.append(await round_(hub, f"on/{i}", appends))
                saved = _off(hub)
                off.append(await round_(hub, f"off/{i}", appends))
                _on(hub, saved)
        finally:
            await hub.stop()
    mon, moff = statistics.median(on) * 1e6, statistics.median(off) * 1e6
    print(f"# bench.analytics_overhead: {rounds} rounds x {appends} appends x {SUBSCRIBERS} subscribers")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{'analytics':10} {'us/delivery (median)':>22} {'rounds':>40}")
    print(f"{'on':10} {mon:22.3f} {' '.join(f'{x * 1e6:.3f}' for x in on):>40}")
    print(f"{'off':10} {moff:22.3f} {' '.join(f'{x * 1e6:.3f}' for x in off):>40}")
    print()
    print(f"analytics_us_per_delivery_on: {mon:.3f}")
    print(f"analytics_us_per_delivery_off: {moff:.3f}")
    print(f"analytics_overhead_pct: {(mon - moff) / moff * 100:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    asyncio.run(main(3, 500) if args.quick else main(5, 2000))
