"""Every script call of one engine, on ONE dedicated connection, in submission order, pipelined.

Callers queue an EVALSHA and await its reply; one task sends everything queued as one write and
reads the replies in order, so concurrent appends to many streams share a round trip and a
syscall (a group commit, as the file engine's), and a stream's calls reach Redis in the order they
were made (a producer's pipelined seqs never overtake each other) without a queue per stream.

Invariants:

* Each call's first ARGV is the run_id of the server this connection was opened to, read by
  ``INFO server`` on the connection itself right after it (re)connects and before any call goes on
  it: the scripts' epoch check (lua/_lib.lua) then knows the incarnation without an INFO per call.
  A TCP connection never outlives a server process, so the run_id sent is the executing server's.
* Every script is loaded (SCRIPT LOAD) on each new connection before calls go on it; a NOSCRIPT
  seen anyway (an operator's SCRIPT FLUSH) is loaded and that call sent again, first in line.
* A reply is settled by this task, in order, even when its caller was cancelled meanwhile: the
  caller only stops waiting (the CVE-2023-28858 class cannot arise: no caller touches the socket).
* A batch whose connection broke fails every call in it with ``ConnectionError``: the outcome of
  each is unknown (only a producer's (id, epoch, seq) makes its retry safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

log = logging.getLogger(__name__)

MAX_BATCH = 512  # calls per write: bounds the memory one round trip holds


@dataclass(slots=True)
class Call:
    name: str
    keys: list[str]
    args: list[Any]
    settle: Callable[[Any], None] | None
    fut: asyncio.Future[Any]


class ScriptPipe:
    def __init__(
        self, make_connection: Callable[[], Any], sources: dict[str, str], shas: dict[str, str]
    ) -> None:
        self._make = make_connection
        self._sources = sources
        self._shas = shas
        self._conn: Any = None
        self._run_id: bytes | None = None  # of the server self._conn is connected to
        self._queue: list[Call] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.calls = 0

    def start(self) -> None:
        self._conn = self._make()
        self._task = asyncio.create_task(self._loop())

    def submit(
        self, name: str, keys: list[str], args: list[Any], settle: Callable[[Any], None] | None = None
    ) -> asyncio.Future[Any]:
        if self._task is None or self._closing:
            raise RedisConnectionError("the engine is stopped")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(Call(name, keys, args, settle, fut))
        self._wake.set()
        return fut

    async def stop(self, drain: float = 5.0) -> None:
        """Send what is queued (for at most ``drain`` seconds), then close the connection."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain):
                    await asyncio.shield(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        for c in self._queue:
            _fail(c, RedisConnectionError("the engine stopped before Redis answered"))
        self._queue = []
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.disconnect()

    async def _ensure(self) -> bytes:
        conn = self._conn
        if self._run_id is not None and conn.is_connected:
            return self._run_id
        self._run_id = None
        await conn.disconnect(nowait=True)
        await conn.connect()
        await conn.send_command("INFO", "server")
        info = await conn.read_response()
        text = info if isinstance(info, bytes) else str(info).encode()
        m = re.search(rb"run_id:([0-9a-f]+)", text)
        if m is None:
            raise RedisConnectionError("INFO server has no run_id")
        for name, src in self._sources.items():
            await conn.send_command("SCRIPT", "LOAD", src)
            sha = await conn.read_response()
            self._shas[name] = sha.decode() if isinstance(sha, bytes) else str(sha)
        self._run_id = m.group(1)
        return self._run_id

    async def _loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            replies: list[Any] = []
            failed: BaseException | None = None
            try:
                await self._send(batch, replies)
            except asyncio.CancelledError:
                failed = RedisConnectionError("the engine stopped before Redis answered")
                raise
            except (RedisError, OSError) as e:
                self._run_id = None
                with contextlib.suppress(Exception):
                    await self._conn.disconnect(nowait=True)
                failed = e if isinstance(e, RedisConnectionError) else RedisConnectionError(str(e))
            except Exception as e:  # a bug here must fail its calls, not leave them waiting forever
                log.exception("the script pipe failed")
                self._run_id = None
                with contextlib.suppress(Exception):
                    await self._conn.disconnect(nowait=True)
                failed = RedisConnectionError(f"script pipe: {e!r}")
            finally:
                self._settle(batch, replies, failed)
            if failed is not None and not self._closing:
                await asyncio.sleep(0.02)  # a server that is down: do not spin

    def _settle(self, batch: list[Call], replies: list[Any], failed: BaseException | None) -> None:
        """The replies that arrived, in order; the calls after them fail with ``failed``."""
        redo = []
        for i, c in enumerate(batch):
            if i >= len(replies):
                _fail(c, failed or RedisConnectionError("no reply"))
                continue
            r = replies[i]
            if isinstance(r, NoScriptError) and failed is None:
                redo.append(c)
                continue
            if c.settle is not None and not isinstance(r, Exception):
                try:
                    c.settle(r)
                except Exception:
                    log.exception("applying a script reply failed")
            if c.fut.done():
                continue
            if isinstance(r, Exception):
                c.fut.set_exception(r)
            else:
                c.fut.set_result(r)
        if redo:
            self._run_id = None  # reload every script before these calls go again, first in line
            self._queue[:0] = redo

    async def _send(self, batch: list[Call], replies: list[Any]) -> None:
        rid = await self._ensure()
        conn = self._conn
        shas = self._shas
        packed = conn.pack_commands(
            [("EVALSHA", shas[c.name], len(c.keys), *c.keys, rid, *c.args) for c in batch]
        )
        # no await between the check in _ensure and this send: the connection cannot have been
        # silently reopened to another server (send_packed_command reconnects only if closed)
        await conn.send_packed_command(packed, check_health=False)
        self.batches += 1
        self.calls += len(batch)
        for _ in batch:
            try:
                replies.append(await conn.read_response())
            except ResponseError as e:  # NOSCRIPT, or an error the script raised
                replies.append(e)


def _fail(c: Call, exc: BaseException) -> None:
    if not c.fut.done():
        c.fut.set_exception(exc)
