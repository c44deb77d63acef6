"""Python client: a ``Producer`` that survives network failures without duplicating a chunk, and a
``Subscriber`` that reconnects with jittered backoff and resumes exactly where it stopped.

    async with Producer("ws://127.0.0.1:8765/ws", "chat/1/answer") as p:
        async for token in llm():
            if p.cancelled:
                break
            await p.append(token)
    # leaving the block closes the stream: done, or error if the block raised

    async for chunk in Subscriber("ws://127.0.0.1:8765/ws", "chat/1/answer"):
        print(chunk.data, end="")

Each append carries (producer id, seq); after a reconnect every unacknowledged append is sent again
with its original seq, and the hub acknowledges a retry of an append that already landed with its
original offset instead of writing it twice. Frames both ways are the typed messages of
``hub.protocols.native.messages``; close codes come from ``hub.core.errors``, as the hub's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from hub.core.errors import FATAL_CLOSE
from hub.core.tasks import TaskSet
from hub.protocols.native import messages as m

Request = m.Create | m.Append | m.Close
CANCEL_CLOSE_S = 5.0  # how long a cancelled Producer tries to close its stream as cancelled


class ClientError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Chunk:
    offset: int
    data: str


def _backoff(attempt: int, base: float, cap: float) -> float:
    return random.uniform(0, min(cap, base * 2**attempt))  # "full jitter"


def _ws_url(url: str, token: str | None) -> str:
    if token:
        url += ("&" if "?" in url else "?") + "token=" + token
    return url


class Producer:
    def __init__(
        self,
        url: str,
        stream: str,
        *,
        token: str | None = None,
        producer_id: str | None = None,
        ttl: float | None = None,
        labels: dict[str, str] | None = None,
        on_cancel: Callable[[], Coroutine[Any, Any, None]] | None = None,
        max_attempts: int = 20,
        backoff: tuple[float, float] = (0.05, 2.0),
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = _ws_url(url, token)
        self.stream = stream
        self.producer_id = producer_id or uuid.uuid4().hex
        self.ttl = ttl
        self.labels = labels or {}
        self.on_cancel = on_cancel
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.cancel_event = asyncio.Event()
        self.seq = 0
        self.reconnects = 0
        self._own_session = session is None
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._unacked: dict[int | str, tuple[Request, asyncio.Future[m.Ack]]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._tasks = TaskSet()  # reconnects and on_cancel callbacks, kept referenced until done
        self._lock = asyncio.Lock()
        self._closed = False
        self._next_id = 0

    @property
    def cancelled(self) -> bool:
        """True once a reader asked this stream to stop (within one round trip of their cancel)."""
        return self.cancel_event.is_set()

    async def __aenter__(self) -> Producer:
        await self._connect()
        await self._request(m.Create(self.stream, ttl=self.ttl, labels=self.labels))
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if not self._closed and exc_type is asyncio.CancelledError:
                # The task was cancelled (a shutdown, a timeout, a user's Stop): end the stream as
                # such now, rather than leave readers waiting for the hub's lease to end it.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.close("cancelled"), CANCEL_CLOSE_S)
            elif not self._closed:
                if exc is not None:
                    await self.close("error", f"{exc_type.__name__}: {exc}")
                else:
                    await self.close("cancelled" if self.cancelled else "done")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        await self._tasks.aclose()
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()

    async def append(self, data: str | list[str]) -> int:
        """Append one chunk (or several); returns the first offset once the hub says it is durable."""
        self.seq += 1
        ack = await self._request(m.Append(self.stream, data, producer=self.producer_id, seq=self.seq))
        return ack.offset

    async def close(self, status: m.CloseStatus = "done", error: str | None = None) -> None:
        try:
            await self._request(m.Close(self.stream, status, error[:1000] if error is not None else None))
        except ClientError as e:
            if e.code != "stream_closed":
                raise
        self._closed = True

    # --- plumbing ----------------------------------------------------------------------------

    async def _connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        attempt = 0
        while True:
            try:
                self._ws = await self._session.ws_connect(self.url, heartbeat=20)
                break
            except (aiohttp.ClientError, OSError):
                attempt += 1
                if attempt >= self.max_attempts:
                    raise
                await asyncio.sleep(_backoff(attempt, *self.backoff))
        self._reader = asyncio.create_task(self._read(self._ws))
        for msg, _ in list(self._unacked.values()):  # same seq: the hub dedupes what already landed
            await self._ws.send_str(m.encode(msg))

    async def _request(self, msg: Request) -> m.Ack:
        self._next_id += 1
        rid = msg.id = self._next_id
        fut: asyncio.Future[m.Ack] = asyncio.get_running_loop().create_future()
        self._unacked[rid] = (msg, fut)
        try:
            if self._ws is not None and not self._ws.closed:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await self._ws.send_str(m.encode(msg))
            return await fut
        finally:
            self._unacked.pop(rid, None)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = m.decode_server(msg.data)
            if isinstance(frame, m.Ack):
                entry = self._unacked.get(frame.id) if frame.id is not None else None
                if entry and not entry[1].done():
                    entry[1].set_result(frame)
                if frame.cancelled:
                    self._set_cancelled()
            elif isinstance(frame, m.Error):
                entry = self._unacked.get(frame.id) if frame.id is not None else None
                if entry and not entry[1].done():
                    entry[1].set_exception(ClientError(frame.code, frame.message))
            elif isinstance(frame, m.CancelRequested) and frame.stream == self.stream:
                self._set_cancelled()
        if ws.close_code in FATAL_CLOSE:
            for _, fut in self._unacked.values():
                if not fut.done():
                    fut.set_exception(ClientError("unauthorized", "the hub refused our token"))
            return
        # connection lost: reconnect and resend everything unacknowledged, same seqs
        self.reconnects += 1
        self._tasks.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        async with self._lock:
            try:
                await self._connect()
            except Exception as e:
                for _, fut in self._unacked.values():
                    if not fut.done():
                        fut.set_exception(ClientError("unavailable", f"cannot reconnect: {e}"))

    def _set_cancelled(self) -> None:
        if not self.cancel_event.is_set():
            self.cancel_event.set()
            if self.on_cancel is not None:
                self._tasks.spawn(self.on_cancel())


class Subscriber:
    """Async iterator over a stream's chunks, from ``from_`` on, surviving reconnects."""

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        from_: int = 0,
        token: str | None = None,
        coalesce_ms: float = 0.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        max_attempts: int = 50,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = _ws_url(url, token)
        self.stream = stream
        self.offset = from_
        self.epoch: str | None = None
        self.coalesce_ms = coalesce_ms
        self.backoff = backoff
        self.max_attempts = max_attempts
        self.status: str | None = None
        self.error: str | None = None
        self.connects = 0
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def disconnect(self) -> None:
        """Drop the connection (as a network failure would); iteration reconnects and resumes."""
        if self._ws is not None:
            await self._ws.close()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        own = self._session is None
        session = self._session or aiohttp.ClientSession()
        attempt = 0
        try:
            while self.status is None:
                try:
                    async with session.ws_connect(self.url, heartbeat=20) as ws:
                        self._ws = ws
                        self.connects += 1
                        sub = m.Subscribe(
                            self.stream, self.offset, epoch=self.epoch, coalesce_ms=self.coalesce_ms
                        )
                        await ws.send_str(m.encode(sub))
                        async for msg in ws:
                            if msg.type != aiohttp.WSMsgType.TEXT:
                                break
                            attempt = 0
                            f = m.decode_server(msg.data)
                            if isinstance(f, m.Chunks):
                                first = f.offset
                                if first > self.offset:
                                    raise ClientError("gap", f"expected offset {self.offset}, got {first}")
                                for i, d in enumerate(f.data):
                                    if first + i >= self.offset:  # never yield a chunk twice
                                        self.offset = first + i + 1
                                        yield Chunk(first + i, d)
                            elif isinstance(f, m.Subscribed):
                                self.epoch = f.epoch
                            elif isinstance(f, m.Reset):
                                self.epoch, self.offset = f.epoch, 0
                            elif isinstance(f, m.End):
                                self.status, self.error = f.status, f.error
                                return
                            elif isinstance(f, m.Error):
                                raise ClientError(f.code, f.message)
                        if ws.close_code in FATAL_CLOSE:
                            raise ClientError("unauthorized", "the hub refused our token")
                except (TimeoutError, aiohttp.ClientError, OSError):
                    pass
                attempt += 1
                if attempt > self.max_attempts:
                    raise ClientError("unavailable", f"gave up after {self.max_attempts} attempts")
                await asyncio.sleep(_backoff(attempt, *self.backoff))
        finally:
            self._ws = None
            if own:
                await session.close()

    async def text(self) -> str:
        return "".join([c.data async for c in self])


async def cancel(http_url: str, stream: str, token: str | None = None) -> dict[str, Any]:
    """Ask a stream's producer to stop, over HTTP (``http_url`` is the hub's base URL)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{http_url}/streams/{stream}/cancel", headers=headers) as r,
    ):
        body: dict[str, Any] = await r.json()
        if r.status >= 400:
            raise ClientError(body["error"]["code"], body["error"]["message"])
        return body
