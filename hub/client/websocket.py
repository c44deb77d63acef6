"""Python client: a ``Producer`` that survives network failures without duplicating a chunk, and a
``Subscriber`` that reconnects with jittered backoff and resumes exactly where it stopped.

    async with Producer("ws://127.0.0.1:8765/ws", "chat/1/answer") as p:
        async for token in llm():
            if p.cancelled:
                break
            await p.append(token)  # returns at once: appends are pipelined, see ``Producer``
    # leaving the block waits for every append to be durable, then closes the stream: done, or
    # error if the block raised

    async for chunk in Subscriber("ws://127.0.0.1:8765/ws", "chat/1/answer"):
        print(chunk.data, end="")

Each append carries (producer id, seq); after a reconnect every unacknowledged append is sent again
with its original seq, and the hub acknowledges a retry of an append that already landed with its
original offset instead of writing it twice.

Tokens: ``token`` is a string or a callable (sync or async) returning one, called again on every
(re)connect, so an app can hand out short-lived tokens. A token refused at connect, or one that expires
under an open connection (the hub refuses writes with ``token_expired``), ends a Producer with a
``ClientError`` whose code says which (``unauthorized`` or ``token_expired``) and closes its session,
unless the token is a callable: then the Producer reconnects with a fresh one and resends, as after a
network drop. A ``Subscriber`` never restarts from 0 silently: a ``reset`` (the hub lost data this
reader may have seen) raises ``StreamReset`` unless ``on_reset`` takes it. Frames both ways are the typed messages of
``hub.protocols.native.messages``; close codes come from ``hub.core.errors``, as the hub's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from hub.client.batch import Batch, Taken
from hub.core.errors import FATAL_CLOSE
from hub.core.tasks import TaskSet
from hub.protocols.native import messages as m

Request = m.Create | m.Append | m.Close
CANCEL_CLOSE_S = 5.0  # how long a cancelled Producer tries to close its stream as cancelled
REFUSED = ("unauthorized", "token_expired")
Token = str | Callable[[], str | Awaitable[str]] | None


class ClientError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StreamReset(ClientError):
    """The hub renewed the stream's epoch: offsets this reader holds are void (the text it showed may
    differ from the stream's now). Start over from 0 with ``epoch``, or pass ``on_reset``."""

    def __init__(self, stream: str, epoch: str) -> None:
        super().__init__("reset", f"stream {stream!r} was reset to epoch {epoch}: read it again from 0")
        self.stream, self.epoch = stream, epoch


async def _current(token: Token) -> str | None:
    if token is None or isinstance(token, str):
        return token
    got = token()
    return await got if inspect.isawaitable(got) else got


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


class _Pending:
    """A request the hub has not answered yet: sent again, in id order, on every new connection."""

    __slots__ = ("fut", "gen", "msg", "sends", "text")

    def __init__(self, msg: Request, fut: asyncio.Future[m.Ack]) -> None:
        self.msg = msg
        self.text = m.encode(msg)
        self.fut = fut
        self.gen = -1  # the connection generation it was last sent on
        self.sends = 0


class _BatchingProducer:
    """What the WebSocket and HTTP producers share around their batch (hub/client/batch.py): the
    close status a block ends with, ``flush``, ``close``. A subclass says how it sends what is ready
    (``_kick``), how it closes the stream (``_send_close``) and whether the hub refused it."""

    cancel_event: asyncio.Event
    _batch: Batch
    _idle: asyncio.Event  # nothing batched and nothing in flight
    _closed: bool

    @property
    def cancelled(self) -> bool:
        """True once a reader asked this stream to stop."""
        return self.cancel_event.is_set()

    @property
    def _failed(self) -> BaseException | None:
        return self._batch.failed

    def _refused(self) -> bool:
        """The hub will not take our token: nothing more, not even a close, goes to it."""
        raise NotImplementedError

    def _kick(self) -> None:
        raise NotImplementedError

    async def _send_close(self, status: m.CloseStatus, error: str | None) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if self._refused():
                pass  # the hub will not take a close from us either; the lease will end the stream
            elif not self._closed and exc_type is asyncio.CancelledError:
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

    async def flush(self) -> None:
        """Send what is batched now and wait until every append is durable (or raise its error)."""
        self._batch.due = True
        self._kick()
        await self._idle.wait()
        if self._failed is not None:
            raise self._failed

    async def close(self, status: m.CloseStatus = "done", error: str | None = None) -> None:
        with contextlib.suppress(ClientError):
            await self.flush()  # the partial answer is kept even when the close says error
        failed = self._failed if status == "done" else None  # "done" would claim every append landed
        if failed is not None:
            status, error = "error", f"an append was refused: {failed}"
        try:
            await self._send_close(status, error[:1000] if error is not None else None)
        except ClientError as e:
            if e.code != "stream_closed":
                raise
        self._closed = True
        if failed is not None:
            raise failed

    async def _offset_when_idle(self) -> int:
        await self._idle.wait()
        return self._batch.next_offset


