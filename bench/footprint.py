"""Footprint benchmark: what N finished short answers cost on disk, and how fast an archived one resumes.

    python -m bench.footprint            # 100,000 answers
    python -m bench.footprint --quick    # 10,000 answers

N answers of English prose (the ``bench.textgen`` corpus, 0.3-4 KB, mean ~700 B, cut into 1-8
character tokens) are written to a real hub (``python -m hub serve``, a subprocess) over its
WebSocket API as a producer would: one append per 1-4 tokens, then a close, 32 producers side by
side. The benchmark then waits until every answer has left its directory for the archive, stops the
hub, and counts the allocated blocks (``st_blocks``) and inodes of the whole data dir. Then it starts
the hub again and times subscribes at a random offset of a random archived answer (send to first
``chunks`` frame). Baseline, same run: the first 1,000 answers written with the storage API into a
store that never archives (the layout before the archive: a directory and 4 files per answer).

Ends with ``key: value`` lines: ``disk_ratio`` (raw text bytes / allocated bytes), ``inodes_per_answer``,
``archived_resume_p99_ms``, and the baseline's ``baseline_disk_ratio``/``baseline_inodes_per_answer``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import tempfile
import time
from pathlib import Path

import aiohttp
import msgspec

from hub.producers import llm_sim
from storage import Store, StoreOptions

from . import textgen
from .common import HubProcess, git_revision, note, pct, progress, table

PRODUCERS = 32
RESUMES = 500


def answers(n: int, seed: int = 7) -> list[list[str]]:
    """``n`` answers of 300..4000 characters (log-normal sizes, mean ~700) cut from the prose corpus,
    as token lists. The corpus (2.4 MB) is cut again from a shifted start when it runs out."""
    rng = random.Random(seed)
    text = "\n\n".join(textgen.prose_texts())
    out: list[list[str]] = []
    pos, shift = 0, 0
    while len(out) < n:
        size = int(min(4000, max(300, rng.lognormvariate(math.log(560), 0.6))))
        if pos + size > len(text):
            shift += 997
            pos = shift % 5000
        out.append(list(llm_sim.tokenize(text[pos : pos + size])))
        pos += size
    return out


def groups(tokens: list[str], rng: random.Random) -> list[list[str]]:
    """A model's output as a producer sends it: 1-4 tokens per append."""
    out, i = [], 0
    while i < len(tokens):
        k = rng.randint(1, 4)
        out.append(tokens[i : i + k])
        i += k
    return out


def disk_usage(root: Path) -> tuple[int, int]:
    """(allocated bytes, inodes) of a directory tree, the root included."""
    st = root.lstat()
    total, inodes = st.st_blocks * 512, 1
    for p in root.rglob("*"):
        st = p.lstat()
        total += st.st_blocks * 512
        inodes += 1
    return total, inodes


_enc = msgspec.json.Encoder()


async def produce(ws_url: str, work: list[tuple[str, list[str]]], seed: int, bar: object) -> None:
    rng = random.Random(seed)
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        for sid, tokens in work:
            # create first (a producer learns the stream exists), then stream the tokens without
            # waiting for each ack, then close
            await ws.send_str(_enc.encode({"op": "create", "stream": sid, "id": -1}).decode())
            msg = msgspec.json.decode((await ws.receive(timeout=60)).data)
            if msg["op"] != "ack":
                raise RuntimeError(f"{sid}: {msg}")
            frames = [
                {"op": "append", "stream": sid, "data": g, "id": i} for i, g in enumerate(groups(tokens, rng))
            ]
            frames.append({"op": "close", "stream": sid, "status": "done", "id": len(frames)})
            want = len(frames)
            for f in frames:
                await ws.send_str(_enc.encode(f).decode())
            got = 0
            while got < want:
                msg = msgspec.json.decode((await ws.receive(timeout=60)).data)
                if msg["op"] == "error":
                    raise RuntimeError(f"{sid}: {msg}")
                got += msg["op"] == "ack"
            bar.update(1)  # type: ignore[attr-defined]


async def resumes(ws_url: str, picks: list[tuple[str, int]]) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
        for sid, offset in picks:
            t0 = time.perf_counter()
            await ws.send_str(_enc.encode({"op": "subscribe", "stream": sid, "from": offset}).decode())
            while True:
                msg = msgspec.json.decode((await ws.receive(timeout=30)).data)
                if msg["op"] == "chunks" and msg["stream"] == sid:
                    out.append((time.perf_counter() - t0) * 1000)
                    break
                if msg["op"] == "error":
                    raise RuntimeError(f"{sid}@{offset}: {msg}")
            await ws.send_str(_enc.encode({"op": "unsubscribe", "stream": sid}).decode())
    return out


