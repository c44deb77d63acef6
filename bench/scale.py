"""Scale benchmark: a store holding many finished answers starts fast, lists a chat fast, stays small.

    python -m bench.scale            # 1,000,000 answers
    python -m bench.scale --quick    # 100,000 answers

Builds N finished answers (chats of 8; each a few appends of prose tokens, then a close) through
the storage API (``Store.create`` / ``append`` / ``close``, fsync=never, 64 at a time) and lets them
reach the archive. Then, in a fresh process (so the build's memory does not count), it times
``Store.start()`` until the store serves, lists 2,000 random chats as the hub's ``/chats`` does (the
listing, then each answer's ``info()``), and reads the RSS the store added. Baseline, same run: the
same measurements on a store of N/10 answers, to show what grows with N.

Ends with ``key: value`` lines: ``start_s``, ``chat_list_p99_ms``, ``rss_mb_per_100k_answers``,
``build_answers_per_s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from storage import Store, StoreOptions

from . import textgen
from .common import ROOT, git_revision, note, pct, progress, table

CONCURRENCY = 64
LISTINGS = 2000


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def sid(i: int) -> str:
    return f"chat/{i // 8:07d}/{i % 8}"


async def build(root: Path, n: int) -> float:
    """N finished answers; returns answers/s (creates to the last one archived)."""
    toks = textgen.prose_tokens(200_000)
    opts = StoreOptions(fsync="never", seal_delay_s=0.0, archive_delay_s=0.0, max_open_logs=256)
    store = Store(root, opts)
    await store.start()
    t0 = time.perf_counter()
    nxt = 0
    with progress("answers", n) as bar:

        async def worker(k: int) -> None:
            nonlocal nxt
            rng = random.Random(k)
            while nxt < n:
                i = nxt
                nxt += 1
                s = await store.create(sid(i))
                start = rng.randrange(len(toks) - 400)
                answer = toks[start : start + rng.randint(60, 300)]
                for a in range(0, len(answer), 40):  # a few appends per answer
                    await s.append(answer[a : a + 40])
                await s.close()
                if i % 500 == 0:
                    bar.update(i)

        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        async with asyncio.timeout(3600):
            while any((root / "streams").glob("*/*/*")):
                bar.update(n, f"archiving, {store.counters['archived']:,} done")
                await asyncio.sleep(0.5)
    rate = n / (time.perf_counter() - t0)
    await store.stop()
    return rate


async def measure(root: Path, n: int) -> dict[str, Any]:
    """In a fresh process: start, list chats, RSS."""
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    store = Store(root, StoreOptions())
    await store.start()
    first = store.list(sid(0)[: -len("0")])  # serving: the first listing answered
    start_s = time.perf_counter() - t0
    assert first, "the store lost its answers"
    rng = random.Random(5)
    lat = []
    chats = max(1, n // 8)
    for _ in range(LISTINGS):
        c = rng.randrange(chats)
        t = time.perf_counter()
        ids_ = await store.list_streams(f"chat/{c:07d}/")
        infos = [store.get(i).info() for i in ids_]
        lat.append((time.perf_counter() - t) * 1000)
        assert len(infos) == 8 or c == chats - 1
    rss = rss_bytes() - rss0
    await store.stop()
    return {"start_s": start_s, "lat": lat, "rss": rss}


def run_measure(root: Path, n: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--measure", str(root), "-n", str(n)],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=600,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def disk(root: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in root.rglob("*"))


async def main_async(n: int, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        rows = []
        figures: dict[int, dict[str, Any]] = {}
        for size in (n // 10, n):
            root = tmp / f"data-{size}"
            note(f"scale: building {size:,} answers in {root}")
            rate = await build(root, size)
            m = run_measure(root, size)
            m["rate"] = rate
            figures[size] = m
            rows.append(
                [
                    f"{size:,}",
                    f"{rate:,.0f}",
                    f"{m['start_s']:.3f}",
                    f"{pct(m['lat'], 50):.3f}",
                    f"{pct(m['lat'], 99):.3f}",
                    f"{m['rss'] / 1e6:.1f}",
                    f"{disk(root) / size:,.0f}",
                ]
            )
        rev = git_revision("storage", "bench/scale.py")
        print(
            table(
                f"A store of N finished answers, chats of 8 ({rev})",
                ["answers", "built/s", "start s", "list p50 ms", "list p99 ms", "RSS MB", "disk B/answer"],
                rows,
                [
                    f"built through Store.create/append/close (fsync=never, {CONCURRENCY} at a time) until"
                    " every answer was archived",
                    "start: Store.start() until the first listing answered, in a fresh process;"
                    f" list: {LISTINGS:,} random chats, list_streams(prefix) + info() of each answer",
                    "RSS: what the store added to the fresh process after start and the listings",
                ],
            )
        )
        m = figures[n]
        print()
        print(f"start_s: {m['start_s']:.3f}")
        print(f"chat_list_p99_ms: {pct(m['lat'], 99):.3f}")
        print(f"rss_mb_per_100k_answers: {m['rss'] / 1e6 / (n / 100_000):.2f}")
        print(f"build_answers_per_s: {m['rate']:.0f}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100,000 answers instead of 1,000,000")
    ap.add_argument("-n", type=int, help="number of answers")
    ap.add_argument("--keep", action="store_true", help="keep the data dirs")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the fresh-process half
    args = ap.parse_args(argv)
    n = args.n or (100_000 if args.quick else 1_000_000)
    if args.measure is not None:
        print(json.dumps(asyncio.run(measure(args.measure, n))))
        return 0
    return asyncio.run(main_async(n, args.keep))


if __name__ == "__main__":
    raise SystemExit(main())
