"""What every benchmark shares: percentiles, tables, progress on stderr, free ports, a hub subprocess.

Role: one definition of each, so that two figures in RESULTS.md with the same name were computed the
same way. Invariants:

* ``pct`` is the **linear interpolation between closest ranks** percentile: numpy's default
  (``method="linear"``), Hyndman & Fan's type 7, ``statistics.quantiles(..., method="inclusive")``.
  Every percentile printed by ``bench/`` uses it (before 2026-12-01 there were three definitions).
* Human output goes to stdout; progress (``note``, ``progress``) only ever to stderr, so the tables and
  the final ``key: value`` lines can be piped and parsed.
* Every socket is on 127.0.0.1, and every wait here has a deadline. A child process started here
  gets SIGKILL when this process dies (Linux), so a crashed benchmark leaves no hub behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import aiohttp

HOST = "127.0.0.1"  # every socket a benchmark opens is on the loopback interface
ROOT = Path(__file__).resolve().parent.parent  # the repository: children run here so `-m bench.x` works

_T0 = time.perf_counter()
_bar_line_open = False  # a terminal bar was drawn without its newline: the next note starts a new line


# --- figures ---------------------------------------------------------------------------------------


def pct(xs: Iterable[float], p: float) -> float:
    """The ``p``-th percentile (``0 <= p <= 100``) of ``xs``, by linear interpolation between closest ranks.

    With the samples sorted as ``s[0..n-1]``, the percentile sits at position ``h = (n - 1) * p / 100``
    and is ``s[floor(h)] + (h - floor(h)) * (s[floor(h) + 1] - s[floor(h)])``: numpy's default, so
    ``pct(xs, 50)`` is the median and ``pct(xs, 100)`` the maximum. ``xs`` need not be sorted.
    Raises ``ValueError`` on no samples (there is no honest number to print) or ``p`` out of range.
    """
    s = sorted(xs)
    if not s:
        raise ValueError("pct() of no samples")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is outside [0, 100]")
    h = (len(s) - 1) * p / 100
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (h - lo) * (s[hi] - s[lo]))


def table(
    title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: Sequence[str] = ()
) -> str:
    """A plain-text table under a ``## title``: the first column left-aligned, the others right-aligned
    (numbers), a dashed rule under the header, and ``notes`` as ``  * note`` lines below it."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    for r in cells[1:]:
        if len(r) != len(header):
            raise ValueError(f"row of {len(r)} cells under a header of {len(header)}: {r}")
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = [f"\n## {title}", "  ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        out.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        )
    out += [f"  * {n}" for n in notes]
    return "\n".join(out)


# --- progress on stderr ----------------------------------------------------------------------------


def note(msg: str) -> None:
    """One line on stderr, stamped with the seconds since the benchmark started."""
    global _bar_line_open
    nl = "\n" if _bar_line_open else ""
    _bar_line_open = False
    print(f"{nl}[{time.perf_counter() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class Progress:
    """A progress bar for a loop of known length, on stderr.

    On a terminal it redraws one line in place (at most 10 times a second); into a file or a pipe it
    writes a line every ``every`` seconds instead, so a captured log stays short. ``update`` costs one
    clock read when nothing is drawn, so it can sit inside a timed loop (after the timed part)."""

    WIDTH = 24

    def __init__(
        self, label: str, total: int, every: float | None = None, out: IO[str] | None = None
    ) -> None:
        self.label, self.total = label, max(0, total)
        self.out = out if out is not None else sys.stderr
        self.tty = self.out.isatty()
        self.every = every if every is not None else (0.1 if self.tty else 5.0)
        self.t0 = self.last = time.perf_counter()
        self.done = 0
        self.drawn = self.closed = False

    def update(self, done: int, extra: str = "") -> None:
        """``done`` items of ``total`` are finished; ``extra`` is shown after the bar."""
        self.done = done
        now = time.perf_counter()
        if now - self.last >= self.every:
            self.last = now
            self._draw(now, extra, final=False)

    def close(self, extra: str = "") -> None:
        """Draws the last state and ends the line, if the loop was long enough to draw anything before
        (a loop done within ``every`` leaves no trace). Idempotent."""
        if not self.closed:
            self.closed = True
            if self.drawn:
                self._draw(time.perf_counter(), extra, final=True)

    def line(self, now: float, extra: str = "") -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        fill = round(frac * self.WIDTH)
        secs = now - self.t0
        rate = self.done / secs if secs > 0 else 0.0
        eta = f"  eta {(self.total - self.done) / rate:.0f}s" if rate > 0 and self.done < self.total else ""
        text = (
            f"[{now - _T0:6.1f}s] {self.label} [{'#' * fill}{'.' * (self.WIDTH - fill)}] "
            f"{self.done:,}/{self.total:,} {100 * frac:3.0f}%  {rate:,.0f}/s  {secs:.1f}s{eta}"
        )
        return f"{text}  {extra}" if extra else text

    def _draw(self, now: float, extra: str, final: bool) -> None:
        global _bar_line_open
        self.drawn = True
        text = self.line(now, extra)
        if self.tty:
            self.out.write(f"\r{text}\x1b[K" + ("\n" if final else ""))
            _bar_line_open = not final and self.out is sys.stderr
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(label: str, total: int, every: float | None = None) -> Progress:
    """A progress bar on stderr for ``total`` items: ``with progress("runs", n) as bar: bar.update(i)``."""
    return Progress(label, total, every)


# --- processes and ports ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice of an ephemeral one)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _prctl() -> Any:
    with contextlib.suppress(Exception):
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    return None


_PRCTL = _prctl() if sys.platform == "linux" else None  # looked up before any fork, not in the child


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when its parent dies (PR_SET_PDEATHSIG, Linux only)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)


class ServerProcess:
    """A server program as a child process on 127.0.0.1 that is ready once ``GET /healthz`` says 200.

    ``start`` may be called again after ``kill`` or ``stop`` (a restart on the same port and data)."""

    def __init__(
        self,
        argv: Sequence[str],
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.argv, self.port, self.log, self.start_timeout = list(argv), port, log, start_timeout
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server was never started")
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def _where(self) -> str:
        """Where to look, and the log's last lines: a temporary log dir is often gone by the time a
        person reads the error (the cause of a start-up refusal, exit 2, is in those lines)."""
        if self.log is None:
            return ""
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-8:]
        except OSError:
            tail = []
        return f"; see {self.log}" + "".join(f"\n    {line}" for line in tail)

    async def start(self) -> None:
        """Starts the process and returns once /healthz answers 200 (RuntimeError if it exits first
        or does not answer within ``start_timeout``)."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.argv[:4]} is already running as pid {self.proc.pid}")
        out: IO[bytes] | int = subprocess.DEVNULL
        if self.log is not None:
            out = open(self.log, "ab")  # noqa: SIM115 - the child holds it; ours is closed below
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; we poll /healthz
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent if _PRCTL is not None else None,
            )
        finally:
            if not isinstance(out, int):
                out.close()
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as s:
            while True:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with s.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                code = self.proc.poll()
                if code is not None:
                    raise RuntimeError(
                        f"{self.argv[1:4]} exited with {code} before answering /healthz{self._where()}"
                    )
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"{self.argv[1:4]} did not answer /healthz within {self.start_timeout:g} s{self._where()}"
                    )
                await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, and reap the process."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL if the process is still alive after ``grace`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.kill()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class HubProcess(ServerProcess):
    """``python -m hub serve`` on 127.0.0.1: its own port (a free one unless given), data dir, fsync policy
    and admin token (random unless given); ``args`` are more ``serve`` flags, ``env`` more ``RHUB_*``
    settings (those without a flag, e.g. ``RHUB_SEGMENT_BYTES``); ``entry`` what runs instead of
    ``-m hub`` (``-m bench.traced_hub DIR`` runs it under tracemalloc)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        fsync: str = "interval",
        admin_token: str | None = None,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        start_timeout: float = 30.0,
        entry: Sequence[str] = ("-m", "hub"),
    ) -> None:
        self.data_dir = data_dir
        self.admin_token = admin_token if admin_token is not None else secrets.token_urlsafe(12)
        port = port if port is not None else free_port()
        argv = [sys.executable, *entry, "serve", "--host", HOST, "--port", str(port)]
        argv += ["--data-dir", str(data_dir), "--fsync", fsync, f"--admin-token={self.admin_token}", *args]
        super().__init__(argv, port, env=env, log=log, start_timeout=start_timeout)

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def admin_stats(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        """``GET /admin/stats``: the hub's own counters (RSS, fds, tasks, connections, drops...)."""
        async with session.get(f"{self.url}/admin/stats", headers=self.admin_headers) as r:
            r.raise_for_status()
            out: dict[str, Any] = await r.json()
            return out


def git_revision(*paths: str) -> str:
    """``commit abc1234``, plus a note when any of ``paths`` (under the repository) has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", *paths], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "git revision unknown"
    if head.returncode:
        return "git revision unknown"
    changed = (
        f" + uncommitted {'/'.join(p.rstrip('/') for p in paths)} changes" if dirty.stdout.strip() else ""
    )
    return f"commit {head.stdout.strip()}{changed}"
