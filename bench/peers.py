"""The hub beside what a user would pick instead: ``python -m bench.peers [--quick | --smoke] [--plots DIR]``.

One run, the same workloads, against five peers (all on 127.0.0.1, all real processes):

(a) the hub on the file store (``python -m hub serve``), (b) the hub on Redis (``--store redis://``),
(c) Redis Streams used directly from ``redis.asyncio`` (XADD / XREAD / XRANGE), (d) the Durable Streams
reference server (``@durable-streams/server``, file-backed) and (e) vercel's ``resumable-stream`` on the
same redis-server, (d) and (e) driven through ``bench/peers_node/harness.mjs`` (pinned by its
package-lock.json; ``npm ci`` runs by itself the first time).

Workloads:

* **live**: one stream, N subscribers attached before the first chunk, T tokens produced at a fixed
  rate. Latency = the producer's send of a chunk -> a subscriber holding it (both clocks this process's),
  over every (subscriber, chunk); delivered/s = deliveries / (first send -> the last one). A producer
  slower than the rate stops after ``live_max_s`` and the figures cover what it sent. The hub is
  driven twice: over its WebSocket, and over Durable Streams (POST per chunk, SSE readers) with the very
  client code that drives the reference server. resumable-stream: the chunks go to the harness as one
  streaming request body, the N readers are ``resumeExistingStream`` followers (Redis pub/sub).
* **resume**: finished short answers (``bench.footprint``'s prose, 1-4 tokens per append, then a close);
  the rest of one from a random offset, one request at a time on an open connection, request -> last
  byte (Durable Streams: GET ``?offset=``; hub WebSocket: subscribe -> ``end``; Redis: one XRANGE).
  The hub and the reference server are restarted first (cold caches, as after a deploy). Every answer
  read is compared with what was written.
* **appends**: W writers, one stream each, one append (32 bytes) in flight each, awaited; appends/s
  over a fixed time, every setting in interleaved rounds, the best round kept. Same durability on
  both sides of each comparison (see ``ACK``).
* **bytes per answer**: the resume workload's answers, once finished and compacted: allocated bytes
  (``st_blocks``) of the data dir, with the server stopped, after minus before (file stores); Redis
  ``used_memory`` after minus before, after ``MEMORY PURGE`` (Redis-backed).
* **CPU per delivered chunk**: utime+stime from ``/proc/<pid>/stat`` of every server process of the
  peer (hub and its sync helper, redis-server, node) over the live workload, divided by the deliveries.

The last lines (``key: value``, every ratio ours/theirs: < 1 is better for the five latency and bytes
ratios, > 1 for the two appends ratios):

* ``e2e_p99_vs_ds_ref``: live p99 latency, hub on files over Durable Streams / the reference server;
* ``resume_p99_vs_ds_ref``: resume p99, hub on files / reference server, both GET ``?offset=``;
* ``resume_p99_vs_redis``: resume p99, hub on files over its WebSocket / Redis XRANGE;
* ``append_vs_redis_always``: appends/s, hub on files ``--fsync always`` / Redis XADD, ``appendfsync always``
  (both acknowledge after fsync) -- ours/theirs, so > 1 means the hub is faster;
* ``append_vs_redis_everysec``: appends/s, hub ``--fsync never`` / XADD, ``appendfsync everysec``
  (both acknowledge before fsync) -- ours/theirs;
* ``bytes_per_answer_vs_ds_ref``: allocated bytes per finished answer, hub on files / reference server;
* ``e2e_p99_vs_resumable_stream``: live p99, hub on files over Durable Streams / resumable-stream.

Every loop is bounded in count and in time. The Python client is the same process for every peer, so
client cost is in every figure alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import redis.asyncio as aioredis

from . import footprint
from .common import ROOT, HubProcess, ServerProcess, free_port, git_revision, note, pct, progress, table
from .redisproc import RedisServer
from .textgen import llm_tokens

APPEND_ROUNDS = {"smoke": 1, "quick": 3, "full": 3}
NODE_DIR = ROOT / "bench" / "peers_node"
HARNESS = NODE_DIR / "harness.mjs"
TEXT = {"Content-Type": "text/plain"}
CHUNK = b"tok " * 8  # the appends workload's payload: 32 bytes, a few tokens' worth
_enc = msgspec.json.Encoder()

HUB_F, HUB_R, REDIS, DS_REF, RS = (
    "hub (file)",
    "hub (Redis)",
    "Redis Streams",
    "DS reference",
    "resumable-stream",
)

AFTER, BEFORE = "ack after fsync", "ack before fsync"
AFTER_SETTINGS = ("--fsync always", "--fsync interval", "appendfsync always", "fdatasync per append", AFTER)
# What an acknowledgement means, per peer and setting (printed under the appends table).
ACK = {
    "hub --fsync always": "after fsync; appends arriving during an fsync share the next one",
    "hub --fsync interval": "after the group fsync; a commit starts at once (the default; the journal made it the same as always)",
    "hub --fsync never": "after write() to the OS page cache",
    "Redis appendfsync always": "after the AOF write + fsync of the event-loop iteration that ran it",
    "Redis appendfsync everysec": "in memory + AOF write(); fsynced within ~1 s",
    "DS reference (file)": "after write() + fdatasync of the stream's segment file, then an LMDB metadata "
    "commit (lmdb-js overlappingSync: flushed after the commit); no setting changes it",
    "resumable-stream": "no acknowledgement: chunks live in the producer process's memory; Redis only "
    "carries pub/sub and a sentinel key",
}


@dataclass
class Params:
    mode: str
    subs: int
    tokens: int
    rate: float
    answers: int
    resumes: int
    append_s: float
    writers: int
    live_max_s: float
    warm_up: int  # answers written to each peer before the bytes-per-answer baseline


MODES = {
    "smoke": Params(
        mode="smoke",
        subs=3,
        tokens=30,
        rate=200.0,
        answers=4,
        resumes=10,
        append_s=0.2,
        writers=4,
        live_max_s=3.0,
        warm_up=1,
    ),
    "quick": Params(
        mode="quick",
        subs=50,
        tokens=200,
        rate=100.0,
        answers=40,
        resumes=200,
        append_s=3.0,
        writers=32,
        live_max_s=8.0,
        warm_up=10,
    ),
    "full": Params(
        mode="full",
        subs=200,
        tokens=1000,
        rate=100.0,
        answers=1000,
        resumes=1000,
        append_s=5.0,
        writers=32,
        live_max_s=60.0,
        warm_up=20,
    ),
}


@dataclass
class Live:
    lat_ms: list[float]
    delivered_per_s: float
    cpu_us_per_chunk: float
    chunks: int  # sent before the time limit (all of them unless the peer is slower than the rate)


@dataclass
class Results:
    params: Params
    live: dict[str, Live | str] = field(default_factory=dict)  # a str is "n/a (why)"
    resume: dict[str, list[float] | str] = field(default_factory=dict)
    appends: dict[str, dict[str, float | str]] = field(default_factory=dict)  # peer -> setting -> rate
    append_cpu: dict[tuple[str, str], float] = field(default_factory=dict)  # server CPU us/append, that round
    bytes_per_answer: dict[str, tuple[float, str] | str] = field(default_factory=dict)
    raw_per_answer: float = 0.0
    after_settings: tuple[str, ...] = ()  # the appends settings that acknowledge after an fsync


# --- processes -------------------------------------------------------------------------------------


def ensure_node_modules() -> None:
    """``npm ci`` in bench/peers_node unless it was done (the Makefile's stamp convention)."""
    stamp = NODE_DIR / "node_modules" / ".installed"
    if stamp.is_file():
        return
    note("installing bench/peers_node (npm ci, pinned by package-lock.json)")
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300)
    stamp.touch()


