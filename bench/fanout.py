"""Fan-out benchmark: the hub against a bare aiohttp broadcast server, 1,000 WebSocket subscribers.

    python -m bench.fanout            # full run (about 3-4 minutes)
    python -m bench.fanout --quick    # under a minute on 2 cores

Every party is its own process on 127.0.0.1: the servers under test (``python -m hub serve --fsync
interval`` with its default heartbeat, and the baseline ``python -m bench.fanout_bare``: same
aiohttp, same frames, no storage), one subscriber process per server holding its 1,000
connections (a lean asyncio client that parses RFC 6455 frames itself, no task per connection),
and this process, which is the producer and the conductor. Each chunk starts with the producer's
``time.monotonic_ns()`` (CLOCK_MONOTONIC is system-wide on Linux, so every process reads the same
clock); latency is receipt minus that stamp.

Both servers and both subscriber sets stay up for the whole live phase and the measured windows
alternate between them (bare, hub, hub, bare, ...), so load from other tenants of the machine
falls on both alike; the windows of each server are pooled. Then the hub builds, closes and seals
a 1,000,000-chunk stream and serves subscribes at random offsets of it.

Prints a human table on stdout, progress on stderr, and ends with three machine-readable lines::

    fanout_vs_bare: <hub / bare delivered chunks/s, same paced offered load, 1,000 subscribers>
    fanout_p99_ms: <hub p99 latency, producer send -> subscriber receipt, at that load>
    resume_first_chunk_ms: <p99 of subscribe -> first chunks frame, random offsets, sealed 1M-chunk stream>

``--py-spy DIR`` samples the server of every window into DIR (collapsed stacks, idle dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench.common import (
    HOST,
    ROOT,
    HubProcess,
    ServerProcess,
    die_with_parent,
    free_port,
    git_revision,
    note,
    pct,
    table,
)

STAMP = 20  # digits of the send stamp at the start of every chunk text


# --- small helpers -------------------------------------------------------------------------------


def nan_pct(xs: Sequence[float], p: float) -> float:
    """``common.pct``, or NaN for a window where nothing arrived (the report prints it as nan)."""
    return pct(xs, p) if xs else float("nan")


def ms(ns: float) -> str:
    return f"{ns / 1e6:.2f}"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time all cores spent not idle (user, system, irq, softirq, steal), from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Mode:
    name: str
    subscribers: int
    rate: float  # offered appends/s (one chunk each) of the headline comparison
    rounds: int  # paced windows per server, alternating bare/hub so drifting background load hits both
    warm_s: float
    window_s: float
    overload: float  # capacity run: offered rate = overload x rate
    overload_rounds: int
    overload_s: float
    drain_timeout_s: float  # after a window, wait at most this long for the backlog to arrive
    big_chunks: int
    resume_n: int
    resume_fresh_n: int
    resume_budget_s: float  # the resume loops stop early past this (the run must stay bounded)
    seal_timeout_s: float
    profile_dir: Path | None = None  # --py-spy: sample the server during each window
    hub_fsync: str = "interval"  # the hub's durability policy (the headline uses the default)


QUICK = Mode("quick", subscribers=1000, rate=20, rounds=2, warm_s=0.5, window_s=3.0, overload=10,
             overload_rounds=1, overload_s=1.5, drain_timeout_s=10, big_chunks=1_000_000,
             resume_n=150, resume_fresh_n=20, resume_budget_s=10, seal_timeout_s=20)  # fmt: skip
FULL = Mode("full", subscribers=1000, rate=20, rounds=5, warm_s=1.0, window_s=6.0, overload=10,
            overload_rounds=2, overload_s=4.0, drain_timeout_s=30, big_chunks=1_000_000,
            resume_n=1000, resume_fresh_n=200, resume_budget_s=120, seal_timeout_s=120)  # fmt: skip

CHUNK_BYTES = 40  # 20-digit stamp, '|', padding: a short token-sized chunk plus the stamp


# --- the subscriber child: 1,000 connections, raw RFC 6455 framing, no per-connection task ---------


class Frame(msgspec.Struct):
    op: str
    offset: int = 0
    data: list[str] = []


_frame = msgspec.json.Decoder(Frame)


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame. Masked with the all-zero key: valid per RFC 6455, and XOR with it is free."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Recorder:
    """Every chunk receipt of the child: send stamp and receipt time, both monotonic ns."""

    def __init__(self) -> None:
        self.sent = array("q")
        self.recv = array("q")
        self.subscribed = 0
        self.anomalies = 0  # frames that did not start at the connection's next offset
        self.frames = 0
        self.lost_conns = 0
        self.errors: list[str] = []

    def reset(self) -> None:
        self.sent = array("q")
        self.recv = array("q")
        self.frames = 0


class Subscriber(asyncio.Protocol):
    """One subscriber connection: handshake, one subscribe, then count chunks frames."""

    def __init__(self, rec: Recorder, request: bytes, subscribe: bytes) -> None:
        self.rec = rec
        self.request = request
        self.subscribe = subscribe
        self.buf = bytearray()
        self.open = False
        self.next = -1
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.tr = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.rec.lost_conns += 1

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()  # one clock read per socket read: its frames arrived together
        buf = self.buf
        buf += data
        pos = 0
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.rec.errors.append(bytes(buf[:200]).decode("latin-1"))
                assert self.tr is not None
                self.tr.close()
                return
            self.open = True
            pos = end + 4
            assert self.tr is not None
            self.tr.write(self.subscribe)
        n = len(buf)
        while n - pos >= 2:
            op, size, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if size == 126:
                if n - pos < 4:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                if n - pos < 10:
                    break
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + head + size
            if end > n:
                break
            payload = bytes(buf[pos + head : end])
            pos = end
            if op == 1:
                self.on_text(payload, now)
            elif op == 9 and self.tr is not None:
                self.tr.write(ws_frame(payload, 0xA))  # pong the hub's heartbeat
            elif op == 8 and self.tr is not None:
                self.tr.write(ws_frame(payload[:2], 0x8))
                self.tr.close()
        del buf[:pos]

    def on_text(self, payload: bytes, now: int) -> None:
        f = _frame.decode(payload)
        rec = self.rec
        if f.op == "chunks":
            if f.offset != self.next:
                rec.anomalies += 1
            self.next = f.offset + len(f.data)
            rec.frames += 1
            sent, recv = rec.sent, rec.recv
            for d in f.data:
                sent.append(int(d[:STAMP]))
                recv.append(now)
        elif f.op == "subscribed":
            self.next = f.offset
            rec.subscribed += 1
        elif f.op == "error":
            rec.errors.append(payload.decode()[:200])


async def child_connect(rec: Recorder, port: int, n: int, stream: str, timeout: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t = time.perf_counter()
    deadline = t + timeout
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    subscribe = ws_frame(json.dumps({"op": "subscribe", "stream": stream, "from": 0}).encode())
    transports: list[asyncio.BaseTransport] = []
    want = rec.subscribed + n
    for i in range(0, n, 50):  # batches stay under the listen backlog (128)
        batch = [
            loop.create_connection(lambda: Subscriber(rec, request, subscribe), HOST, port)
            for _ in range(min(50, n - i))
        ]
        for tr, _ in await asyncio.wait_for(asyncio.gather(*batch), max(0.1, deadline - time.perf_counter())):
            transports.append(tr)
    while rec.subscribed < want and time.perf_counter() < deadline and not rec.errors:
        await asyncio.sleep(0.01)
    CHILD_TRANSPORTS.extend(transports)
    return {
        "connected": len(transports),
        "subscribed": rec.subscribed,
        "secs": time.perf_counter() - t,
        "errors": rec.errors[:3],
    }


CHILD_TRANSPORTS: list[asyncio.BaseTransport] = []


def child_stats(rec: Recorder, windows: list[tuple[int, int]]) -> dict[str, Any]:
    """Throughput counts receipts inside the windows; latency covers the chunks *sent* inside them.

    Per append (one send stamp), the first and the last subscriber's latency split the total into
    the path to the first subscriber (producer -> server -> durable -> first socket) and the spread
    of the fan-out over 1,000 sockets (server and subscriber process work one socket at a time)."""
    recv, sent = rec.recv, rec.sent
    in_window = sum(sum(1 for r in recv if t0 <= r < t1) for t0, t1 in windows)
    lat: list[int] = []
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t0, t1 in windows:
        for s, r in zip(sent, recv, strict=True):
            if t0 <= s < t1:
                d = r - s
                lat.append(d)
                if d < first.get(s, 1 << 62):
                    first[s] = d
                if d > last.get(s, -1):
                    last[s] = d
    firsts, lasts = list(first.values()), list(last.values())
    return {
        "received_in_window": in_window,
        "delivered_of_window": len(lat),
        "p50": nan_pct(lat, 50),
        "p90": nan_pct(lat, 90),
        "p99": nan_pct(lat, 99),
        "max": max(lat, default=float("nan")),
        "first_p50": nan_pct(firsts, 50),
        "last_p50": nan_pct(lasts, 50),
        "last_p99": nan_pct(lasts, 99),
        "frames": rec.frames,
        "chunks": len(recv),
        "anomalies": rec.anomalies,
        "lost_conns": rec.lost_conns,
        "errors": rec.errors[:3],
    }


async def child_main() -> None:
    """Commands come as JSON lines on stdin; each gets one JSON line on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    rec = Recorder()
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            reply: dict[str, Any] = {"ok": True}
            if cmd["cmd"] == "connect":
                reply = await child_connect(rec, cmd["port"], cmd["n"], cmd["stream"], cmd["timeout"])
            elif cmd["cmd"] == "stats":
                reply = child_stats(rec, [tuple(w) for w in cmd["windows"]])
            elif cmd["cmd"] == "count":
                reply = {"chunks": len(rec.recv)}
            elif cmd["cmd"] == "reset":
                rec.reset()
            elif cmd["cmd"] == "quit":
                break
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        for tr in CHILD_TRANSPORTS:
            tr.close()


