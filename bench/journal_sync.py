"""What a journal commit's sync costs on this disk: a small write then a sync, at the end of a file
that grows (what Redis's AOF and a plain append-only log do) against inside zeros written ahead
(what the hub's journal does since 2026-12-02, ``storage.file.journal.PREALLOC``).

    python -m bench.journal_sync            # 2,000 commits per way, interleaved
    python -m bench.journal_sync --quick    # 300 per way (well under a minute)

Each commit is one pwrite of ``--bytes`` (a group commit of ~16 small appends' frames) and one
fsync or fdatasync, in a file in ``--dir`` (default: a temporary directory on the disk of the
working directory, not /tmp's, which may be a tmpfs). The ways run in turns of 50 commits, so a
spell of disk contention hits them all. Ends with::

    prealloc_fdatasync_p50_us: <p50 of a commit into zeros written ahead, fdatasync>
    append_fdatasync_p50_us: <p50 of a commit that grows the file, fdatasync>
    prealloc_vs_append_p50: <the first over the second: < 1 means the zeros make commits faster>
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .common import note, progress

TURN = 50


class Way:
    def __init__(self, d: Path, name: str, prealloc: bool, sync: Callable[[int], None], n: int, size: int):
        self.name, self.sync, self.size = name, sync, size
        self.fd = os.open(d / f"{name}.wal", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        if prealloc:  # zeros ahead of every commit of the run, durable before the first
            os.pwrite(self.fd, bytes(n * size + 4096), 0)
            os.fsync(self.fd)
        self.at, self.times = 0, []
        self.rec = os.urandom(size)

    def turn(self, k: int) -> None:
        for _ in range(k):
            t = time.perf_counter()
            os.pwrite(self.fd, self.rec, self.at)
            self.sync(self.fd)
            self.times.append(time.perf_counter() - t)
            self.at += self.size


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.journal_sync", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--commits", type=int, help="commits per way (default 2,000; --quick 300)")
    ap.add_argument("--bytes", type=int, default=1536, help="bytes per commit (default 1,536)")
    ap.add_argument("--dir", type=Path, default=None)
    a = ap.parse_args(argv)
    n = a.commits or (300 if a.quick else 2000)
    n = max(TURN, n - n % TURN)
    with tempfile.TemporaryDirectory(prefix="journal-sync-", dir=a.dir or Path.cwd()) as tmp:
        d = Path(tmp)
        ways = [
            Way(d, "append+fsync", False, os.fsync, n, a.bytes),
            Way(d, "append+fdatasync", False, os.fdatasync, n, a.bytes),
            Way(d, "prealloc+fsync", True, os.fsync, n, a.bytes),
            Way(d, "prealloc+fdatasync", True, os.fdatasync, n, a.bytes),
        ]
        note(f"{n} commits of {a.bytes} B per way, in turns of {TURN}, in {d}")
        with progress("commits", n * len(ways)) as bar:
            for i in range(n // TURN):
                for j, w in enumerate(ways):
                    w.turn(TURN)
                    bar.update((i * len(ways) + j + 1) * TURN)
        for w in ways:
            os.close(w.fd)
    print(f"\n## one pwrite of {a.bytes} B + one sync per commit, {n} commits per way\n")
    print(f"{'way':20s}  {'mean us':>8s}  {'p50 us':>8s}  {'p99 us':>8s}")
    print(f"{'-' * 20}  {'-' * 8}  {'-' * 8}  {'-' * 8}")
    for w in ways:
        mean = statistics.fmean(w.times) * 1e6
        print(f"{w.name:20s}  {mean:8.0f}  {pct(w.times, 0.5):8.0f}  {pct(w.times, 0.99):8.0f}")
    pre, app = pct(ways[3].times, 0.5), pct(ways[1].times, 0.5)
    print()
    print(f"prealloc_fdatasync_p50_us: {pre:.0f}")
    print(f"append_fdatasync_p50_us: {app:.0f}")
    print(f"prealloc_vs_append_p50: {pre / app:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
