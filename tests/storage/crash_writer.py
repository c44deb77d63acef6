"""Crash-test writer: a real process that appends to a Store until it is SIGKILLed (see test_crash.py).

    python tests/crash_writer.py DATA_DIR POLICY SEED [JOURNAL_BYTES]

On start it reopens DATA_DIR (running recovery) and reports every stream it finds, then a few
workers append to their current stream (several appends in flight at once, so they share group
commits), close it after a while and move on to a fresh one. Every line is written to stdout, as one
write, only after the awaited call returned, i.e. after the store acknowledged it:

    {"op":"state","stream":ID,"next":N,"status":S,"epoch":E}   found on start (after recovery)
    {"op":"ready"}
    {"op":"created","stream":ID}
    {"op":"ack","stream":ID,"offset":N,"data":[HEX,...]}        chunks N, N+1, ... are durable
    {"op":"closed","stream":ID,"next":N}
    {"op":"error","message":TEXT}                                 a check inside the writer failed

A worker also retries, after each restart, the last append its producer id landed and checks that
the store answers with the original offset instead of writing it again.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import LogOptions, Store, StoreOptions, Stream  # noqa: E402

WORKERS = 3
OPTS = LogOptions(segment_bytes=4096, block_bytes=1024, seal_level=1)
_enc = msgspec.json.Encoder()


def out(**msg: object) -> None:
    # one write(2) per line (lines stay well under PIPE_BUF), flushed before anything else happens
    sys.stdout.buffer.write(_enc.encode(msg) + b"\n")
    sys.stdout.buffer.flush()


class Worker:
    def __init__(self, store: Store, k: int, rng: random.Random) -> None:
        self.store, self.k, self.rng = store, k, rng
        self.pid = f"producer-{k}"
        self.seq = 0
        self.count = 0

    def chunk(self) -> bytes:
        if self.rng.random() < 0.05:
            return b""
        self.count += 1
        tag = f"{self.k}.{os.getpid()}.{self.count}|".encode()  # unique, so duplicates would show
        return tag + self.rng.randbytes(self.rng.choice([0, 3, 10, 60, 130, 250]))

    async def start_stream(self) -> Stream:
        prefix = f"w{self.k}/"
        gens = sorted(int(i[len(prefix) :]) for i in self.store.list(prefix))
        if gens:
            s = self.store.get(f"{prefix}{gens[-1]}")
            if s.status == "open":
                await self.check_retry(s)
                return s
        s = await self.store.create(f"{prefix}{gens[-1] + 1 if gens else 0}")
        out(op="created", stream=s.id)
        self.seq = 0
        return s

    async def check_retry(self, s: Stream) -> None:
        st = s.log.producers.get(self.pid)
        self.seq = st.seq if st else 0
        if st is None:
            return
        chunks = s.read(st.first_offset, max_chunks=st.count)
        res = await s.append(chunks, producer_id=self.pid, seq=st.seq)
        if not res.duplicate or res.offset != st.first_offset or s.next_offset < st.first_offset + st.count:
            out(
                op="error",
                message=f"retry of {s.id} seq {st.seq} gave {res}, expected offset {st.first_offset}",
            )

    async def append(self, s: Stream, chunks: list[bytes], seq: int) -> None:
        res = await s.append(chunks, producer_id=self.pid, seq=seq)
        if res.duplicate:
            out(op="error", message=f"fresh append to {s.id} seq {seq} reported as a duplicate")
        out(op="ack", stream=s.id, offset=res.offset, data=[c.hex() for c in chunks])

    async def run(self) -> None:
        s = await self.start_stream()
        left = self.rng.randint(10, 120)
        while True:
            tasks = []
            for _ in range(self.rng.randint(1, 4)):  # several in flight: they share fsyncs
                self.seq += 1
                chunks = [self.chunk() for _ in range(self.rng.randint(1, 3))]
                tasks.append(asyncio.create_task(self.append(s, chunks, self.seq)))
            await asyncio.gather(*tasks)
            left -= len(tasks)
            if left <= 0:
                await s.close(self.rng.choice(["done", "error", "cancelled"]))
                out(op="closed", stream=s.id, next=s.next_offset)
                s = await self.start_stream()
                left = self.rng.randint(10, 120)


async def main() -> None:
    root, policy, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # a tiny journal file size makes checkpoints (rotation, segment fsyncs, deletes) constant
    journal_bytes = int(sys.argv[4]) if len(sys.argv) > 4 else StoreOptions().journal_bytes
    rng = random.Random(seed)
    # short seal and archive delays, so kills also land while answers are sealed and archived
    store = Store(
        root,
        StoreOptions(
            fsync=policy,
            interval_ms=2,
            log=OPTS,
            retention_every=0.05,
            seal_delay_s=0.1,
            archive_delay_s=0.2,
            journal_bytes=journal_bytes,
        ),
    )
    await store.start()
    for sid in store.list():
        s = store.get(sid)
        out(op="state", stream=sid, next=s.next_offset, status=s.status, epoch=s.log.meta.epoch)
    out(op="ready")

    async def archived() -> None:
        """Say when answers reached the archive, so a kill can be made to land after one did."""
        seen = 0
        while True:
            await asyncio.sleep(0.02)
            if store.counters["archived"] > seen:
                seen = store.counters["archived"]
                out(op="archived", n=seen)

    await asyncio.gather(
        archived(), *(Worker(store, k, random.Random(rng.random())).run() for k in range(WORKERS))
    )


if __name__ == "__main__":
    asyncio.run(main())