# --- the conductor: processes, producer, phases --------------------------------------------------


class Procs:
    """Every child process this run starts; ``stop_all`` ends each one, by its own handle."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[asyncio.subprocess.Process] = []
        self.servers: list[ServerProcess] = []

    async def start_server(self, srv: ServerProcess) -> ServerProcess:
        self.servers.append(srv)
        await srv.start()
        return srv

    async def spawn(
        self, name: str, *args: str, pipes: bool = False, program: str = sys.executable
    ) -> asyncio.subprocess.Process:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        try:
            proc = await asyncio.create_subprocess_exec(
                program,
                *args,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else log,
                stderr=log,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
                limit=1 << 20,
            )
        finally:
            log.close()
        self.procs.append(proc)
        return proc

    async def stop(self, proc: asyncio.subprocess.Process, grace: float = 5.0, exiting: float = 0) -> None:
        """SIGTERM, then SIGKILL after ``grace``; ``exiting``: first give a child that was told to
        quit that long to exit by itself (signalling one that is exiting races with its reaping)."""
        if exiting and proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), exiting)
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), 5)
        if proc in self.procs:
            self.procs.remove(proc)

    async def stop_all(self) -> None:
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.stop(grace=3.0)
        for proc in list(self.procs):
            with contextlib.suppress(Exception):
                await self.stop(proc, grace=3.0)
        for proc in self.procs:  # last resort: never leave a child behind
            with contextlib.suppress(ProcessLookupError):
                proc.kill()


@dataclass
class Server:
    kind: str  # "hub" | "bare"
    proc: ServerProcess  # a HubProcess for the hub

    @property
    def port(self) -> int:
        return self.proc.port

    @property
    def url(self) -> str:
        return self.proc.url

    @property
    def data_dir(self) -> Path | None:
        return self.proc.data_dir if isinstance(self.proc, HubProcess) else None

    @property
    def admin_token(self) -> str:
        return self.proc.admin_token if isinstance(self.proc, HubProcess) else ""


async def start_server(procs: Procs, kind: str, tmp: Path, mode: Mode) -> Server:
    log = tmp / f"{kind}.log"
    if kind == "hub":
        data = Path(tempfile.mkdtemp(prefix="hub-", dir=tmp))
        return Server(kind, await procs.start_server(HubProcess(data, fsync=mode.hub_fsync, log=log)))
    port = free_port()
    argv = [sys.executable, "-m", "bench.fanout_bare", "--host", HOST, "--port", str(port)]
    return Server(kind, await procs.start_server(ServerProcess(argv, port, log=log, start_timeout=20)))


class Child:
    """The subscriber process, driven by JSON lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def call(self, wait: float, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), wait)
        if not line:
            raise RuntimeError("the subscriber process exited; see its log in the scratch dir")
        out: dict[str, Any] = json.loads(line)
        return out