def node_peer(mode: str, where: str, log: Path) -> ServerProcess:
    port = free_port()
    return ServerProcess(["node", str(HARNESS), mode, str(port), where], port, log=log)


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of these processes (all their threads) and of their running children (the hub's
    sync helper), from /proc/<pid>/stat."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except FileNotFoundError:  # a child that has just exited
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), after pid and comm
    return total / tick


def disk_bytes(root: Path) -> int:
    return footprint.disk_usage(root)[0]


async def used_memory(r: aioredis.Redis) -> int:
    await r.execute_command("MEMORY", "PURGE")
    return int((await r.info("memory"))["used_memory"])


# --- live: one stream, N subscribers ---------------------------------------------------------------


def chunk_ends(toks: Sequence[bytes]) -> list[int]:
    out, n = [], 0
    for t in toks:
        n += len(t)
        out.append(n)
    return out


class Marks:
    """When one subscriber first held each chunk (by chunk number, or by bytes received)."""

    def __init__(self, ends: list[int]) -> None:
        self.ends, self.at = ends, [math.nan] * len(ends)
        self.n = self.bytes = 0

    def upto(self, count: int, now: float) -> None:
        while self.n < min(count, len(self.at)):
            self.at[self.n] = now
            self.n += 1

    def add_bytes(self, k: int, now: float) -> None:
        self.bytes += k
        while self.n < len(self.ends) and self.ends[self.n] <= self.bytes:
            self.at[self.n] = now
            self.n += 1


def sent_count(sent: Sequence[float]) -> int:
    return sum(1 for x in sent if not math.isnan(x))


def latencies(marks: Sequence[Marks], sent: Sequence[float]) -> list[float]:
    n = sent_count(sent)
    out = []
    for m in marks:
        if m.n < n:
            raise RuntimeError(f"a subscriber got {m.n} of {n} chunks")
        out += [(a - s) * 1000 for a, s in zip(m.at[:n], sent[:n], strict=True)]
    return out


async def paced(toks: Sequence[bytes], p: Params, sent: list[float], label: str) -> Any:
    """Yields (i, token) at ``p.rate`` per second, stamping ``sent[i]`` just before the caller sends it;
    stops early after ``p.live_max_s`` (a peer slower than the rate sends fewer chunks: ``sent_count``)."""
    t0 = time.perf_counter()
    with progress(label, len(toks)) as bar:
        for i, t in enumerate(toks):
            if time.perf_counter() - t0 > p.live_max_s:
                return
            delay = t0 + i / p.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[i] = time.perf_counter()
            yield i, t
            bar.update(i + 1)


