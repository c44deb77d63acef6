"""Storage benchmark: append throughput vs a raw-file baseline, seek latency, replay rate, compression.

    python -m bench.storage            # full run (a few minutes)
    python -m bench.storage --quick    # under a minute on 2 cores

Prints a human table on stdout, progress on stderr, and ends with four machine-readable lines::

    append_vs_raw_interval: <ours/raw appends/s, fsync=interval, 16 B chunks>
    seek_p99_ms: <p99 of Log.read(random offset, 1) on a closed, sealed 1,000,000-chunk stream>
    replay_chunks_per_s: <chunks/s reading that stream from 0 with read(offset, 1024)>
    compression_ratio: <raw/stored of a closed, sealed prose stream, default LogOptions>
    fsyncs_per_commit: <fsync + fdatasync calls per group commit, 64 producers on 64 streams, fsync=interval>
    acked_appends_per_s_interval / _always / _never: <64 producers, one stream each, 16 B, awaiting each ack>
    idle_ack_p50_ms_interval: <one producer alone, awaiting each ack: the latency floor of an idle disk>

See bench/RESULTS.md for what each figure means and how the raw baseline is made fair.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from storage import Log, LogOptions, Store, StoreOptions, Stream, StreamMeta, record

from . import textgen
from .common import Progress, git_revision, note, pct, table

DEFAULT = LogOptions()
KIB = 1024


# --- small helpers -------------------------------------------------------------------------------


def new_log(path: Path, opts: LogOptions = DEFAULT, sid: str = "bench") -> Log:
    return Log.create(path, StreamMeta(id=sid, created=time.time(), epoch="0"), opts)


def disk_bytes(path: Path) -> tuple[int, int]:
    """(allocated bytes, files) of a directory tree, as `du` counts them."""
    total = files = 0
    for p in path.rglob("*"):
        st = p.lstat()
        total += st.st_blocks * 512
        files += p.is_file()
    return total, files


def fmt_n(x: float) -> str:
    return f"{x:,.0f}"


@dataclass
class Mode:
    name: str
    append_secs: float
    reps: int
    big_chunks: int
    seek_raw: int
    seek_sealed: int
    replay_raw: int  # chunks of the raw-layout replay (the rate does not depend on the stream length)
    alt_blocks: tuple[int, ...]  # also seal the 1M stream with these block sizes (seek comparison)
    sweep_bytes: int
    sweep_seeks: int
    short_n: int
    tmp: Path = field(default_factory=Path)


QUICK = Mode("quick", append_secs=0.6, reps=1, big_chunks=1_000_000, seek_raw=2000, seek_sealed=200,
             replay_raw=100_000, alt_blocks=(), sweep_bytes=2_300_000, sweep_seeks=25, short_n=100)  # fmt: skip
FULL = Mode("full", append_secs=3.0, reps=3, big_chunks=1_000_000, seek_raw=20_000, seek_sealed=3000,
            replay_raw=1_000_000, alt_blocks=(64 * KIB,), sweep_bytes=2_300_000, sweep_seeks=200,
            short_n=400)  # fmt: skip


# --- 1. appends/s: the async Store vs a raw group-commit baseline -----------------------------------

STREAMS = 8
FSYNC_THREADS = 16  # the raw baseline's fsync pool, the size storage.file.store uses
PRODUCERS = 64  # 8 per stream, each awaiting its own durable append before sending the next


@dataclass
class AppendRun:
    impl: str
    policy: str
    size: int
    appends: int
    secs: float
    syncs: int
    lat: list[float]
    starved: int  # producers that completed no append in the window
    producers: int = PRODUCERS
    streams: int = STREAMS

    @property
    def rate(self) -> float:
        return self.appends / self.secs


class RawGroup:
    """The baseline: the least Python that gives the same acknowledgement guarantee as the Store.

    One append-only file per stream, the same pre-encoded record bytes, the same asyncio shape
    (one task per producer awaiting a future) and the same commit cadence: a committer task that
    on ``always`` runs as soon as something is dirty, on ``interval`` sleeps 5 ms after the first
    dirty append, then write()s each dirty file's buffer and fsyncs the files side by side on a
    pool of ``FSYNC_THREADS`` threads (as the Store does: ext4 folds concurrent fsyncs into one
    journal commit). On ``never`` each append is a write() at once, as the Store does. No framing,
    index, producer state, checksums, publication or error handling.
    """

    def __init__(self, root: Path, policy: str, interval_ms: float, streams: int) -> None:
        self.policy, self.interval = policy, interval_ms / 1000
        self.fds = [
            os.open(root / f"raw{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            for i in range(streams)
        ]
        self.pending = [bytearray() for _ in self.fds]
        self.waiters: list[list[asyncio.Future[None]]] = [[] for _ in self.fds]
        self.dirty: set[int] = set()
        self.kick = asyncio.Event()
        self.syncs = 0
        self.task: asyncio.Task[None] | None = None
        self.pool = ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="raw-fsync")

    def start(self) -> None:
        self.task = asyncio.create_task(self.committer())

    async def append(self, i: int, rec: bytes) -> None:
        if self.policy == "never":
            os.write(self.fds[i], rec)
            return
        self.pending[i] += rec
        fut = asyncio.get_running_loop().create_future()
        self.waiters[i].append(fut)
        self.dirty.add(i)
        self.kick.set()
        await fut

    async def committer(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.kick.wait()
            if self.policy == "interval":
                await asyncio.sleep(self.interval)
            self.kick.clear()
            dirty, self.dirty = self.dirty, set()
            fds, futs = [], []
            for i in dirty:
                os.write(self.fds[i], self.pending[i])
                self.pending[i].clear()
                fds.append(self.fds[i])
                futs += self.waiters[i]
                self.waiters[i] = []
            batches = [fds[k::FSYNC_THREADS] for k in range(min(FSYNC_THREADS, len(fds)))]
            await asyncio.gather(*(loop.run_in_executor(self.pool, _fsync_all, b) for b in batches))
            self.syncs += 1
            for f in futs:
                f.set_result(None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        for fd in self.fds:
            os.close(fd)
        self.pool.shutdown()


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        os.fsync(fd)


Appender = Callable[[], Awaitable[object]]


async def _drive(appenders: Sequence[Appender], secs: float) -> tuple[int, float, list[float], int]:
    """Run one producer task per appender for ``secs``; returns (appends, elapsed, latencies, starved)."""
    go = asyncio.Event()
    lat: list[float] = []
    counts = [0] * len(appenders)
    deadline = [0.0]

    async def producer(k: int, append: Appender) -> None:
        await go.wait()
        pc = time.perf_counter
        while (t := pc()) < deadline[0]:
            await append()
            lat.append(pc() - t)
            counts[k] += 1

    tasks = [asyncio.create_task(producer(k, a)) for k, a in enumerate(appenders)]
    await asyncio.sleep(0)
    t0 = time.perf_counter()
    deadline[0] = t0 + secs
    go.set()
    await asyncio.gather(*tasks)
    return sum(counts), time.perf_counter() - t0, lat, sum(1 for c in counts if c == 0)


async def run_ours(
    root: Path,
    policy: str,
    size: int,
    secs: float,
    idempotent: bool = False,
    producers: int = PRODUCERS,
    nstreams: int = STREAMS,
) -> AppendRun:
    store = Store(root, StoreOptions(fsync=policy, interval_ms=5.0))
    await store.start()
    streams = [await store.create(f"bench/{i}") for i in range(nstreams)]
    chunk = [b"x" * size]

    def appender(s: Stream, pid: str | None) -> Appender:
        seq = 0

        def app() -> Awaitable[object]:
            nonlocal seq
            seq += 1
            return s.append(chunk, pid, seq) if pid is not None else s.append(chunk)

        return app

    appenders = [
        appender(streams[k % nstreams], f"producer-{k}" if idempotent else None) for k in range(producers)
    ]
    n, secs_, lat, starved = await _drive(appenders, secs)
    syncs = store.counters["fsyncs"]
    await store.stop()
    impl = "ours+producer id/seq" if idempotent else "ours (Store)"
    return AppendRun(impl, policy, size, n, secs_, syncs, lat, starved, producers, nstreams)


async def run_raw(
    root: Path, policy: str, size: int, secs: float, producers: int = PRODUCERS, nstreams: int = STREAMS
) -> AppendRun:
    raw = RawGroup(root, policy, 5.0, nstreams)
    raw.start()
    rec = record.encode_data(0, [b"x" * size])  # byte-for-byte the size of the Store's record
    appenders: list[Appender] = [functools.partial(raw.append, k % nstreams, rec) for k in range(producers)]
    n, secs_, lat, starved = await _drive(appenders, secs)
    await raw.stop()
    return AppendRun("raw baseline", policy, size, n, secs_, raw.syncs, lat, starved, producers, nstreams)


STRESS = (1024, 64)  # producers, streams: enough concurrency that CPU, not the 5 ms cadence, is the limit


def bench_appends(mode: Mode) -> tuple[list[AppendRun], list[str]]:
    runs: list[AppendRun] = []
    plan: list[tuple[str, str, int, int, int]] = []
    for policy in ("always", "interval", "never"):
        for size in (16, KIB):
            for rep in range(mode.reps):
                pair = [("ours", policy, size, PRODUCERS, STREAMS), ("raw", policy, size, PRODUCERS, STREAMS)]
                plan += pair if rep % 2 == 0 else pair[::-1]  # alternate who goes first
    for rep in range(mode.reps):
        plan.append(("ours-idem", "interval", 16, PRODUCERS, STREAMS))
        pair = [("ours", "interval", 16, *STRESS), ("raw", "interval", 16, *STRESS)]
        plan += pair if rep % 2 == 0 else pair[::-1]
    for k, (impl, policy, size, prod, nst) in enumerate(plan):
        note(
            f"appends {k + 1}/{len(plan)}: {impl} fsync={policy} {size} B, {prod} producers, {mode.append_secs:.1f} s"
        )
        root = Path(tempfile.mkdtemp(prefix="run-", dir=mode.tmp))
        try:
            if impl == "raw":
                r = asyncio.run(run_raw(root, policy, size, mode.append_secs, prod, nst))
            else:
                r = asyncio.run(
                    run_ours(root, policy, size, mode.append_secs, impl == "ours-idem", prod, nst)
                )
        finally:
            shutil.rmtree(root, ignore_errors=True)
        runs.append(r)

    def med(impl: str, policy: str, size: int, producers: int = PRODUCERS) -> AppendRun:
        rs = [r for r in runs if (r.impl, r.policy, r.size, r.producers) == (impl, policy, size, producers)]
        rs.sort(key=lambda r: r.rate)
        return rs[len(rs) // 2]

    def row(x: AppendRun, base: AppendRun | None) -> list[str]:
        return [
            x.impl,
            x.policy if x.policy != "interval" else "interval 5ms",
            f"{x.size} B" if x.size < KIB else "1 KiB",
            f"{x.producers}/{x.streams}",
            fmt_n(x.rate),
            f"{x.appends / max(x.syncs, 1):.0f}" if x.policy != "never" else "-",
            f"{pct(x.lat, 50) * 1e3:.2f}",
            f"{pct(x.lat, 99) * 1e3:.2f}",
            f"{x.starved}/{x.producers}",
            f"{x.rate / base.rate:.2f}" if base is not None else "",
        ]

    rows = []
    for policy in ("always", "interval", "never"):
        for size in (16, KIB):
            o, r = med("ours (Store)", policy, size), med("raw baseline", policy, size)
            rows += [row(o, r), row(r, None)]
    rows.append(row(med("ours+producer id/seq", "interval", 16), med("raw baseline", "interval", 16)))
    so, sr = med("ours (Store)", "interval", 16, STRESS[0]), med("raw baseline", "interval", 16, STRESS[0])
    rows += [row(so, sr), row(sr, None)]
    notes = [
        f"{PRODUCERS} producer tasks over {STREAMS} streams (the stress rows: {STRESS[0]} over {STRESS[1]}), each "
        f"awaiting its own durable append; {mode.append_secs:.1f} s per run, median of {mode.reps} run(s), "
        "ours and raw alternating.",
        "raw baseline = same record bytes, one file per stream, same group-commit cadence, fsyncs side by side "
        f"on {FSYNC_THREADS} threads like the Store; no framing/index/producer state/publication (see RESULTS.md).",
        "per fsync = appends acknowledged per group commit; ack ms = time from append() call to its ack.",
        "with 64 producers, interval throughput is capped by the cadence: 64 appends per (5 ms + fsync) for "
        "both sides; the stress rows show the CPU-bound regime.",
        "starved = producers that completed no append in the window: with fsync=never neither "
        "Store.append nor the raw write ever suspends, so one task runs alone until the deadline.",
    ]
    return runs, [table("1. appends/s through the async Store vs a raw baseline", [
        "impl", "fsync", "chunk", "prod/streams", "appends/s", "per fsync", "ack p50 ms", "ack p99 ms", "starved",
        "ours/raw",
    ], rows, notes)]  # fmt: skip


# --- 1b. one stream per producer: fsyncs per commit, acked appends/s, idle ack latency --------------

WIDE = 64  # producers, each with its own stream: every commit has up to 64 dirty streams


class FsyncCounter:
    """Counts os.fsync and os.fdatasync calls made in this process (every thread) while active."""

    def __init__(self) -> None:
        self.calls = 0
        self._real = (os.fsync, os.fdatasync)

    def __enter__(self) -> FsyncCounter:
        real_fsync, real_fdatasync = self._real

        def fsync(fd: int) -> None:
            self.calls += 1
            real_fsync(fd)

        def fdatasync(fd: int) -> None:
            self.calls += 1
            real_fdatasync(fd)

        os.fsync, os.fdatasync = fsync, fdatasync  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        os.fsync, os.fdatasync = self._real  # type: ignore[assignment]


@dataclass
class WideRun:
    policy: str
    producers: int
    appends: int
    secs: float
    commits: int
    fsync_calls: int
    lat: list[float]

    @property
    def rate(self) -> float:
        return self.appends / self.secs


async def run_wide(root: Path, policy: str, producers: int, secs: float) -> WideRun:
    store = Store(root, StoreOptions(fsync=policy, interval_ms=5.0))
    await store.start()
    streams = [await store.create(f"wide/{i}") for i in range(producers)]
    chunk = [b"x" * 16]
    appenders: list[Appender] = [functools.partial(s.append, chunk) for s in streams]
    commits0 = store.counters["fsyncs"]  # group commits
    with FsyncCounter() as fc:
        n, secs_, lat, _ = await _drive(appenders, secs)
    commits = store.counters["fsyncs"] - commits0
    await store.stop()
    return WideRun(policy, producers, n, secs_, commits, fc.calls, lat)


def bench_wide(mode: Mode) -> tuple[list[WideRun], list[str]]:
    runs: list[WideRun] = []
    plan = [(p, WIDE) for p in ("interval", "always", "never")] + [("interval", 1), ("always", 1)]
    for k, (policy, prod) in enumerate(plan):
        note(f"wide {k + 1}/{len(plan)}: fsync={policy}, {prod} producer(s) on their own streams")
        root = Path(tempfile.mkdtemp(prefix="wide-", dir=mode.tmp))
        try:
            runs.append(asyncio.run(run_wide(root, policy, prod, mode.append_secs * 2)))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    rows = [
        [
            r.policy,
            r.producers,
            fmt_n(r.rate),
            r.commits,
            f"{r.appends / max(r.commits, 1):.1f}" if r.policy != "never" else "-",
            f"{r.fsync_calls / max(r.commits, 1):.2f}" if r.policy != "never" else f"{r.fsync_calls}",
            f"{pct(r.lat, 50) * 1e3:.2f}",
            f"{pct(r.lat, 99) * 1e3:.2f}",
        ]
        for r in runs
    ]
    notes = [
        "each producer appends 16 B to its own stream and awaits the ack before the next: every commit has up "
        f"to {WIDE} dirty streams; {mode.append_secs * 2:.1f} s per run.",
        "fsyncs/commit = os.fsync + os.fdatasync calls in the process during the run (checkpoints included) / group "
        "commits. 1 producer = an idle disk: its ack p50 is the latency floor a live token sees.",
    ]
    return runs, [table("1b. one stream per producer: fsyncs per group commit, acked appends/s", [
        "fsync", "producers", "acked/s", "commits", "appends/commit", "fsyncs/commit", "ack p50 ms", "ack p99 ms",
    ], rows, notes)]  # fmt: skip


# --- 2 + 3. seek and replay on a 1,000,000-chunk stream -----------------------------------------------


def time_seeks(
    log: Log, n: int, total: int, rng: random.Random, label: str, cold_block: bool = False
) -> list[float]:
    """Latencies of ``log.read(random offset, 1)``; ``cold_block`` empties the Log's one-block decode cache
    before each read (a short stream has so few blocks that random seeks would otherwise mostly hit it)."""
    tick = Progress(label, n)
    out = []
    for i in range(n):
        off = rng.randrange(total)
        if cold_block:
            log._cache = None
        t = time.perf_counter()
        got = log.read(off, 1)
        out.append(time.perf_counter() - t)
        if len(got) != 1:
            raise AssertionError(f"read({off}, 1) returned {len(got)} chunks")
        tick.update(i + 1)
    tick.close()
    return out


def time_replay(log: Log, total: int, expect_bytes: int, label: str) -> float:
    tick = Progress(label, total)
    t = time.perf_counter()
    off = size = 0
    while off < total:
        got = log.read(off, min(1024, total - off))
        off += len(got)
        size += sum(map(len, got))
        tick.update(off)
    dt = time.perf_counter() - t
    tick.close()
    if off != total or size != expect_bytes:
        raise AssertionError(f"replay read {off} chunks / {size} B, expected {total} / {expect_bytes}")
    return total / dt


@dataclass
class BigResult:
    seek_raw: list[float]
    seek_sealed: list[float]
    replay_raw: float
    replay_sealed: float
    build_s: float
    seal_s: float
    raw_bytes: int
    stored_raw: int
    stored_sealed: int
    segments_raw: int
    blocks: int
    cache_hits: int
    block_chunks: int  # chunks in the block used for the decode breakdown
    read_ms: float  # pread + checksum of that block
    block_ms: float  # record.decode_block: zstd decompress + chunk start positions
    full_ms: float  # record.decode_data: every chunk of the block as bytes (what a seek avoids)
    alt: list[tuple[int, list[float], float, float]] = field(
        default_factory=list
    )  # block, seeks, ratio, seal s


def decode_breakdown(log: Log) -> tuple[int, float, float, float]:
    """Where a sealed seek's time goes, on a middle block: (chunks in it, ms to pread + checksum,
    ms for ``record.decode_block`` (zstd decompress + chunk starts), ms to decode every chunk of it)."""
    seg = log.segments[len(log.segments) // 2]
    pos = seg.index.positions[len(seg.index) // 2]
    best = [float("inf")] * 3
    count = 0
    bound = log.opts.block_bytes + log.opts.max_append_bytes
    with open(seg.path, "rb") as f:
        for _ in range(5):
            t0 = time.perf_counter()
            h = record.parse_header(os.pread(f.fileno(), record.HEADER_SIZE, pos))
            assert h is not None and h.flags & record.COMPRESSED
            buf = os.pread(f.fileno(), h.size, pos)
            assert record.check(buf, 0, h)
            t1 = time.perf_counter()
            record.decode_block(h, memoryview(buf)[record.HEADER_SIZE :], bound + 5 * h.count)
            t2 = time.perf_counter()
            record.decode_data(h, memoryview(buf)[record.HEADER_SIZE :], bound + 5 * h.count)
            t3 = time.perf_counter()
            best = [min(b, x) for b, x in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True)]
            count = h.count
    return count, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3


def bench_big(mode: Mode) -> tuple[BigResult, list[str]]:
    n = mode.big_chunks
    note(f"1M stream: generating {n:,} simulated-LLM tokens")
    toks = textgen.llm_tokens(n)
    expect = sum(map(len, toks))
    root = Path(tempfile.mkdtemp(prefix="big-", dir=mode.tmp))
    try:
        log = new_log(root / "s")
        note(f"1M stream: {n:,} Log.append calls of one token each (the layout a live stream has)")
        tick = Progress("appended", n)
        t = time.perf_counter()
        for i, tok in enumerate(toks):
            log.append([tok])
            if i % 4096 == 4095:
                log.commit()
                tick.update(i + 1)
        tick.close()
        log.close("done")
        log.commit()
        build_s = time.perf_counter() - t
        info = log.info()
        assert info.chunks == n, info
        stored_raw, segments_raw = info.stored_bytes, info.segments
        rng = random.Random(1)
        note(f"1M stream: {mode.seek_raw:,} random seeks while still raw")
        seek_raw = time_seeks(log, mode.seek_raw, n, rng, "raw seeks")
        m = mode.replay_raw
        note(f"1M stream: replay of the first {m:,} chunks while still raw")
        replay_raw = time_replay(log, m, sum(map(len, toks[:m])), "raw replay")
        for b in mode.alt_blocks:
            shutil.copytree(root / "s", root / f"s{b}")
        note("1M stream: seal_all (default LogOptions: 256 KiB blocks, zstd 19)")
        t = time.perf_counter()
        log.seal_all()
        seal_s = time.perf_counter() - t
        log.shutdown()
        log = Log.open(root / "s", DEFAULT)  # reopen: cold Log state, sealed files only
        info = log.info()
        assert info.chunks == n and info.status == "done", info
        blocks = sum(len(s.index) for s in log.segments)
        note(f"1M stream: {mode.seek_sealed:,} random seeks on the sealed stream")
        hits = [0]
        orig = log._decode_at

        def counting(seg, fd, pos, h):
            c = log._cache
            if c is not None and c[0] == seg.base and c[1] == pos:
                hits[0] += 1
            return orig(seg, fd, pos, h)

        log._decode_at = counting  # type: ignore[method-assign]
        seek_sealed = time_seeks(log, mode.seek_sealed, n, rng, "sealed seeks")
        log._decode_at = orig  # type: ignore[method-assign]
        note("1M stream: replay of the sealed stream")
        replay_sealed = time_replay(log, n, expect, "sealed replay")
        bd = decode_breakdown(log)
        res = BigResult(seek_raw, seek_sealed, replay_raw, replay_sealed, build_s, seal_s, info.raw_bytes,
                        stored_raw, info.stored_bytes, segments_raw, blocks, hits[0], *bd)  # fmt: skip
        log.shutdown()
        for b in mode.alt_blocks:
            note(f"1M stream: sealing a copy with {b // KIB} KiB blocks, then {mode.seek_sealed:,} seeks")
            alt, secs = seal_copy(root / f"s{b}", None, LogOptions(block_bytes=b))
            lat = time_seeks(alt, mode.seek_sealed, n, rng, "sealed seeks")
            ai = alt.info()
            res.alt.append((b, lat, ai.raw_bytes / ai.stored_bytes, secs))
            alt.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def row(label: str, xs: list[float]) -> list[str]:
        return [
            label,
            f"{len(xs):,}",
            f"{pct(xs, 50) * 1e3:.3f}",
            f"{pct(xs, 99) * 1e3:.3f}",
            f"{max(xs) * 1e3:.3f}",
        ]

    rows = [
        row(f"raw ({segments_raw} segments, 1 record per token)", res.seek_raw),
        row(f"closed + sealed ({res.blocks} blocks of 256 KiB, zstd 19) [default]", res.seek_sealed),
    ]
    for b, lat, ratio, secs in res.alt:
        rows.append(
            row(f"closed + sealed, {b // KIB} KiB blocks (ratio {ratio:.2f}, seal {secs:.1f} s)", lat)
        )
    out = [
        table(
            "2. seek: Log.read(random offset, 1) on a 1,000,000-chunk stream",
            ["layout", "samples", "p50 ms", "p99 ms", "max ms"],
            rows,
            [
                f"simulated-LLM tokens, {res.raw_bytes / n:.2f} B average; built with {n:,} Log.append calls "
                f"in {build_s:.1f} s, sealed in {seal_s:.1f} s; files in the page cache (warm).",
                f"sealed seeks that hit the one-block decode cache: {res.cache_hits}/{len(res.seek_sealed)}.",
                f"where a sealed seek goes, one {res.block_chunks:,}-chunk block: pread + checksum "
                f"{res.read_ms:.2f} ms, record.decode_block (zstd + chunk starts) {res.block_ms:.2f} ms, then only "
                f"the wanted chunk is sliced (decoding every chunk of the block would take {res.full_ms:.2f} ms).",
            ],
        ),
        table(
            "3. replay: read(offset, 1024) from 0 to the end",
            ["layout", "chunks", "chunks/s", "MB/s (chunk bytes)"],
            [
                [
                    "raw (1 record per token)",
                    f"{mode.replay_raw:,}",
                    fmt_n(res.replay_raw),
                    f"{res.replay_raw * res.raw_bytes / n / 1e6:.1f}",
                ],  # fmt: skip
                [
                    "closed + sealed",
                    f"{n:,}",
                    fmt_n(res.replay_sealed),
                    f"{res.replay_sealed * res.raw_bytes / n / 1e6:.1f}",
                ],
            ],
            [
                f"stored bytes of the same stream: raw {res.stored_raw:,} ({res.stored_raw / res.raw_bytes:.1f}x the "
                f"chunk bytes), sealed {res.stored_sealed:,} (ratio {res.raw_bytes / res.stored_sealed:.2f}).",
                "the raw replay reads a prefix in --quick; its rate does not depend on the stream length.",
            ],
        ),
    ]
    return res, out


# --- 4. compression -------------------------------------------------------------------------------------


def build_raw_stream(root: Path, toks: list[bytes], per_append: int = 256) -> Path:
    path = root / "src"
    log = new_log(path, LogOptions(segment_bytes=1 << 40))  # one raw segment; sealing re-blocks anyway
    for i in range(0, len(toks), per_append):
        log.append(toks[i : i + per_append])
    log.close("done")
    log.commit()
    log.shutdown()
    return path


def seal_copy(src: Path, dst: Path | None, opts: LogOptions) -> tuple[Log, float]:
    """Open a copy of a closed raw stream (or ``src`` itself) with ``opts`` and time its seal_all."""
    if dst is not None:
        shutil.copytree(src, dst)
    log = Log.open(dst or src, opts)
    t = time.perf_counter()
    log.seal_all()
    return log, time.perf_counter() - t


@dataclass
class SweepRow:
    corpus: str
    block: int
    level: int
    ratio: float
    seal_s: float
    raw: int
    seek_p50: float = float("nan")
    seek_p99: float = float("nan")


def column_cost(toks: list[bytes], block: int, level: int) -> tuple[int, int]:
    """Compressed bytes of (the text alone, the chunk-length column alone), blocks cut as ``Log.build_seal`` does."""
    cctx = zstandard.ZstdCompressor(level=level)
    text = lens = 0
    i = 0
    while i < len(toks):
        j, size = i, 0
        while j < len(toks) and size < block:
            size += len(toks[j])
            j += 1
        blk = toks[i:j]
        text += len(cctx.compress(b"".join(blk)))
        lens += len(cctx.compress(bytes(min(len(t), 255) for t in blk)))
        i = j
    return text, lens


def bench_sweep(mode: Mode) -> tuple[list[SweepRow], list[str]]:
    note("compression: loading corpora (stdlib prose, simulated LLM)")
    prose_all = textgen.prose_tokens()
    prose: list[bytes] = []
    size = 0
    for t in prose_all:
        if size >= mode.sweep_bytes:
            break
        prose.append(t)
        size += len(t)
    llm: list[bytes] = []
    lsize = 0
    for t in textgen.llm_tokens(2 * len(prose)):
        if lsize >= size:
            break
        llm.append(t)
        lsize += len(t)
    note("compression: text vs chunk-length column at the default block/level")
    split = {
        c: column_cost(t, DEFAULT.block_bytes, DEFAULT.seal_level)
        for c, t in (("prose", prose), ("llm-sim", llm))
    }
    rows: list[SweepRow] = []
    configs = [(b, lv) for b in (64 * KIB, 256 * KIB, 1024 * KIB) for lv in (3, 9, 19)]
    root = Path(tempfile.mkdtemp(prefix="sweep-", dir=mode.tmp))
    try:
        for corpus, toks in (("prose", prose), ("llm-sim", llm)):
            src = build_raw_stream(root / corpus, toks)
            for k, (block, level) in enumerate(configs):
                note(
                    f"compression sweep {corpus}: block {block // KIB} KiB, zstd {level} ({k + 1}/{len(configs)})"
                )
                log, secs = seal_copy(
                    src, root / corpus / f"b{block}-l{level}", LogOptions(block_bytes=block, seal_level=level)
                )
                info = log.info()
                r = SweepRow(corpus, block, level, info.raw_bytes / info.stored_bytes, secs, info.raw_bytes)
                if level == 19:
                    rng = random.Random(7)
                    lat = time_seeks(log, mode.sweep_seeks, info.chunks, rng, "seeks", cold_block=True)
                    r.seek_p50, r.seek_p99 = pct(lat, 50), pct(lat, 99)
                rows.append(r)
                log.shutdown()
                shutil.rmtree(root / corpus / f"b{block}-l{level}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    trows = []
    for r in rows:
        trows.append(
            [
                r.corpus,
                f"{r.block // KIB} KiB",
                str(r.level),
                f"{r.ratio:.2f}",
                f"{r.seal_s:.2f}",
                f"{r.raw / r.seal_s / 1e6:.1f}",
                "" if r.seek_p50 != r.seek_p50 else f"{r.seek_p50 * 1e3:.1f} / {r.seek_p99 * 1e3:.1f}",
                "  <- default" if (r.block, r.level) == (DEFAULT.block_bytes, DEFAULT.seal_level) else "",
            ]
        )
    notes = [
        f"each corpus {rows[0].raw / 1e6:.2f} MB of chunk bytes (prose: {len(prose):,} tokens, "
        f"llm-sim: {len(llm):,} tokens), raw stream written in appends of 256 tokens, then Log.seal_all.",
        "ratio = Log.info().raw_bytes / stored_bytes (stored includes record headers, the close record "
        "and the sparse index). seek = Log.read(random offset, 1) on the sealed stream, level 19 rows only.",
        "seal MB/s = chunk bytes / seal_all time (one core; the Store runs it in a worker thread).",
        *(
            f"{r.corpus}, default block/level: the text alone would compress {r.raw / split[r.corpus][0]:.2f}x; the "
            f"chunk-length column (one byte per token, compressed alone: {split[r.corpus][1]:,} B) is "
            f"{split[r.corpus][1] / (r.raw / r.ratio):.0%} of the stored bytes."
            for r in rows
            if (r.block, r.level) == (DEFAULT.block_bytes, DEFAULT.seal_level)
        ),
        "seek rows: the Log's one-block decode cache is emptied before each read, so every seek decodes a block.",
    ]
    return rows, [table("4a. compression sweep of a closed, sealed stream (block_bytes x zstd level)",
                        ["corpus", "block", "level", "ratio", "seal s", "seal MB/s", "seek p50/p99 ms", ""],
                        trows, notes)]  # fmt: skip


@dataclass
class ShortResult:
    corpus: str
    level: int
    n: int
    raw: int
    stored: int
    disk: int
    files: int
    median_ratio: float
    zstd_alone: float
    zstd_dict: float


def bench_short(mode: Mode) -> tuple[list[ShortResult], list[str]]:
    out: list[ShortResult] = []
    n = mode.short_n
    corpora = {
        "llm-sim": (textgen.llm_answers(n), textgen.llm_answers(600, seed=50_000)),
        "prose": (textgen.prose_answers(n + 600)[:n], textgen.prose_answers(n + 600)[n:]),
    }
    root = Path(tempfile.mkdtemp(prefix="short-", dir=mode.tmp))
    try:
        for corpus, (answers, train) in corpora.items():
            samples: list[bytes | bytearray | memoryview] = [b"".join(a) for a in train]
            dict_data = zstandard.train_dictionary(110 * KIB, samples)
            for level in (3, 19):
                note(f"short responses {corpus}, zstd {level}: {n} streams of one answer each")
                tick = Progress("streams", n)
                raw = stored = disk = files = 0
                ratios = []
                for i, toks in enumerate(answers):
                    p = root / f"{corpus}-{level}-{i}"
                    log = new_log(p, LogOptions(seal_level=level), sid=f"chat/{i}")
                    for tok in toks:
                        log.append([tok])
                    log.close("done")
                    log.commit()
                    log.seal_all()
                    info = log.info()
                    raw += info.raw_bytes
                    stored += info.stored_bytes
                    ratios.append(info.raw_bytes / info.stored_bytes)
                    d, f = disk_bytes(p)
                    disk += d
                    files += f
                    log.shutdown()
                    shutil.rmtree(p)
                    tick.update(i + 1)
                tick.close()
                texts = [b"".join(a) for a in answers]
                plain = zstandard.ZstdCompressor(level=level)
                with_dict = zstandard.ZstdCompressor(
                    level=level, dict_data=dict_data, write_content_size=False
                )
                alone = sum(map(len, texts)) / sum(len(plain.compress(t)) for t in texts)
                dct = sum(map(len, texts)) / sum(len(with_dict.compress(t)) for t in texts)
                out.append(
                    ShortResult(
                        corpus, level, n, raw, stored, disk, files, statistics.median(ratios), alone, dct
                    )
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        [
            r.corpus,
            str(r.level),
            f"{r.raw / r.n:,.0f}",
            f"{r.raw / r.stored:.2f}",
            f"{r.median_ratio:.2f}",
            f"{r.stored / r.n:,.0f}",
            f"{r.disk / r.n:,.0f} ({r.files / r.n:.0f} files)",
            f"{r.zstd_alone:.2f}",
            f"{r.zstd_dict:.2f}",
        ]
        for r in out
    ]
    notes = [
        f"{n} streams per row, each one answer appended token by token, closed and sealed; ratio = "
        "sum raw_bytes / sum stored_bytes (and the median per stream).",
        "on disk = allocated bytes of the stream directory (meta.json, checkpoint.json, .zlog, .idx; "
        "4 KiB filesystem blocks), which Log.info().stored_bytes does not count.",
        "zstd alone / +dict = the answer's text compressed by itself, without and with a 110 KiB dictionary "
        "trained on 600 other answers of the same corpus: a reference: the segment log has no dictionary; the archive (storage/file/archive.py) trains its own.",
    ]
    return out, [table("4b. single responses as separate streams (a chat app's many short answers)",
                       ["corpus", "level", "raw B/stream", "ratio", "median", "stored B/stream", "on disk B/stream",
                        "zstd alone", "zstd +dict"], rows, notes)]  # fmt: skip


# --- main ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs and fewer samples (< 60 s)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory for the scratch data (default /tmp)")
    args = ap.parse_args(argv)
    mode = QUICK if args.quick else FULL
    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=args.tmp))
    mode.tmp = tmp
    load0 = os.getloadavg()[0]
    note(f"mode {mode.name}, scratch dir {tmp}, {os.cpu_count()} CPUs, zstandard {zstandard.__version__}")
    sections: list[str] = []
    try:
        runs, s = bench_appends(mode)
        sections += s
        wide, s = bench_wide(mode)
        sections += s
        big, s = bench_big(mode)
        sections += s
        sweep, s = bench_sweep(mode)
        sections += s
        short, s = bench_short(mode)
        sections += s
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def rate(impl: str, policy: str, size: int, producers: int = PRODUCERS) -> float:
        rs = sorted(
            r.rate for r in runs if (r.impl, r.policy, r.size, r.producers) == (impl, policy, size, producers)
        )
        return rs[len(rs) // 2]

    ratio16 = rate("ours (Store)", "interval", 16) / rate("raw baseline", "interval", 16)
    ratio1k = rate("ours (Store)", "interval", KIB) / rate("raw baseline", "interval", KIB)
    headline = next(r for r in sweep if r.corpus == "prose" and (r.block, r.level) == (256 * KIB, 19))
    sim = next(r for r in sweep if r.corpus == "llm-sim" and (r.block, r.level) == (256 * KIB, 19))
    print(f"# bench.storage ({mode.name}) - {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, zstandard {zstandard.__version__}, scratch on {args.tmp}, "
          f"{git_revision('storage')}, load average {load0:.2f} at start / {os.getloadavg()[0]:.2f} at end")  # fmt: skip
    for section in sections:
        print(section)
    print("\n## summary")
    stress = rate("ours (Store)", "interval", 16, STRESS[0]) / rate("raw baseline", "interval", 16, STRESS[0])
    print(f"append ours/raw, fsync=interval, {PRODUCERS} producers: 16 B {ratio16:.2f} (headline: token-sized), "
          f"1 KiB {ratio1k:.2f}; stress {STRESS[0]} producers, 16 B: {stress:.2f}")  # fmt: skip
    print(f"seek p99 on the sealed 1M stream: {pct(big.seek_sealed, 99) * 1e3:.2f} ms "
          f"(raw layout {pct(big.seek_raw, 99) * 1e3:.2f} ms)")  # fmt: skip
    print(f"replay: sealed {fmt_n(big.replay_sealed)} chunks/s, raw {fmt_n(big.replay_raw)} chunks/s")
    print(f"compression (default 256 KiB / zstd 19): prose {headline.ratio:.2f} (headline), "
          f"simulated LLM {sim.ratio:.2f} (too repetitive to be the headline)")  # fmt: skip
    print()
    print(f"append_vs_raw_interval: {ratio16:.3f}")
    print(f"seek_p99_ms: {pct(big.seek_sealed, 99) * 1e3:.3f}")
    print(f"replay_chunks_per_s: {big.replay_sealed:.0f}")
    print(f"compression_ratio: {headline.ratio:.3f}")
    w = {(r.policy, r.producers): r for r in wide}
    wi = w["interval", WIDE]
    print(f"fsyncs_per_commit: {wi.fsync_calls / max(wi.commits, 1):.3f}")
    for policy in ("interval", "always", "never"):
        print(f"acked_appends_per_s_{policy}: {w[policy, WIDE].rate:.0f}")
    print(f"idle_ack_p50_ms_interval: {pct(w['interval', 1].lat, 50) * 1e3:.3f}")
    note("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