class Producer:
    """One WebSocket producer: paced single-chunk appends with send stamps, acks timed."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream: str) -> None:
        self.ws = ws
        self.stream = stream
        self.acks = 0
        self.acked: list[tuple[int, int]] = []  # (send stamp, ack latency), monotonic ns
        self.sent_at: dict[int, int] = {}
        self.errors: list[str] = []
        self.waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())
        self.next_id = 1
        self.seq = 0

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            f = json.loads(msg.data)
            if f.get("op") == "ack":
                self.acks += 1
                t = self.sent_at.pop(f["id"], None)
                if t is not None:
                    self.acked.append((t, time.monotonic_ns() - t))
                w = self.waiters.pop(f["id"], None)
                if w is not None and not w.done():
                    w.set_result(f)
            elif f.get("op") == "error":
                self.errors.append(msg.data[:200])

    async def request(self, frame: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        i = frame["id"] = -self.next_id  # negative ids: control requests, not timed appends
        self.next_id += 1
        fut = self.waiters[i] = asyncio.get_running_loop().create_future()
        await self.ws.send_str(json.dumps(frame))
        return await asyncio.wait_for(fut, timeout)

    async def run(self, rate: float, secs: float, t_win: tuple[int, int]) -> int:
        """Send ``rate x secs`` appends on schedule (late sends go at once, so the offered load
        holds). Returns how many appends were stamped inside the window ``t_win``."""
        n = round(rate * secs)
        t0 = time.monotonic()
        pad = "x" * (CHUNK_BYTES - STAMP - 1)
        head = f'{{"op":"append","stream":"{self.stream}","data":"'
        in_window = 0
        deadline = t0 + secs * 3 + 5
        for i in range(n):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.monotonic() > deadline:
                note(f"  producer: over its time bound after {i} of {n} appends")
                break
            stamp = time.monotonic_ns()
            in_window += t_win[0] <= stamp < t_win[1]
            self.seq += 1
            self.sent_at[self.seq] = stamp
            await self.ws.send_str(f'{head}{stamp:0{STAMP}d}|{pad}","id":{self.seq}}}')
        return in_window

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


@dataclass
class Side:
    """One server under test with its own subscriber process and producer connection."""

    kind: str
    srv: Server
    child_proc: asyncio.subprocess.Process
    child: Child
    prod: Producer
    base: int = 0  # producer appends sent before the subscriber process last reset its counts


async def open_side(procs: Procs, session: aiohttp.ClientSession, kind: str, mode: Mode, tmp: Path) -> Side:
    srv = await start_server(procs, kind, tmp, mode)
    child_proc = await procs.spawn(f"subscribers-{kind}", "-m", "bench.fanout", "--child", pipes=True)
    child = Child(child_proc)
    stream = "fanout"
    prod = Producer(await session.ws_connect(f"{srv.url}/ws", max_msg_size=1 << 24), stream)
    side = Side(kind, srv, child_proc, child, prod)
    await prod.request({"op": "create", "stream": stream})
    note(f"{kind}: connecting {mode.subscribers} subscribers")
    c = await child.call(60, cmd="connect", port=srv.port, n=mode.subscribers, stream=stream, timeout=45)
    if c["subscribed"] < mode.subscribers:
        raise RuntimeError(f"{kind}: only {c['subscribed']} of {mode.subscribers} subscribed: {c}")
    note(f"  {c['connected']} connected and subscribed in {c['secs']:.2f} s")
    return side


async def close_side(procs: Procs, side: Side) -> None:
    """Stops the subscriber process; the server keeps running (the hub serves the resume phase)."""
    with contextlib.suppress(Exception):
        await side.prod.close()
    quit_sent = False
    with contextlib.suppress(Exception):
        assert side.child_proc.stdin is not None
        side.child_proc.stdin.write(b'{"cmd": "quit"}\n')
        await side.child_proc.stdin.drain()
        quit_sent = True
    await procs.stop(side.child_proc, exiting=5 if quit_sent else 0)


@dataclass
class Window:
    t0: int
    t1: int
    secs: float
    appends: int  # appends stamped inside the window
    cpu: list[float]  # server, subscribers, producer, whole machine: CPU seconds in the window
    admin: dict[str, int]


async def run_window(
    procs: Procs, session: aiohttp.ClientSession, side: Side, mode: Mode, label: str, rate: float, secs: float
) -> Window:
    """Warm-up, then a measured window, then wait until the subscribers stop receiving."""
    now = time.monotonic_ns()
    t_win = (now + int(mode.warm_s * 1e9), now + int((mode.warm_s + secs) * 1e9))
    before = await admin_stats(session, side.srv)
    sender = asyncio.create_task(side.prod.run(rate, mode.warm_s + secs, t_win))
    try:
        await asyncio.sleep(max(0, (t_win[0] - time.monotonic_ns()) / 1e9))
        cpu0 = cpu_sample(side.srv, side.child_proc)
        if mode.profile_dir is not None:
            out = mode.profile_dir / f"{side.kind}-{label}-{t_win[0]}.txt"
            await py_spy(procs, out, side.srv.proc.pid, secs)
        await asyncio.sleep(max(0, (t_win[1] - time.monotonic_ns()) / 1e9))
        cpu1 = cpu_sample(side.srv, side.child_proc)
        appends = await asyncio.wait_for(sender, (mode.warm_s + secs) * 3 + 10)
    finally:
        if not sender.done():
            sender.cancel()
    # drained: every subscriber has every append since the reset, or receipts stalled for 3 s, or the
    # timeout passed (a backlog left behind would load the next window, which is the other server's)
    want = (side.prod.seq - side.base) * mode.subscribers
    last, moved, deadline = -1, time.monotonic(), time.monotonic() + mode.drain_timeout_s
    while time.monotonic() < deadline and time.monotonic() - moved < 3:
        n = (await side.child.call(20, cmd="count"))["chunks"]
        if n >= want:
            break
        if n != last:
            last, moved = n, time.monotonic()
        await asyncio.sleep(0.1)
    after = await admin_stats(session, side.srv)
    admin = (
        {k: after[k] - before[k] for k in ("slow_consumer_drops", "frames", "deliveries")} if after else {}
    )
    cpu = [b - a for a, b in zip(cpu0, cpu1, strict=True)]
    return Window(t_win[0], t_win[1], secs, appends, cpu, admin)


@dataclass
class LiveRun:
    """Every window of one server at one rate, pooled."""

    kind: str
    label: str
    rate: float  # offered appends/s
    subs: int
    windows: list[Window]
    stats: dict[str, Any]
    ack: list[int]  # producer ack latencies (ns) of the windows' appends

    @property
    def secs(self) -> float:
        return sum(w.secs for w in self.windows)

    @property
    def appends(self) -> int:
        return sum(w.appends for w in self.windows)

    def cpu(self, i: int) -> float:
        """Share of one core: 0 server, 1 subscribers, 2 producer, 3 whole machine."""
        return sum(w.cpu[i] for w in self.windows) / self.secs

    @property
    def delivered_per_s(self) -> float:
        return float(self.stats["received_in_window"]) / self.secs

    @property
    def offered_per_s(self) -> float:
        return self.appends * self.subs / self.secs

    @property
    def cpu_us_per_delivery(self) -> float:
        return self.cpu(0) * self.secs / max(1, self.stats["received_in_window"]) * 1e6

    def admin(self, key: str) -> str:
        vals = [w.admin[key] for w in self.windows if key in w.admin]
        return str(sum(vals)) if vals else "-"


def cpu_sample(srv: Server, child: asyncio.subprocess.Process) -> tuple[float, float, float, float]:
    return cpu_seconds(srv.proc.pid), cpu_seconds(child.pid), time.process_time(), machine_busy_seconds()


async def admin_stats(session: aiohttp.ClientSession, srv: Server) -> dict[str, Any]:
    if not isinstance(srv.proc, HubProcess):
        return {}
    return await srv.proc.admin_stats(session)


async def py_spy(procs: Procs, out: Path, pid: int, secs: float) -> None:
    """Sample ``pid`` for ``secs`` with py-spy (collapsed stacks, idle frames dropped), in the background."""
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args = ["record", "--pid", str(pid), "--duration", str(max(1, int(secs))), "--rate", "250"]
    args += ["--nonblocking", "--format", "raw", "--output", str(out)]
    await procs.spawn(f"py-spy-{out.stem}", *args, program=exe)


async def live_phase(
    procs: Procs, session: aiohttp.ClientSession, sides: dict[str, Side], mode: Mode
) -> list[LiveRun]:
    """Paced windows alternate between the servers (bare, hub, hub, bare, ...), then overload."""
    plan = [("paced", mode.rate, mode.window_s, mode.rounds)]
    if mode.overload_rounds:
        plan.append(("overload", mode.rate * mode.overload, mode.overload_s, mode.overload_rounds))
    runs = []
    for label, rate, secs, rounds in plan:
        wins: dict[str, list[Window]] = {k: [] for k in sides}
        for side in sides.values():
            await side.child.call(20, cmd="reset")
            side.base = side.prod.seq
        for r in range(rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for kind in order:
                note(
                    f"{kind}: {label} window {r + 1}/{rounds}: {rate:g} appends/s x {mode.subscribers} "
                    f"subscribers, {secs:g} s"
                )
                w = await run_window(procs, session, sides[kind], mode, label, rate, secs)
                wins[kind].append(w)
        for kind, side in sides.items():
            st = await side.child.call(120, cmd="stats", windows=[(w.t0, w.t1) for w in wins[kind]])
            ack = sorted(lat for t, lat in side.prod.acked if any(w.t0 <= t < w.t1 for w in wins[kind]))
            run = LiveRun(kind, label, rate, mode.subscribers, wins[kind], st, ack)
            runs.append(run)
            lost = run.appends * run.subs - st["delivered_of_window"]
            note(
                f"  {kind} {label}: delivered {run.delivered_per_s:,.0f}/s of {run.offered_per_s:,.0f}/s "
                f"offered, p50 {ms(st['p50'])} ms, p99 {ms(st['p99'])} ms, {lost:,} late/lost"
            )
            if st["errors"] or side.prod.errors:
                note(f"  errors: {st['errors']} {side.prod.errors[:3]}")
    return runs


# --- resume: subscribe at a random offset of a closed 1,000,000-chunk stream ---------------------


def token_batches(n: int, batch: int) -> list[list[str]]:
    """``n`` token-sized chunks of consecutive simulated answers (``hub.producers.llm_sim``), cut into batches."""
    from hub.producers import llm_sim

    toks: list[str] = []
    seed = 0
    while len(toks) < n:
        toks += llm_sim.tokens(seed)
        seed += 1
    return [toks[i : i + batch] for i in range(0, n, batch)]


async def build_big(session: aiohttp.ClientSession, srv: Server, stream: str, n: int) -> float:
    batch, window = 1000, 8
    t = time.perf_counter()
    ws = await session.ws_connect(f"{srv.url}/ws", max_msg_size=1 << 24)
    prod = Producer(ws, stream)
    try:
        await prod.request({"op": "create", "stream": stream})
        prod.acks = 0  # from here on, acks of appends only
        frames = [
            msgspec.json.encode({"op": "append", "stream": stream, "data": b}).decode()
            for b in token_batches(n, batch)
        ]
        sent = 0
        total = len(frames)
        last = time.perf_counter()
        deadline = t + 120
        for i in range(total):
            while sent - prod.acks >= window:  # bounded: each pass waits for one ack or the deadline
                if time.perf_counter() > deadline or prod.errors:
                    raise RuntimeError(f"building the stream stalled at {prod.acks} appends: {prod.errors}")
                await asyncio.sleep(0.001)
            await ws.send_str(frames[i])
            sent += 1
            if time.perf_counter() - last > 2:
                last = time.perf_counter()
                note(f"  appended {prod.acks * batch:,}/{n:,} chunks")
        while prod.acks < sent and time.perf_counter() < deadline:
            await asyncio.sleep(0.005)
        await prod.request({"op": "close", "stream": stream}, timeout=60)
    finally:
        await prod.close()
    return time.perf_counter() - t


async def wait_sealed(srv: Server, stream: str, timeout: float) -> tuple[bool, float]:
    """Closed streams are rewritten into zstd blocks in the background; measure the final form."""
    from storage import ids

    assert srv.data_dir is not None
    d = ids.stream_dir(srv.data_dir, stream)
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        names = [p.name for p in d.iterdir()] if d.exists() else []
        if any(x.endswith(".zlog") for x in names) and not any(x.endswith(".log") for x in names):
            return True, time.perf_counter() - t
        await asyncio.sleep(0.1)
    return False, time.perf_counter() - t


async def first_chunk(ws: aiohttp.ClientWebSocketResponse, stream: str, offset: int) -> float:
    t = time.perf_counter()
    await ws.send_str(json.dumps({"op": "subscribe", "stream": stream, "from": offset}))
    for _ in range(100):
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"resume: unexpected {msg.type}")
        f = _frame.decode(msg.data)
        if f.op == "chunks":
            dt = time.perf_counter() - t
            if f.offset != offset or not f.data:
                raise RuntimeError(f"resume from {offset}: first frame starts at {f.offset}")
            return dt
        if f.op == "error":
            raise RuntimeError(f"resume from {offset}: {msg.data}")
    raise RuntimeError("resume: no chunks frame in 100 frames")


async def unsubscribe(ws: aiohttp.ClientWebSocketResponse, stream: str) -> None:
    await ws.send_str(json.dumps({"op": "unsubscribe", "stream": stream}))
    for _ in range(10_000):  # the replay frames queued before the unsubscribe come first
        msg = await ws.receive(timeout=10)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"resume: unexpected {msg.type}")
        if _frame.decode(msg.data).op == "unsubscribed":
            return
    raise RuntimeError("resume: no unsubscribed reply")


@dataclass
class ResumeResult:
    chunks: int
    build_s: float
    sealed: bool
    seal_wait_s: float
    same_conn: list[float]
    fresh_conn: list[float]
    segments: int = 0
    stored_bytes: int = 0


async def resume_phase(session: aiohttp.ClientSession, srv: Server, mode: Mode) -> ResumeResult:
    stream = "resume-1m"
    note(f"resume: appending {mode.big_chunks:,} chunks in batches of 1,000 over WebSocket")
    build_s = await build_big(session, srv, stream, mode.big_chunks)
    note(f"  built and closed in {build_s:.1f} s; waiting for sealing (<= {mode.seal_timeout_s:g} s)")
    sealed, seal_s = await wait_sealed(srv, stream, mode.seal_timeout_s)
    note(f"  sealed: {sealed} after {seal_s:.1f} s")
    h = {"Authorization": f"Bearer {srv.admin_token}"}
    async with session.get(f"{srv.url}/admin/streams/{stream}", headers=h) as r:
        info = await r.json()
    rng = random.Random(20240501)
    same: list[float] = []
    ws = await session.ws_connect(f"{srv.url}/ws", max_msg_size=1 << 24)
    stop = time.perf_counter() + mode.resume_budget_s * 0.8
    try:
        note(f"resume: {mode.resume_n} subscribes at random offsets on one connection")
        for _ in range(mode.resume_n):
            same.append(await first_chunk(ws, stream, rng.randrange(info["chunks"])))
            await unsubscribe(ws, stream)
            if time.perf_counter() > stop:
                note(f"  time budget spent after {len(same)} subscribes")
                break
    finally:
        await ws.close()
    fresh: list[float] = []
    stop = time.perf_counter() + mode.resume_budget_s * 0.2
    note(f"resume: {mode.resume_fresh_n} reconnects (connect + subscribe) at random offsets")
    for _ in range(mode.resume_fresh_n):
        if time.perf_counter() > stop:
            note(f"  time budget spent after {len(fresh)} reconnects")
            break
        t = time.perf_counter()
        ws = await session.ws_connect(f"{srv.url}/ws", max_msg_size=1 << 24)
        try:
            await first_chunk(ws, stream, rng.randrange(info["chunks"]))
            fresh.append(time.perf_counter() - t)
        finally:
            await ws.close()
    return ResumeResult(
        info["chunks"], build_s, sealed, seal_s, same, fresh, info["segments"], info["stored_bytes"]
    )


# --- report --------------------------------------------------------------------------------------


def live_rows(runs: Sequence[LiveRun]) -> list[list[str]]:
    rows = []
    for r in runs:
        st = r.stats
        rows.append(
            [
                f"{r.kind} ({r.label})",
                f"{r.rate:g}",
                f"{r.offered_per_s:,.0f}",
                f"{r.delivered_per_s:,.0f}",
                f"{100 * r.delivered_per_s / max(1.0, r.offered_per_s):.1f}%",
                ms(st["p50"]),
                ms(st["p90"]),
                ms(st["p99"]),
                ms(st["max"]),
                ms(st["first_p50"]),
                ms(st["last_p50"]),
                ms(st["last_p99"]),
                f"{r.appends * r.subs - st['delivered_of_window']:,}",
                f"{ms(nan_pct(r.ack, 50))} / {ms(nan_pct(r.ack, 99))}",
            ]
        )
    return rows


LIVE_HEADER = ["server (run)", "appends/s", "offered/s", "delivered/s", "of offered", "p50 ms", "p90 ms",
               "p99 ms", "max ms", "1st sub p50", "last sub p50", "last sub p99", "lost",
               "ack p50/p99 ms"]  # fmt: skip


def cpu_rows(runs: Sequence[LiveRun]) -> list[list[str]]:
    def share(x: float) -> str:
        return f"{100 * x:.0f}%"

    return [
        [
            f"{r.kind} ({r.label})",
            share(r.cpu(0)),
            f"{r.cpu_us_per_delivery:.1f}",
            share(r.cpu(1)),
            share(r.cpu(2)),
            share(r.cpu(3)),
            share(max(0.0, r.cpu(3) - r.cpu(0) - r.cpu(1) - r.cpu(2))),
            f"{r.stats['chunks'] / max(1, r.stats['frames']):.2f}",
            r.admin("slow_consumer_drops"),
            str(r.stats["anomalies"]),
            str(r.stats["lost_conns"]),
        ]
        for r in runs
    ]


CPU_HEADER = ["server (run)", "server", "server us/deliv", "subscribers", "producer", "machine",
              "rest", "chunks/frame", "slow drops", "gaps/dups", "closed conns"]  # fmt: skip


async def background_load(secs: float = 1.0) -> float:
    """Share of all cores busy while this benchmark does nothing: other tenants of the machine."""
    b0, t0 = machine_busy_seconds(), time.monotonic()
    await asyncio.sleep(secs)
    return (machine_busy_seconds() - b0) / (time.monotonic() - t0)


async def run(mode: Mode, tmp: Path) -> int:
    # SIGTERM cancels the run like Ctrl-C does, so the finally below still stops every child
    task = asyncio.current_task()
    assert task is not None
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    procs = Procs(tmp)
    sides: dict[str, Side] = {}
    live: list[LiveRun] = []
    res: ResumeResult | None = None
    try:
        async with aiohttp.ClientSession() as session:
            idle = await background_load()
            note(f"background load before the run: {100 * idle:.0f}% of one core")
            for kind in ("bare", "hub"):
                sides[kind] = await open_side(procs, session, kind, mode, tmp)
            live = await live_phase(procs, session, sides, mode)
            for side in sides.values():
                await close_side(procs, side)
            await sides["bare"].srv.proc.stop()
            if mode.resume_n:
                res = await resume_phase(session, sides["hub"].srv, mode)
            await sides["hub"].srv.proc.stop()
    finally:
        await procs.stop_all()
    report(mode, live, res, idle)
    return 0


def capacity_note(runs: dict[tuple[str, str], LiveRun], mode: Mode) -> str:
    if ("hub", "overload") not in runs:
        return ""
    cap = min(runs["hub", "overload"].delivered_per_s, runs["bare", "overload"].delivered_per_s)
    return f" ({100 * mode.rate * mode.subscribers / cap:.0f}% of the smaller capacity measured below, so neither saturates)"


def report(mode: Mode, live: list[LiveRun], res: ResumeResult | None, idle: float) -> None:
    runs = {(r.kind, r.label): r for r in live}
    bare, hub = runs["bare", "paced"], runs["hub", "paced"]
    ratio = hub.delivered_per_s / bare.delivered_per_s
    print(
        f"# bench.fanout ({mode.name}) - {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, "
        f"aiohttp {aiohttp.__version__}, Python {sys.version.split()[0]}, {git_revision('hub', 'storage')}"
    )
    busiest = max(max(0.0, r.cpu(3) - r.cpu(0) - r.cpu(1) - r.cpu(2)) for r in live)
    if max(idle, busiest) > 0.3:
        print(
            f"\nWARNING: the machine was shared: other processes used {100 * idle:.0f}% of a core before the "
            f"run and up to {100 * busiest:.0f}% during it ('rest' below); latency figures are inflated."
        )
    notes = [
        f"1 producer (this process) -> server subprocess -> {mode.subscribers} WebSocket subscribers in another "
        "process; all on 127.0.0.1, one machine, so the three processes share its cores.",
        f"each append is one {CHUNK_BYTES}-byte chunk (a send stamp plus padding); every subscriber gets one "
        "`chunks` frame per append (neither server batches live chunks).",
        f"paced: {mode.rate:g} appends/s{capacity_note(runs, mode)}: the headline. {mode.rounds} windows of "
        f"{mode.window_s:g} s per server, "
        "alternating bare and hub, pooled. overload: "
        f"{mode.rate * mode.overload:g} appends/s, past both servers' capacity: delivered/s there is each "
        "server's maximum fan-out rate and latency only measures its queue.",
        f"each window follows a {mode.warm_s:g} s warm-up at the same rate; delivered/s = receipts inside the "
        "windows / their length; latency over the chunks sent inside them; lost = those chunks that never "
        "arrived (the run waits until receipts stop).",
        "1st sub / last sub: per append, the latency of the first and of the last subscriber to get it "
        "(median and p99 over appends): the path to the first socket, then the spread of a fan-out that "
        "the server and the subscriber process both do one socket at a time.",
        "ack: producer send -> ack. The hub runs --fsync interval (5 ms group commit) and both acks and fans "
        "out a chunk only once it is durable; bare acks and broadcasts at once.",
    ]
    shown = sorted(live, key=lambda r: (r.label != "paced", r.kind != "bare"))
    print(table(f"1. live fan-out, {mode.subscribers:,} subscribers", LIVE_HEADER, live_rows(shown), notes))
    cnotes = [
        "CPU time over the windows / their length, 100% = one core; machine = all cores (/proc/stat); "
        "rest = machine - the three processes: the kernel's loopback TCP work no process is charged "
        "for, plus anything else running on the machine.",
        "server us/deliv = server CPU time / chunks delivered in the windows.",
        "chunks/frame > 1: the hub dropped a subscriber to replay (outbox full), which reads storage in "
        "batches; slow drops counts those events. gaps/dups: frames not starting at the subscriber's "
        "next offset; closed conns: subscriber connections the server closed (both must be 0).",
    ]
    print(table("1b. where the CPU went", CPU_HEADER, cpu_rows(shown), cnotes))

    if res is None:  # --no-resume (exploration only)
        res = ResumeResult(0, 0, False, 0, [float("nan")], [float("nan")])
    same, fresh = sorted(res.same_conn), sorted(res.fresh_conn)
    rrows = [
        ["subscribe on an open connection", len(same)] + [f"{pct(same, p) * 1e3:.2f}" for p in (50, 90, 99)]
        + [f"{same[-1] * 1e3:.2f}"],
        ["connect + subscribe (reconnect)", len(fresh)] + [f"{pct(fresh, p) * 1e3:.2f}" for p in (50, 90, 99)]
        + [f"{fresh[-1] * 1e3:.2f}"],
    ]  # fmt: skip
    rnotes = [
        f"stream: {res.chunks:,} token-sized chunks (hub.llm_sim text) appended over WebSocket in batches of "
        f"1,000 in {res.build_s:.1f} s, then closed; "
        + (
            f"sealed into zstd blocks ({res.segments} segment(s), {res.stored_bytes:,} B stored) "
            f"{res.seal_wait_s:.1f} s after the close."
            if res.sealed
            else f"NOT sealed within {mode.seal_timeout_s:g} s: measured on raw segments."
        ),
        "time from sending {op: subscribe, from: random offset} to receiving the first `chunks` frame "
        "(which must start at that offset); then unsubscribe and drain before the next one.",
        "resume_first_chunk_ms is the p99 of the open-connection row.",
    ]
    print(table("2. resume: first chunk at a random offset", ["case", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                rrows, rnotes))  # fmt: skip

    print("\n## summary")
    print(
        f"paced {mode.rate:g} appends/s x {mode.subscribers}: hub delivered {hub.delivered_per_s:,.0f}/s, "
        f"bare {bare.delivered_per_s:,.0f}/s -> ratio {ratio:.3f}; latency hub p50 {ms(hub.stats['p50'])} ms, "
        f"p99 {ms(hub.stats['p99'])} ms (bare p50 {ms(bare.stats['p50'])}, p99 {ms(bare.stats['p99'])})"
    )
    if ("hub", "overload") in runs:
        bo, ho = runs["bare", "overload"], runs["hub", "overload"]
        print(
            f"capacity (overload): hub {ho.delivered_per_s:,.0f}/s, bare {bo.delivered_per_s:,.0f}/s -> "
            f"{ho.delivered_per_s / bo.delivered_per_s:.3f}; server CPU per delivery: hub "
            f"{ho.cpu_us_per_delivery:.1f} us, bare {bo.cpu_us_per_delivery:.1f} us"
        )
    print(f"resume first chunk: p50 {pct(same, 50) * 1e3:.2f} ms, p99 {pct(same, 99) * 1e3:.2f} ms")
    print()
    print(f"fanout_vs_bare: {ratio:.3f}")
    print(f"fanout_p99_ms: {hub.stats['p99'] / 1e6:.2f}")
    print(f"resume_first_chunk_ms: {pct(same, 99) * 1e3:.2f}")


# --- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shorter windows and fewer samples (< 60 s)")
    ap.add_argument("--tmp", default="/tmp", help="parent directory for the scratch data (default /tmp)")
    ap.add_argument("--rate", type=float, help="override the paced appends/s")
    ap.add_argument("--subscribers", type=int, help="override the number of subscribers")
    ap.add_argument(
        "--overload", type=float, help="override the overload factor (x the paced rate; 0 = skip)"
    )
    ap.add_argument(
        "--py-spy", metavar="DIR", help="sample the servers with py-spy into DIR (collapsed stacks)"
    )
    ap.add_argument(
        "--hub-fsync", choices=["interval", "always", "never"], default="interval", help="the hub's --fsync"
    )
    ap.add_argument(
        "--no-resume", action="store_true", help="skip the resume phase (its key line prints nan)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        asyncio.run(child_main())
        return 0
    mode = QUICK if args.quick else FULL
    if args.rate:
        mode.rate = args.rate
    if args.subscribers:
        mode.subscribers = args.subscribers
    if args.overload is not None:
        mode.overload = args.overload
        mode.overload_rounds = mode.overload_rounds if args.overload > 0 else 0
    mode.hub_fsync = args.hub_fsync
    if args.no_resume:
        mode.resume_n = 0
    if args.py_spy:
        mode.profile_dir = Path(args.py_spy).resolve()
        mode.profile_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-", dir=args.tmp))
    note(f"mode {mode.name}, scratch dir {tmp}, {os.cpu_count()} CPUs")
    try:
        rc = asyncio.run(run(mode, tmp))
    except BaseException:
        note(f"failed; the servers' and subscribers' logs are in {tmp}")
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