async def live_ws(hub: HubProcess, p: Params, toks: list[bytes], sid: str) -> tuple[list[Marks], list[float]]:
    """The hub's WebSocket: WS subscribers, a WS producer that pipelines its appends."""
    sent = [math.nan] * len(toks)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s, s.ws_connect(hub.ws_url) as prod:
        await prod.send_str(_enc.encode({"op": "create", "stream": sid, "id": "c"}).decode())
        while msgspec.json.decode((await prod.receive(timeout=30)).data).get("op") != "ack":
            pass
        marks = [Marks([0] * len(toks)) for _ in range(p.subs)]
        ready = [asyncio.Event() for _ in range(p.subs)]

        async def sub(m: Marks, ev: asyncio.Event) -> None:
            async with s.ws_connect(hub.ws_url, max_msg_size=0) as ws:
                await ws.send_str(_enc.encode({"op": "subscribe", "stream": sid, "from": 0}).decode())
                async for msg in ws:
                    f = msgspec.json.decode(msg.data)
                    op = f.get("op")
                    if op == "subscribed":
                        ev.set()
                    elif op == "chunks":
                        m.upto(f["offset"] + len(f["data"]), time.perf_counter())
                    elif op in ("end", "error"):
                        return

        tasks = [asyncio.create_task(sub(m, ev)) for m, ev in zip(marks, ready, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 60)
        acks = 0

        async def read_acks() -> None:
            nonlocal acks
            async for msg in prod:
                f = msgspec.json.decode(msg.data)
                if f.get("op") == "error":
                    raise RuntimeError(f"hub producer: {f}")
                if f.get("op") == "ack" and f.get("id") == "end":
                    return

        reader = asyncio.create_task(read_acks())
        async for i, t in paced(toks, p, sent, "live hub WS"):
            await prod.send_str(
                _enc.encode({"op": "append", "stream": sid, "data": t.decode(), "id": i}).decode()
            )
        await prod.send_str(
            _enc.encode({"op": "close", "stream": sid, "status": "done", "id": "end"}).decode()
        )
        await asyncio.wait_for(reader, 60)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return marks, sent


def hub_count(token: str) -> int:
    """Chunks before a hub offset token (``{n:016d}_0000000000000000`` is chunk n)."""
    return int(token.split("_")[0])


def ds_ref_counter(toks: Sequence[bytes]) -> Callable[[str], int]:
    """Chunks before a reference server offset token: its second field counts stored bytes, each
    message framed with 5 more (a 4-byte length and a newline), in one segment (first field 0)."""
    at, n = {f"{0:016d}_{0:016d}": 0}, 0
    for i, t in enumerate(toks):
        n += len(t) + 5
        at[f"{0:016d}_{n:016d}"] = i + 1
    return lambda token: at[token]


async def sse_reader(
    s: aiohttp.ClientSession, url: str, m: Marks, ready: asyncio.Event, count_of: Callable[[str], int]
) -> None:
    """A Durable Streams SSE reader (protocol 5.7): a chunk is held once a ``control`` event's
    ``streamNextOffset`` is past it (it follows each ``data`` event at once); stops at ``streamClosed``.
    Offsets rather than payload bytes: the reference server writes ``data:{line}``, so a conforming
    SSE parser strips the leading space of a line that starts with one (the hub adds a spare one)."""
    async with s.get(url, params={"offset": "-1", "live": "sse"}) as r:
        if r.status != 200:
            raise RuntimeError(f"SSE {url}: {r.status} {await r.text()}")
        ready.set()
        event, data = "", []
        async for line in r.content:
            if line in (b"\n", b"\r\n"):
                if event == "control":
                    ctl = msgspec.json.decode(b"\n".join(data))
                    m.upto(count_of(ctl["streamNextOffset"]), time.perf_counter())
                    if ctl.get("streamClosed"):
                        return
                event, data = "", []
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                v = line[5:].rstrip(b"\n").removesuffix(b"\r")
                data.append(v[1:] if v.startswith(b" ") else v)


async def live_ds(
    url: str, p: Params, toks: list[bytes], count_of: Callable[[str], int]
) -> tuple[list[Marks], list[float]]:
    """Durable Streams: PUT, N SSE readers, one POST per chunk (awaited, in order), a closing POST."""
    sent = [math.nan] * len(toks)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async with s.put(url, headers=TEXT) as r:
            if r.status not in (200, 201):
                raise RuntimeError(f"PUT {url}: {r.status} {await r.text()}")
        marks = [Marks([0] * len(toks)) for _ in range(p.subs)]
        ready = [asyncio.Event() for _ in range(p.subs)]
        tasks = [
            asyncio.create_task(sse_reader(s, url, m, ev, count_of))
            for m, ev in zip(marks, ready, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 60)
        async for _, t in paced(toks, p, sent, f"live DS {url.split('/')[2]}"):
            async with s.post(url, data=t, headers=TEXT) as r:
                if r.status not in (200, 204):
                    raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
        async with s.post(url, headers={**TEXT, "Stream-Closed": "true"}) as r:
            if r.status not in (200, 204):
                raise RuntimeError(f"close {url}: {r.status} {await r.text()}")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return marks, sent


async def live_redis(url: str, p: Params, toks: list[bytes], key: str) -> tuple[list[Marks], list[float]]:
    """Redis Streams: XADD with ids 0-1, 0-2, ...; each subscriber an XREAD BLOCK loop on its own
    connection; an ``end`` entry after the last chunk."""
    sent = [math.nan] * len(toks)
    r = aioredis.Redis.from_url(url, max_connections=p.subs + 4)
    try:
        await r.delete(key)
        marks = [Marks([0] * len(toks)) for _ in range(p.subs)]
        ready = [asyncio.Event() for _ in range(p.subs)]

        async def sub(m: Marks, ev: asyncio.Event) -> None:
            last = "0-0"
            ev.set()
            while True:
                got = await r.xread({key: last}, block=5000, count=1000)
                now = time.perf_counter()
                for _, entries in got:
                    for eid, fields in entries:
                        if b"end" in fields:
                            return
                        m.upto(int(eid.split(b"-")[1]), now)
                        last = eid

        tasks = [asyncio.create_task(sub(m, ev)) for m, ev in zip(marks, ready, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 60)
        await asyncio.sleep(0.2)  # the XREADs are on the wire (they block server-side)
        async for i, t in paced(toks, p, sent, "live Redis XADD"):
            await r.xadd(key, {"c": t}, id=f"0-{i + 1}")
        await r.xadd(key, {"end": "1"}, id=f"0-{sent_count(sent) + 1}")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    finally:
        await r.aclose()
    return marks, sent


async def live_rs(base: str, p: Params, toks: list[bytes], sid: str) -> tuple[list[Marks], list[float]]:
    """resumable-stream: start, N followers (``resumeExistingStream``), then the chunks as one
    streaming request body."""
    sent = [math.nan] * len(toks)
    ends = chunk_ends(toks)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        async with s.post(f"{base}/start/{sid}") as r:
            if r.status != 200:
                raise RuntimeError(f"start: {r.status} {await r.text()}")
        marks = [Marks(ends) for _ in range(p.subs)]
        ready = [asyncio.Event() for _ in range(p.subs)]

        async def follow(m: Marks, ev: asyncio.Event) -> None:
            async with s.get(f"{base}/read/{sid}") as r:
                if r.status != 200:
                    raise RuntimeError(f"read: {r.status} {await r.text()}")
                ev.set()
                async for data in r.content.iter_any():
                    m.add_bytes(len(data), time.perf_counter())

        tasks = [asyncio.create_task(follow(m, ev)) for m, ev in zip(marks, ready, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in ready)), 60)

        async def body() -> Any:
            async for _, t in paced(toks, p, sent, "live resumable-stream"):
                yield t

        async with s.post(f"{base}/push/{sid}", data=body()) as r:
            if r.status != 200:
                raise RuntimeError(f"push: {r.status} {await r.text()}")
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return marks, sent


async def measure_live(
    name: str, run: Callable[[], Awaitable[tuple[list[Marks], list[float]]]], pids: Sequence[int]
) -> Live:
    c0 = cpu_seconds(pids)
    async with asyncio.timeout(180):
        marks, sent = await run()
    cpu = cpu_seconds(pids) - c0
    n = sent_count(sent)
    delivered = sum(min(m.n, n) for m in marks)
    if delivered != n * len(marks):
        raise RuntimeError(
            f"{name}: delivered {delivered} of {n * len(marks)} chunks ({[m.n for m in marks]})"
        )
    lat = latencies(marks, sent)
    span = max(max(m.at[:n]) for m in marks) - sent[0]
    return Live(lat, delivered / span, cpu / delivered * 1e6, n)


# --- finished answers: write, resume, bytes --------------------------------------------------------


@dataclass
class Answer:
    sid: str
    chunks: list[bytes]  # one append each
    offsets: list[str] = field(default_factory=list)  # the Durable Streams token before each chunk


def make_answers(n: int, prefix: str = "chat", seed: int = 7) -> list[Answer]:
    rng = random.Random(seed)
    out = []
    for i, toks in enumerate(footprint.answers(n, seed)):
        chunks = ["".join(g).encode() for g in footprint.groups(toks, rng)]
        out.append(Answer(f"{prefix}/{i // 8:05d}/a{i % 8}", chunks))
    return out


async def write_ds(base: str, answers: list[Answer], writers: int, label: str) -> list[list[str]]:
    """Each answer: PUT, one POST per chunk, a closing POST. Returns each answer's offset tokens."""
    offsets: list[list[str]] = [[] for _ in answers]
    with progress(label, len(answers)) as bar:
        done = 0

        async def writer(s: aiohttp.ClientSession, k: int) -> None:
            nonlocal done
            for j in range(k, len(answers), writers):
                a, url = answers[j], f"{base}/{answers[j].sid}"
                async with s.put(url, headers=TEXT) as r:
                    if r.status != 201:
                        raise RuntimeError(f"PUT {url}: {r.status} {await r.text()}")
                    offs = [r.headers["Stream-Next-Offset"]]
                for c in a.chunks:
                    async with s.post(url, data=c, headers=TEXT) as r:
                        if r.status not in (200, 204):
                            raise RuntimeError(f"POST {url}: {r.status} {await r.text()}")
                        offs.append(r.headers["Stream-Next-Offset"])
                async with s.post(url, headers={**TEXT, "Stream-Closed": "true"}) as r:
                    if r.status not in (200, 204):
                        raise RuntimeError(f"close {url}: {r.status}")
                offsets[j] = offs
                done += 1
                bar.update(done)

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            await asyncio.gather(*(writer(s, k) for k in range(writers)))
    return offsets


async def write_redis(r: aioredis.Redis, answers: list[Answer], writers: int, prefix: str) -> None:
    async def writer(k: int) -> None:
        for j in range(k, len(answers), writers):
            a = answers[j]
            for i, c in enumerate(a.chunks):
                await r.xadd(prefix + a.sid, {"c": c}, id=f"0-{i + 1}")
            await r.xadd(prefix + a.sid, {"end": "1"}, id=f"0-{len(a.chunks) + 1}")

    with progress("answers Redis XADD", len(answers)):
        await asyncio.gather(*(writer(k) for k in range(writers)))


def picks(answers: list[Answer], n: int) -> list[tuple[Answer, int]]:
    rng = random.Random(11)
    out = []
    for _ in range(n):
        a = answers[rng.randrange(len(answers))]
        out.append((a, rng.randrange(len(a.chunks))))
    return out


async def resume_ds(base: str, answers: list[Answer], offsets: list[list[str]], n: int) -> list[float]:
    index = {id(a): o for a, o in zip(answers, offsets, strict=True)}
    out = []
    async with aiohttp.ClientSession() as s:
        # the connection opened first, as the WebSocket and Redis clients' are: the first sample
        # would otherwise carry a TCP connect and be the p99 of 200 on its own. A stream that does
        # not exist reads no answer, so the server's caches stay as cold as its restart left them.
        async with s.get(f"{base}/bench-warm-up-not-a-stream", params={"offset": "-1"}) as r:
            await r.read()
        for a, k in picks(answers, n):
            url = f"{base}/{a.sid}"
            t0 = time.perf_counter()
            async with s.get(url, params={"offset": index[id(a)][k]}) as r:
                body = await r.read()
            out.append((time.perf_counter() - t0) * 1000)
            if r.status != 200 or body != b"".join(a.chunks[k:]):
                raise RuntimeError(f"{url} from {k}: {r.status}, {len(body)} bytes, wrong content")
    return out


async def resume_ws(hub: HubProcess, answers: list[Answer], n: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as s, s.ws_connect(hub.ws_url, max_msg_size=0) as ws:
        for a, k in picks(answers, n):
            t0 = time.perf_counter()
            await ws.send_str(_enc.encode({"op": "subscribe", "stream": a.sid, "from": k}).decode())
            got: list[str] = []
            while True:
                f = msgspec.json.decode((await ws.receive(timeout=30)).data)
                if f.get("stream") != a.sid:
                    continue
                if f["op"] == "chunks":
                    got += f["data"]
                elif f["op"] == "end":
                    break
                elif f["op"] == "error":
                    raise RuntimeError(f"{a.sid}@{k}: {f}")
            out.append((time.perf_counter() - t0) * 1000)
            if "".join(got).encode() != b"".join(a.chunks[k:]):
                raise RuntimeError(f"{a.sid} from {k}: wrong content over WebSocket")
    return out


async def resume_redis(r: aioredis.Redis, answers: list[Answer], n: int, prefix: str) -> list[float]:
    out = []
    for a, k in picks(answers, n):
        t0 = time.perf_counter()
        entries = await r.xrange(prefix + a.sid, min=f"0-{k + 1}", max="+")
        out.append((time.perf_counter() - t0) * 1000)
        if b"".join(f[b"c"] for _, f in entries[:-1]) != b"".join(a.chunks[k:]):
            raise RuntimeError(f"{a.sid} from {k}: wrong content from XRANGE")
    return out


async def wait_until(cond: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        await asyncio.sleep(0.25)


async def settled_memory(r: aioredis.Redis, after_s: float, timeout: float) -> int:
    """used_memory once it stopped moving (the hub's engine seals closed streams ``after_s`` after the
    close): the same value twice 0.5 s apart, after ``after_s``."""
    await asyncio.sleep(after_s)
    deadline = time.monotonic() + timeout
    prev = await used_memory(r)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        cur = await used_memory(r)
        if cur == prev:
            return cur
        prev = cur
    return prev


# --- appends/s -------------------------------------------------------------------------------------


async def appends_ws(ws_url: str, writers: int, secs: float, tag: str) -> float:
    """W WebSocket producers, each on its own connection and stream, one append in flight each."""
    count = 0
    start = asyncio.Event()
    clock = {"t0": 0.0, "end": 0.0}  # set once every writer is connected, its stream created

    async def writer(s: aiohttp.ClientSession, k: int, connected: asyncio.Event) -> None:
        nonlocal count
        sid = f"rate/{tag}/{k}"
        async with s.ws_connect(ws_url) as ws:
            await ws.send_str(_enc.encode({"op": "create", "stream": sid, "id": -1}).decode())
            while msgspec.json.decode((await ws.receive(timeout=30)).data).get("op") != "ack":
                pass
            connected.set()
            await start.wait()
            i = 0
            frame: dict[str, Any] = {"op": "append", "stream": sid, "data": CHUNK.decode(), "id": 0}
            while time.perf_counter() < clock["end"] and i < 1_000_000:
                frame["id"] = i
                await ws.send_str(_enc.encode(frame).decode())
                f = msgspec.json.decode((await ws.receive(timeout=30)).data)
                if f.get("op") != "ack":
                    raise RuntimeError(f"{sid}: {f}")
                i += 1
            count += i

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        connected = [asyncio.Event() for _ in range(writers)]
        tasks = [asyncio.create_task(writer(s, k, ev)) for k, ev in enumerate(connected)]
        await asyncio.wait_for(asyncio.gather(*(ev.wait() for ev in connected)), 60)
        clock["t0"] = time.perf_counter()
        clock["end"] = clock["t0"] + secs
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), secs + 60)
    return count / (time.perf_counter() - clock["t0"])


async def appends_ds(base: str, writers: int, secs: float, tag: str) -> float:
    count = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        urls = [f"{base}/rate/{tag}/{k}" for k in range(writers)]
        for u in urls:
            async with s.put(u, headers=TEXT) as r:
                if r.status not in (200, 201):
                    raise RuntimeError(f"PUT {u}: {r.status}")
        t0 = time.perf_counter()
        end = t0 + secs

        async def writer(u: str) -> None:
            nonlocal count
            i = 0
            while time.perf_counter() < end and i < 1_000_000:
                async with s.post(u, data=CHUNK, headers=TEXT) as r:
                    if r.status not in (200, 204):
                        raise RuntimeError(f"POST {u}: {r.status}")
                i += 1
            count += i

        await asyncio.wait_for(asyncio.gather(*(writer(u) for u in urls)), secs + 60)
    return count / (time.perf_counter() - t0)


async def appends_xadd(r: aioredis.Redis, writers: int, secs: float, tag: str) -> float:
    count = 0
    await r.ping()
    t0 = time.perf_counter()
    end = t0 + secs

    async def writer(k: int) -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < end and i < 1_000_000:
            await r.xadd(f"rate:{tag}:{k}", {"c": CHUNK})
            i += 1
        count += i

    await asyncio.wait_for(asyncio.gather(*(writer(k) for k in range(writers))), secs + 60)
    return count / (time.perf_counter() - t0)


# --- the run ---------------------------------------------------------------------------------------

WS, DSP = "WebSocket", "Durable Streams"
L_HUB_F_WS, L_HUB_F_DS = f"{HUB_F}, {WS}", f"{HUB_F}, {DSP}"
L_HUB_R_WS, L_HUB_R_DS = f"{HUB_R}, {WS}", f"{HUB_R}, {DSP}"
L_REDIS, L_DS, L_RS = f"{REDIS}, XADD/XREAD", f"{DS_REF}, {DSP}", f"{RS}, HTTP + pub/sub"
R_REDIS = f"{REDIS}, XRANGE"


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


async def stopped_bytes(proc: ServerProcess, root: Path) -> int:
    """Allocated bytes of ``root`` with the server stopped (its WAL/metadata flushed), then restarted."""
    await proc.stop()
    n = disk_bytes(root)
    await proc.start()
    return n


async def run(mode: str, keep: bool = False) -> Results:
    p = MODES[mode]
    ensure_node_modules()
    res = Results(p, after_settings=AFTER_SETTINGS)
    toks = llm_tokens(p.tokens)
    answers = make_answers(p.answers)
    res.raw_per_answer = sum(len(c) for a in answers for c in a.chunks) / len(answers)
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    note(f"bench.peers {mode}: data in {tmp}, load average {loadavg()}")
    try:
        with RedisServer(tmp / "redis", appendfsync="always") as srv:
            assert srv.proc is not None
            rpid = srv.proc.pid
            r = aioredis.Redis.from_url(srv.url, max_connections=max(p.writers, p.subs) + 8)
            # archive_delay 1 s instead of 10 s: the run need not wait; the archived layout is the same
            hub_f = HubProcess(tmp / "hub-file", env={"RHUB_ARCHIVE_DELAY_S": "1"}, log=tmp / "hub-file.log")
            hub_r = HubProcess(tmp / "hub-redis", args=["--store", srv.url], log=tmp / "hub-redis.log")
            ds = node_peer("ds", str(tmp / "ds-ref"), tmp / "ds-ref.log")
            rs = node_peer("rs", srv.url, tmp / "rs.log")
            procs: list[ServerProcess] = [hub_f, hub_r, ds, rs]
            try:
                for proc in procs:
                    await proc.start()
                await finished_answers(res, answers, hub_f, hub_r, ds, r, tmp)
                note(f"live: {p.subs} subscribers, {p.tokens} chunks at {p.rate:g}/s, each peer in turn")
                hub_ds, hub_r_ds = f"{hub_f.url}/v1/stream", f"{hub_r.url}/v1/stream"
                runs: list[
                    tuple[str, Callable[[], Awaitable[tuple[list[Marks], list[float]]]], list[int]]
                ] = [
                    (L_HUB_F_WS, lambda: live_ws(hub_f, p, toks, "live/ws"), [hub_f.pid]),
                    (L_HUB_F_DS, lambda: live_ds(f"{hub_ds}/live/ds", p, toks, hub_count), [hub_f.pid]),
                    (L_HUB_R_WS, lambda: live_ws(hub_r, p, toks, "live/ws"), [hub_r.pid, rpid]),
                    (
                        L_HUB_R_DS,
                        lambda: live_ds(f"{hub_r_ds}/live/ds", p, toks, hub_count),
                        [hub_r.pid, rpid],
                    ),
                    (L_REDIS, lambda: live_redis(srv.url, p, toks, "peer:live"), [rpid]),
                    (L_DS, lambda: live_ds(f"{ds.url}/live/ds", p, toks, ds_ref_counter(toks)), [ds.pid]),
                    (L_RS, lambda: live_rs(rs.url, p, toks, "live-rs"), [rs.pid, rpid]),
                ]
                for name, fn, pids in runs:
                    res.live[name] = await measure_live(name, fn, pids)
                await appends(res, hub_f, hub_r, ds, r, rpid, tmp)
            finally:
                await r.aclose()
                for proc in procs:
                    await proc.stop()
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return res


async def finished_answers(
    res: Results,
    answers: list[Answer],
    hub_f: HubProcess,
    hub_r: HubProcess,
    ds: ServerProcess,
    r: aioredis.Redis,
    tmp: Path,
) -> None:
    p = res.params
    n = len(answers)
    note(f"finished answers: {n} short answers ({res.raw_per_answer:,.0f} B of text each on average)")
    # written first and not counted: script caches, client buffers, database pages that any first
    # answer pays for (as bench.cluster does)
    warm = make_answers(p.warm_up, "warm", seed=8)
    async with asyncio.timeout(600):
        # hub on files: written over Durable Streams, archived, then the data dir with the hub stopped
        await write_ds(f"{hub_f.url}/v1/stream", warm, p.writers, "warm-up hub (file)")
        await write_ds(ds.url, warm, p.writers, "warm-up DS reference")
        await write_ds(f"{hub_r.url}/v1/stream", warm, p.writers, "warm-up hub (Redis)")
        await write_redis(r, warm, p.writers, "peer:")
        streams = hub_f.data_dir / "streams"

        async def archived() -> bool:
            try:
                return not any(q.is_file() for q in streams.rglob("*"))
            except FileNotFoundError:  # a directory went while the walk was in it: not done yet
                return False

        await wait_until(archived, 120, "the warm-up answers in the archive")
        before = await stopped_bytes(hub_f, hub_f.data_dir)
        offs_f = await write_ds(f"{hub_f.url}/v1/stream", answers, p.writers, "answers hub (file)")
        await wait_until(archived, 120, "every answer in the archive")
        after = await stopped_bytes(hub_f, hub_f.data_dir)
        res.bytes_per_answer[HUB_F] = ((after - before) / n, "allocated, data dir (archived answers)")

        before = await stopped_bytes(ds, tmp / "ds-ref")
        offs_ds = await write_ds(ds.url, answers, p.writers, "answers DS reference")
        after = await stopped_bytes(ds, tmp / "ds-ref")
        res.bytes_per_answer[DS_REF] = ((after - before) / n, "allocated, data dir (segments + LMDB)")

        before = await settled_memory(r, 2.5, 30)  # the warm-up answers sealed
        offs_r = await write_ds(f"{hub_r.url}/v1/stream", answers, p.writers, "answers hub (Redis)")
        after = await settled_memory(r, 2.5, 30)  # the engine seals a closed stream 2 s after its close
        res.bytes_per_answer[HUB_R] = ((after - before) / n, "Redis used_memory (sealed answers)")

        before = await used_memory(r)
        await write_redis(r, answers, p.writers, "peer:")
        after = await settled_memory(r, 0.0, 30)
        res.bytes_per_answer[REDIS] = ((after - before) / n, "Redis used_memory (one entry per append)")
        res.bytes_per_answer[RS] = "n/a (a finished answer is not kept: only a DONE sentinel key, 24 h)"

        note(f"resume: {p.resumes} random offsets of random finished answers, per peer")
        res.resume[L_HUB_F_WS] = await resume_ws(hub_f, answers, p.resumes)
        res.resume[L_HUB_F_DS] = await resume_ds(f"{hub_f.url}/v1/stream", answers, offs_f, p.resumes)
        res.resume[L_HUB_R_WS] = await resume_ws(hub_r, answers, p.resumes)
        res.resume[L_HUB_R_DS] = await resume_ds(f"{hub_r.url}/v1/stream", answers, offs_r, p.resumes)
        res.resume[R_REDIS] = await resume_redis(r, answers, p.resumes, "peer:")
        res.resume[L_DS] = await resume_ds(ds.url, answers, offs_ds, p.resumes)
        res.resume[L_RS] = "n/a (resumeExistingStream answers null once the stream is DONE)"


async def appends(
    res: Results,
    hub_f: HubProcess,
    hub_r: HubProcess,
    ds: ServerProcess,
    r: aioredis.Redis,
    rpid: int,
    tmp: Path,
) -> None:
    """Every setting in turn, ``APPEND_ROUNDS`` times over, the best round of each kept: the machine is
    shared, and interleaving puts every setting through the same spells of disk contention."""
    p = res.params
    rounds = APPEND_ROUNDS[p.mode]
    secs = p.append_s / rounds
    note(
        f"appends: {p.writers} writers, one append of {len(CHUNK)} B in flight each, {rounds} rounds of"
        f" {secs:.2g} s per setting, interleaved"
    )
    h_always = HubProcess(tmp / "hub-always", fsync="always", log=tmp / "hub-always.log")
    h_never = HubProcess(tmp / "hub-never", fsync="never", log=tmp / "hub-never.log")

    def ws(h: HubProcess) -> Callable[[str], Awaitable[float]]:
        return lambda tag: appends_ws(h.ws_url, p.writers, secs, tag)

    def xadd(tag: str) -> Awaitable[float]:
        return appends_xadd(r, p.writers, secs, tag)

    # (peer, setting, Redis appendfsync to set, the run, the server processes whose CPU it costs)
    settings: list[
        tuple[str, str, str | None, Callable[[str], Awaitable[float]], Callable[[], list[int]]]
    ] = [
        (HUB_F, "--fsync always", None, ws(h_always), lambda: [h_always.pid]),
        (REDIS, "appendfsync always", "always", xadd, lambda: [rpid]),
        (HUB_F, "--fsync interval", None, ws(hub_f), lambda: [hub_f.pid]),
        (HUB_R, "appendfsync always", "always", ws(hub_r), lambda: [hub_r.pid, rpid]),
        (
            DS_REF,
            "fdatasync per append",
            None,
            lambda tag: appends_ds(ds.url, p.writers, secs, tag),
            lambda: [ds.pid],
        ),
        (HUB_F, "--fsync never", None, ws(h_never), lambda: [h_never.pid]),
        (REDIS, "appendfsync everysec", "everysec", xadd, lambda: [rpid]),
        (HUB_R, "appendfsync everysec", "everysec", ws(hub_r), lambda: [hub_r.pid, rpid]),
    ]
    best: dict[tuple[str, str], float] = {}
    async with asyncio.timeout(60 + 4 * p.append_s * len(settings)), h_always, h_never:
        try:
            with progress("append rounds", rounds * len(settings)) as bar:
                for rnd in range(rounds):
                    for i, (peer, setting, aof, fn, pids) in enumerate(settings):
                        if aof is not None:
                            await r.config_set("appendfsync", aof)
                        t0, cpu0 = time.perf_counter(), cpu_seconds(pids())
                        rate = await fn(f"{setting.split()[-1]}-{rnd}")
                        cpu = cpu_seconds(pids()) - cpu0
                        if rate > best.get((peer, setting), 0.0):
                            best[peer, setting] = rate
                            res.append_cpu[peer, setting] = cpu / (rate * (time.perf_counter() - t0)) * 1e6
                        bar.update(rnd * len(settings) + i + 1)
        finally:
            await r.config_set("appendfsync", "always")
    for peer in (HUB_F, HUB_R, REDIS, DS_REF):
        res.appends[peer] = {s: best[peer, s] for pr, s, _, _, _ in settings if pr == peer}
    res.appends[DS_REF]["-"] = "n/a (no setting: every append is fdatasynced)"
    res.appends[RS] = {AFTER: "n/a (nothing is durable, no ack)", BEFORE: "n/a (no ack)"}


# --- output ----------------------------------------------------------------------------------------


def report(res: Results, mode: str, load0: str, secs: float) -> str:
    p = res.params
    out = []
    rows: list[list[object]] = []
    na: list[str] = []
    for name, v in res.live.items():
        if isinstance(v, str):
            rows.append([name, "n/a", "n/a", "n/a", "n/a", "n/a"])
            na.append(f"{name}: {v}")
        else:
            rows.append(
                [name, f"{v.chunks}/{p.tokens}", f"{pct(v.lat_ms, 50):.2f}", f"{pct(v.lat_ms, 99):.2f}",
                 f"{v.delivered_per_s:,.0f}", f"{v.cpu_us_per_chunk:.1f}"]
            )  # fmt: skip
    out.append(
        table(
            f"bench.peers --{mode}: live, {p.subs} subscribers, {p.tokens} chunks at {p.rate:g}/s"
            f" ({git_revision('bench', 'hub', 'storage')})",
            ["peer, protocol", "chunks sent", "p50 ms", "p99 ms", "delivered/s", "server CPU us/chunk"],
            rows,
            [
                "latency: the producer's send of a chunk -> a subscriber holding it, every (subscriber, chunk);"
                f" a producer slower than the rate stops after {p.live_max_s:g} s (chunks sent < {p.tokens})",
                "Durable Streams: one POST per chunk (awaited), SSE readers; WebSocket: pipelined appends",
                "resumable-stream: one streaming request body; followers via resumeExistingStream (pub/sub);"
                " the stream's own first reader is drained inside the harness",
                "server CPU: utime+stime of the hub / redis-server / node processes of the peer",
                *na,
            ],
        )
    )
    rows, na = [], []
    for name, v in res.resume.items():
        if isinstance(v, str):
            rows.append([name, "n/a", "n/a", "-"])
            na.append(f"{name}: {v}")
        else:
            rows.append([name, f"{pct(v, 50):.2f}", f"{pct(v, 99):.2f}", len(v)])
    out.append(
        table(
            f"resume: the rest of a finished answer from a random offset ({p.answers} answers)",
            ["peer, protocol", "p50 ms", "p99 ms", "samples"],
            rows,
            [
                "request -> last byte, one at a time on an open connection; the hub (file) and the DS"
                " reference restarted first; every answer read is checked against what was written",
                *na,
            ],
        )
    )
    rows, na = [], []
    for peer, settings in res.appends.items():
        for setting, v in settings.items():
            acks = AFTER if setting in AFTER_SETTINGS else BEFORE
            if isinstance(v, str):
                rows.append([peer, setting if setting not in (AFTER, BEFORE) else "-", acks, "n/a", "-"])
                na.append(f"{peer}, {acks}: {v}")
            else:
                cpu = res.append_cpu.get((peer, setting))
                rows.append([peer, setting, acks, f"{v:,.0f}", "-" if cpu is None else f"{cpu:.1f}"])
    out.append(
        table(
            f"appends/s: {p.writers} writers, one {len(CHUNK)} B append in flight each, best of"
            f" {APPEND_ROUNDS[p.mode]} interleaved rounds of {p.append_s / APPEND_ROUNDS[p.mode]:.2g} s",
            ["peer", "setting", "acknowledged", "appends/s", "server CPU us/append"],
            rows,
            [
                "server CPU: utime+stime of the peer's processes (hub, redis-server, node) in the best round"
                " (the writers are one Python process on the other core)",
                *na,
                *(f"{k}: {v}" for k, v in ACK.items()),
            ],
        )
    )
    rows, na = [], []
    for peer, b in res.bytes_per_answer.items():
        if isinstance(b, str):
            rows.append([peer, "-", "n/a", "n/a"])
            na.append(f"{peer}: {b}")
        else:
            rows.append([peer, b[1], f"{b[0]:,.0f}", f"{b[0] / res.raw_per_answer:.2f}"])
    out.append(
        table(
            f"bytes per finished short answer ({p.answers} answers, {res.raw_per_answer:,.0f} B of text each)",
            ["peer", "what is counted", "bytes/answer", "x text"],
            rows,
            [
                "file stores: st_blocks of the data dir, server stopped, after - before;"
                " Redis: used_memory after - before (MEMORY PURGE)",
                *na,
            ],
        )
    )
    out.append(f"\n  load average {load0} at the start, {loadavg()} at the end; {secs:.0f} s\n")
    return "\n".join(out)


def keys(res: Results) -> dict[str, float]:
    def p99(x: Live | list[float] | str) -> float:
        if isinstance(x, str):
            raise RuntimeError(x)
        return pct(x.lat_ms if isinstance(x, Live) else x, 99)

    def num(x: float | str) -> float:
        if isinstance(x, str):
            raise RuntimeError(x)
        return x

    b = res.bytes_per_answer
    return {
        "e2e_p99_vs_ds_ref": p99(res.live[L_HUB_F_DS]) / p99(res.live[L_DS]),
        "resume_p99_vs_ds_ref": p99(res.resume[L_HUB_F_DS]) / p99(res.resume[L_DS]),
        "resume_p99_vs_redis": p99(res.resume[L_HUB_F_WS]) / p99(res.resume[R_REDIS]),
        "append_vs_redis_always": num(res.appends[HUB_F]["--fsync always"])
        / num(res.appends[REDIS]["appendfsync always"]),
        "append_vs_redis_everysec": num(res.appends[HUB_F]["--fsync never"])
        / num(res.appends[REDIS]["appendfsync everysec"]),
        "bytes_per_answer_vs_ds_ref": num(b[HUB_F][0] if not isinstance(b[HUB_F], str) else b[HUB_F])
        / num(b[DS_REF][0] if not isinstance(b[DS_REF], str) else b[DS_REF]),
        "e2e_p99_vs_resumable_stream": p99(res.live[L_HUB_F_DS]) / p99(res.live[L_RS]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="about a minute and a half")
    g.add_argument("--smoke", action="store_true", help="about 30 s: the test suite's run")
    ap.add_argument(
        "--plots", type=Path, default=None, help="write PNG plots here (bench/plots for the committed ones)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the data dirs and the servers' logs")
    args = ap.parse_args(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    load0, t0 = loadavg(), time.perf_counter()
    res = asyncio.run(run(mode, args.keep))
    print(report(res, mode, load0, time.perf_counter() - t0))
    if args.plots is not None:
        from . import peers_plot

        for path in peers_plot.write(res, args.plots, f"bench.peers --{mode}, load average {load0}"):
            note(f"wrote {path}")
    for k, v in keys(res).items():
        print(f"{k}: {v:.3f}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