class Producer(_BatchingProducer):
    """Appends to one stream, pipelined: ``append`` returns at once with a future of the offset.

    At most ``window`` append frames are in flight; tokens appended meanwhile wait in a batch that
    goes out as one frame (one chunk per token) when an ack frees a slot, so a producer is bound by
    the hub's group commit per *window*, not per token. ``coalesce_ms`` / ``coalesce_tokens`` merge
    tokens into larger chunks (flushed every N ms or N tokens). After a drop every unacknowledged
    frame is sent again in order with its original seq; the hub answers a retry of an append that
    already landed with its original offset instead of writing it twice. ``window`` stays within
    the hub's producer window (storage.PRODUCER_WINDOW = 5 retries answered as duplicates).
    """

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        token: Token = None,
        producer_id: str | None = None,
        ttl: float | None = None,
        labels: dict[str, str] | None = None,
        on_cancel: Callable[[], Coroutine[Any, Any, None]] | None = None,
        max_attempts: int = 20,
        backoff: tuple[float, float] = (0.05, 2.0),
        session: aiohttp.ClientSession | None = None,
        window: int = 4,
        coalesce_ms: float = 0.0,
        coalesce_tokens: int = 0,
        max_batch: int = 1024,
    ) -> None:
        if not 1 <= window <= 5:
            raise ValueError("window must be 1-5 (the hub answers retries of a producer's last 5 appends)")
        self.url = url
        self.token = token
        self.stream = stream
        self.producer_id = producer_id or uuid.uuid4().hex
        self.ttl = ttl
        self.labels = labels or {}
        self.on_cancel = on_cancel
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.window = window
        self.coalesce_ms = coalesce_ms
        self.coalesce_tokens = coalesce_tokens
        self.max_batch = max_batch
        self.cancel_event = asyncio.Event()
        self.seq = 0
        self.reconnects = 0
        self.frames_sent = 0  # append frames (first sends, not retries); ``seq`` counts them too
        self.appended = 0  # chunks given to ``append``
        self._own_session = session is None
        self._session = session
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._gen = 0
        self._unacked: dict[int, _Pending] = {}
        self._wake = asyncio.Event()
        self._pump_task: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks = TaskSet()  # reconnects and on_cancel callbacks, kept referenced until done
        self._lock = asyncio.Lock()
        self._closed = False
        self._started = False
        self._next_id = 0
        # tokens appended but not yet in a frame, with the caller's future for each call
        self._batch = Batch(max_batch, coalesce_ms, coalesce_tokens, on_due=self._fill)
        self._inflight = 0
        self._idle = asyncio.Event()  # nothing batched and nothing in flight
        self._idle.set()
        self._refusal: ClientError | None = None  # the hub refused our token: nothing more is sent
        self._refusals_in_a_row = 0  # a fresh token refused again: give up rather than loop

    def _refused(self) -> bool:
        return self._refusal is not None

    def _kick(self) -> None:
        self._fill()

    async def _send_close(self, status: m.CloseStatus, error: str | None) -> None:
        await self._request(m.Close(self.stream, status, error))

    async def start(self) -> Producer:
        """Connect and create the stream (``async with`` does it; call it first to have the stream
        exist before you hand its id out, then enter the block later)."""
        if not self._started:
            self._started = True
            try:
                await self._connect()
                await self._request(m.Create(self.stream, ttl=self.ttl, labels=self.labels))
            except BaseException:
                await self.aclose()  # refused or unreachable: leave no connection or session behind
                raise
        return self

    async def __aenter__(self) -> Producer:
        return await self.start()

    async def aclose(self) -> None:
        await self._tasks.aclose()
        self._batch.cancel_timer()
        for t in (self._reader, self._pump_task):
            if t:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._ws is not None:
            await self._ws.close()
        if self._own_session and self._session is not None:
            await self._session.close()

    async def append(self, data: str | list[str]) -> asyncio.Future[int]:
        """Queue one chunk (or several) and return at once with a future of its first offset,
        resolved when the hub says it is durable (-1 if its ack was lost with a connection and the
        hub could only tell that it had landed). Waits only when ``max_batch`` tokens are queued.
        Raises the error of an earlier append that the hub refused. Empty data (a model's empty
        delta) is skipped, without a seq: its future gives the next offset once all before it landed."""
        if self._refusal is not None:
            raise self._refusal
        if self._failed is not None:
            raise self._failed
        if data in ("", []):
            return self._tasks.spawn(self._offset_when_idle())
        fut = await self._batch.add(data)
        self.appended += 1 if isinstance(data, str) else len(data)
        self._idle.clear()
        self._fill()
        return fut

    # --- batching ----------------------------------------------------------------------------

    def _fill(self) -> None:
        """Move the batch into append frames while the window has room (no await: order is kept)."""
        while self._inflight < self.window and self._batch.ready():
            taken = self._batch.take()
            self.seq += 1
            self._inflight += 1
            self.frames_sent += 1
            msg = m.Append(self.stream, taken.chunks, producer=self.producer_id, seq=self.seq)
            self._submit(msg).fut.add_done_callback(functools.partial(self._frame_done, taken=taken))
        if not self._batch and not self._inflight:
            self._idle.set()

    def _frame_done(self, frame: asyncio.Future[m.Ack], *, taken: Taken) -> None:
        self._inflight -= 1
        if frame.cancelled():
            self._batch.fail(ClientError("cancelled", "cancelled"), taken)
        elif (err := frame.exception()) is not None:
            self._batch.fail(err, taken)
        else:
            self._batch.resolve(taken, frame.result().offset)
        self._fill()

    # --- plumbing ----------------------------------------------------------------------------

    def _submit(self, msg: Request) -> _Pending:
        self._next_id += 1
        rid = msg.id = self._next_id
        pending = _Pending(msg, asyncio.get_running_loop().create_future())
        self._unacked[rid] = pending
        pending.fut.add_done_callback(lambda _: self._unacked.pop(rid, None))
        self._wake.set()
        return pending

    async def _request(self, msg: Request) -> m.Ack:
        if self._refusal is not None:
            raise self._refusal
        return await self._submit(msg).fut

    async def _pump(self) -> None:
        """The one sender: every unanswered request goes out once per connection, in id order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while (ws := self._ws) is not None and not ws.closed:
                gen = self._gen
                todo = next((p for p in self._unacked.values() if p.gen != gen), None)
                if todo is None:
                    break
                todo.gen = gen
                todo.sends += 1
                try:
                    await ws.send_str(todo.text)
                except (ConnectionError, aiohttp.ClientError, RuntimeError):
                    break  # the reader sees the drop and reconnects; the new generation resends

    async def _connect(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        attempt = 0
        while True:
            try:
                url = _ws_url(self.url, await _current(self.token))
                ws = await self._session.ws_connect(url, heartbeat=20)
                break
            except (aiohttp.ClientError, OSError):
                attempt += 1
                if attempt >= self.max_attempts:
                    raise
                await asyncio.sleep(_backoff(attempt, *self.backoff))
        self._ws = ws
        self._gen += 1
        self._reader = asyncio.create_task(self._read(ws))
        if self._pump_task is None:
            self._pump_task = asyncio.create_task(self._pump())
        self._wake.set()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        refusal: ClientError | None = None
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = m.decode_server(msg.data)
            if isinstance(frame, m.Error) and frame.code in REFUSED:
                refusal = ClientError(frame.code, frame.message)
                if frame.id is None or not callable(self.token):
                    # at connect (no id: close 4401 follows), or a fixed token that expired
                    break
                # a callable token: drop this connection; the reconnect asks for a fresh token and
                # resends every unacknowledged request (this one too) with its original seq
                await ws.close()
                break
            if isinstance(frame, m.Ack):
                self._refusals_in_a_row = 0
                entry = self._unacked.get(frame.id) if isinstance(frame.id, int) else None
                if frame.cancelled:
                    self._set_cancelled()
                if entry and not entry.fut.done():
                    entry.fut.set_result(frame)
            elif isinstance(frame, m.Error):
                entry = self._unacked.get(frame.id) if isinstance(frame.id, int) else None
                if entry and not entry.fut.done():
                    if frame.code == "sequence_error" and entry.sends > 1 and isinstance(entry.msg, m.Append):
                        # A resent append older than the producer's last accepted seq: the hub takes
                        # seqs in order, so it landed before the drop; only its offset is lost.
                        entry.fut.set_result(m.Ack(frame.id, self.stream, -1))
                    else:
                        entry.fut.set_exception(ClientError(frame.code, frame.message))
            elif isinstance(frame, m.CancelRequested) and frame.stream == self.stream:
                self._set_cancelled()
        if refusal is None and ws.close_code in FATAL_CLOSE:
            refusal = ClientError("unauthorized", "the hub refused our token")
        if refusal is not None and (not callable(self.token) or self._refusals_in_a_row >= 2):
            self._refuse(refusal)
            with contextlib.suppress(Exception):
                await ws.close()
            return
        self._refusals_in_a_row = self._refusals_in_a_row + 1 if refusal is not None else 0
        # connection lost: reconnect and resend everything unacknowledged, same seqs
        self.reconnects += 1
        self._tasks.spawn(self._reconnect())

    async def _reconnect(self) -> None:
        async with self._lock:
            try:
                await self._connect()
            except Exception as e:
                for p in list(self._unacked.values()):
                    if not p.fut.done():
                        p.fut.set_exception(ClientError("unavailable", f"cannot reconnect: {e}"))

    def _refuse(self, err: ClientError) -> None:
        """The hub will not take our token: fail everything pending with its reason, send nothing more."""
        self._refusal = err
        for p in list(self._unacked.values()):
            if not p.fut.done():
                p.fut.set_exception(err)

    def _set_cancelled(self) -> None:
        if not self.cancel_event.is_set():
            self.cancel_event.set()
            if self.on_cancel is not None:
                self._tasks.spawn(self.on_cancel())


class Subscriber:
    """Async iterator over a stream's chunks, from ``from_`` on, surviving reconnects.

    ``wait_s``: how long to wait for a stream that does not exist yet (a page that subscribes before
    the producer created it); 0 raises ``stream_not_found`` at once. ``on_reset(epoch)``: called when
    the hub reset the stream (delivery then starts again at 0, so drop what you showed); without it
    a reset raises ``StreamReset``."""

    def __init__(
        self,
        url: str,
        stream: str,
        *,
        from_: int = 0,
        token: Token = None,
        wait_s: float = 0.0,
        on_reset: Callable[[str], None] | None = None,
        coalesce_ms: float = 0.0,
        backoff: tuple[float, float] = (0.05, 2.0),
        max_attempts: int = 50,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.token = token
        self.wait_s = wait_s
        self.on_reset = on_reset
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
        refused = 0
        wait_until = time.monotonic() + self.wait_s
        try:
            while self.status is None:
                try:
                    url = _ws_url(self.url, await _current(self.token))
                    async with session.ws_connect(url, heartbeat=20) as ws:
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
                                if self.on_reset is None:
                                    raise StreamReset(self.stream, f.epoch)
                                self.epoch, self.offset = f.epoch, 0
                                self.on_reset(f.epoch)
                            elif isinstance(f, m.End):
                                self.status, self.error = f.status, f.error
                                return
                            elif isinstance(f, m.Error):
                                if f.code == "stream_not_found" and time.monotonic() < wait_until:
                                    # not created yet: ask again shortly, on the same connection
                                    await asyncio.sleep(min(0.2, max(0.0, wait_until - time.monotonic())))
                                    await ws.send_str(m.encode(sub))
                                    continue
                                if f.code in REFUSED and callable(self.token) and refused < 2:
                                    refused += 1
                                    break  # reconnect with a fresh token
                                raise ClientError(f.code, f.message)
                        if ws.close_code in FATAL_CLOSE and not (callable(self.token) and 0 < refused < 3):
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