async def baseline(tmp: Path, data: list[list[str]]) -> tuple[int, int, int]:
    """The old layout: the same answers in a store that never archives. (raw, allocated, inodes)."""
    root = tmp / "baseline"
    store = Store(root, StoreOptions(fsync="never", seal_delay_s=0.0, archive_delay_s=None))
    await store.start()
    raw = 0
    rng = random.Random(1)
    for i, tokens in enumerate(data):
        s = await store.create(f"chat/{i // 8}/{i % 8}")
        for g in groups(tokens, rng):
            await s.append([t.encode() for t in g])
        await s.close()
        raw += sum(len(t.encode()) for t in tokens)
    async with asyncio.timeout(120):
        while any(not g.sealed for sid in store.list() for g in store.get(sid).log.segments):
            await asyncio.sleep(0.1)
    await store.stop()
    (root / "store.db").unlink()  # the catalog did not exist in that layout
    for p in root.glob("store.db-*"):
        p.unlink()
    alloc, inodes = disk_usage(root)
    return raw, alloc, inodes


async def main_async(n: int, keep: bool) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    try:
        note(f"footprint: {n:,} answers, {PRODUCERS} producers, data in {tmp}")
        data = answers(n)
        raw = sum(len(t.encode()) for a in data for t in a)
        sids = [f"chat/{i // 8:06d}/{i % 8}" for i in range(n)]
        hub = HubProcess(tmp / "data", fsync="interval", log=tmp / "hub.log")
        await hub.start()
        t0 = time.perf_counter()
        work = list(zip(sids, data, strict=True))
        with progress("answers", n) as bar:
            done = [0]

            class Bar:
                def update(self, k: int) -> None:
                    done[0] += k
                    bar.update(done[0])

            b = Bar()
            await asyncio.gather(*(produce(hub.ws_url, work[k::PRODUCERS], k, b) for k in range(PRODUCERS)))
        write_s = time.perf_counter() - t0
        note("waiting for every answer to reach the archive")
        t1 = time.perf_counter()
        streams = tmp / "data" / "streams"
        async with asyncio.timeout(300):
            while any(streams.glob("*/*/*")):
                await asyncio.sleep(0.5)
        archive_s = time.perf_counter() - t1
        await hub.stop()
        alloc, inodes = disk_usage(tmp / "data")
        db = sum(p.lstat().st_blocks * 512 for p in (tmp / "data").glob("store.db*"))
        parts = {p.name: disk_usage(p)[0] for p in sorted((tmp / "data").iterdir())}
        await hub.start()
        rng = random.Random(3)
        picks = []
        for _ in range(RESUMES):
            i = rng.randrange(n)
            picks.append((sids[i], rng.randrange(len(data[i]))))
        lat = await resumes(hub.ws_url, picks)
        await hub.stop()
        b_raw, b_alloc, b_inodes = await baseline(tmp, data[:1000])
        rev = git_revision("storage", "bench/footprint.py")
        rows = [
            [
                "archive (this layout)",
                f"{n:,}",
                f"{raw / n:,.0f}",
                f"{alloc / n:,.0f}",
                f"{raw / alloc:.2f}",
                f"{inodes / n:.4f}",
            ],
            [
                "baseline: dir + 4 files each",
                "1,000",
                f"{b_raw / 1000:,.0f}",
                f"{b_alloc / 1000:,.0f}",
                f"{b_raw / b_alloc:.2f}",
                f"{b_inodes / 1000:.2f}",
            ],
        ]
        print(
            table(
                f"Disk per finished answer ({rev})",
                ["layout", "answers", "raw B/answer", "allocated B/answer", "raw/allocated", "inodes/answer"],
                rows,
                [
                    f"written through the hub's WebSocket API in {write_s:.1f} s ({n / write_s:,.0f} answers/s,"
                    f" {PRODUCERS} producers, 1-4 tokens per append, fsync=interval); archived"
                    f" {archive_s:.1f} s after the last close",
                    f"store.db and its WAL: {db:,} B allocated; allocated = st_blocks of every file and"
                    " directory in the data dir",
                    "by entry of the data dir: " + ", ".join(f"{k} {v:,} B" for k, v in parts.items()),
                ],
            )
        )
        print(
            table(
                "Subscribe at a random offset of a random archived answer (hub restarted)",
                ["samples", "p50 ms", "p99 ms", "max ms"],
                [[len(lat), f"{pct(lat, 50):.2f}", f"{pct(lat, 99):.2f}", f"{max(lat):.2f}"]],
                ["send of subscribe to the first chunks frame, one WebSocket, one at a time"],
            )
        )
        print()
        print(f"disk_ratio: {raw / alloc:.2f}")
        print(f"inodes_per_answer: {inodes / n:.4f}")
        print(f"archived_resume_p99_ms: {pct(lat, 99):.2f}")
        print(f"baseline_disk_ratio: {b_raw / b_alloc:.3f}")
        print(f"baseline_inodes_per_answer: {b_inodes / 1000:.2f}")
        return 0
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10,000 answers instead of 100,000")
    ap.add_argument("-n", type=int, help="number of answers")
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    args = ap.parse_args(argv)
    n = args.n or (10_000 if args.quick else 100_000)
    return asyncio.run(main_async(n, args.keep))


if __name__ == "__main__":
    raise SystemExit(main())
