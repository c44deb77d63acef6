"""Python client: an ``HttpProducer`` that appends over the hub's plain HTTP API, pipelined like the
WebSocket ``Producer``, for apps that cannot hold a WebSocket open (serverless functions, proxies).

    async with HttpProducer("http://127.0.0.1:8765", "chat/1/answer") as p:
        async for token in llm():
            if p.cancelled:
                break
            await p.append(token)  # returns at once with a future of the offset
    # leaving the block waits for every append to be durable, then closes the stream: done,
    # cancelled (a reader asked to stop), or error if the block raised

Requests: ``PUT /streams/{id}`` creates, ``POST /streams/{id}`` appends ``{"data": [...]}`` with
``Producer-Id`` / ``Producer-Seq`` headers, ``POST /streams/{id}/close`` closes,
``POST /streams/{id}/heartbeat`` renews the producer lease while nothing is appended.

Invariants:

* One append request in flight at a time: the hub takes a producer's seqs in order (a later seq
  before an earlier one is ``sequence_gap``), and HTTP requests on separate connections could
  overtake each other. Tokens appended while a request is in flight wait in a batch that goes out as
  the next request (one chunk per token, or coalesced), so throughput is bound by round trips per
  *batch*, not per token.
* A request that failed in transit (connection dropped, 502/503/504) is sent again with its ORIGINAL seq and
  body: the hub answers a retry of an append that already landed as ``duplicate`` with its original
  offset, so nothing is written twice and nothing acknowledged is lost.
* ``cancelled`` comes from the append answers' ``cancelled`` flag (and the heartbeat's stream status).

Tokens: ``token`` is a string or a callable (sync or async) returning one, called for every request,
so an app can hand out short-lived tokens; a refused token (``unauthorized`` / ``token_expired``) is
asked for once more when ``token`` is a callable, else it ends the producer with a ``ClientError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec

from hub.client.batch import Batch
from hub.client.websocket import (
    REFUSED,
    ClientError,
    Token,
    _backoff,
    _BatchingProducer,
    _current,
)
from hub.core.tasks import TaskSet
from hub.protocols.native import messages as m


class _Retry(Exception):
    """The request may not have reached the hub, or its answer was lost: send it again, same body."""


class HttpProducer(_BatchingProducer):
    """Appends to one stream over HTTP: ``append`` returns at once with a future of the offset.

    ``coalesce_ms`` / ``coalesce_tokens`` merge tokens into larger chunks (flushed every N ms or N
    tokens). ``heartbeat_s`` renews the producer lease when no request went out for that long (set
    it below the hub's ``producer_lease_s`` for a model that may think long between tokens).
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
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
        coalesce_ms: float = 0.0,
        coalesce_tokens: int = 0,
        max_batch: int = 1024,
        heartbeat_s: float | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.stream = stream
        self.token = token
        self.producer_id = producer_id or uuid.uuid4().hex
        self.ttl = ttl
        self.labels = labels
        self.on_cancel = on_cancel
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.coalesce_ms = coalesce_ms
        self.coalesce_tokens = coalesce_tokens
        self.max_batch = max_batch
        self.heartbeat_s = heartbeat_s
        self.cancel_event = asyncio.Event()
        self.seq = 0
        self.retries = 0  # requests sent again after a failure in transit
        self.requests_sent = 0  # append requests (first sends, not retries); ``seq`` counts them too
        self.appended = 0  # chunks given to ``append``
        self._own_session = session is None
        self._session = session
        self._path = f"{self.url}/streams/{quote(stream, safe='/')}"
        self._tasks = TaskSet()  # on_cancel callbacks, kept referenced until done
        self._pump_task: asyncio.Task[None] | None = None
        self._beat_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._batch = Batch(max_batch, coalesce_ms, coalesce_tokens, on_due=self._wake.set)
        self._inflight = False
        self._idle = asyncio.Event()  # nothing batched and nothing in flight
        self._idle.set()
        self._closed = False
        self._started = False
        self._last_request = time.monotonic()

    def _refused(self) -> bool:
        return isinstance(self._failed, ClientError) and self._failed.code in REFUSED

    def _kick(self) -> None:
        self._wake.set()

    async def _send_close(self, status: m.CloseStatus, error: str | None) -> None:
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error
        await self._call("POST", f"{self._path}/close", body)

    async def start(self) -> HttpProducer:
        """Create the stream (``async with`` does it)."""
        if not self._started:
            self._started = True
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=self.timeout)
            body: dict[str, Any] = {}
            if self.ttl is not None:
                body["ttl"] = self.ttl
            if self.labels:
                body["labels"] = self.labels
            try:
                await self._call("PUT", self._path, body)
            except BaseException:
                await self.aclose()
                raise
            self._pump_task = asyncio.create_task(self._pump())
            if self.heartbeat_s:
                self._beat_task = asyncio.create_task(self._beat())
        return self

    async def __aenter__(self) -> HttpProducer:
        return await self.start()

    async def aclose(self) -> None:
        await self._tasks.aclose()
        self._batch.cancel_timer()
        for t in (self._pump_task, self._beat_task):
            if t:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        if self._own_session and self._session is not None:
            await self._session.close()

    async def append(self, data: str | list[str]) -> asyncio.Future[int]:
        """Queue one chunk (or several) and return at once with a future of its first offset,
        resolved when the hub says it is durable. Waits only when ``max_batch`` tokens are queued.
        Raises the error of an earlier append that failed. Empty data is skipped, without a seq:
        its future gives the next offset once all before it landed."""
        if self._failed is not None:
            raise self._failed
        if not self._started:
            raise RuntimeError("start the HttpProducer first (async with, or await start())")
        if data in ("", []):
            return self._tasks.spawn(self._offset_when_idle())
        fut = await self._batch.add(data)
        self.appended += 1 if isinstance(data, str) else len(data)
        self._idle.clear()
        self._wake.set()
        return fut

    async def heartbeat(self) -> None:
        """Renew the producer lease without appending (the hub ends a silent producer's stream)."""
        ans = await self._call("POST", f"{self._path}/heartbeat", {})
        if ans.get("status") == "cancelled":
            self._set_cancelled()

    # --- batching ----------------------------------------------------------------------------

    async def _pump(self) -> None:
        """The one sender: one append request at a time, so seqs reach the hub in order."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._batch.ready():
                taken = self._batch.take()
                self.seq += 1
                self.requests_sent += 1
                self._inflight = True
                body = msgspec.json.encode({"data": taken.chunks})  # encoded once: a retry is byte-identical
                headers = {"Producer-Id": self.producer_id, "Producer-Seq": str(self.seq)}
                try:
                    ans = await self._call("POST", self._path, body, headers, is_append=True)
                except Exception as e:
                    self._batch.fail(e, taken)
                else:
                    self._batch.resolve(taken, int(ans.get("offset", -1)))
                finally:
                    self._inflight = False
            if not self._batch or self._failed is not None:
                self._idle.set()

    async def _beat(self) -> None:
        assert self.heartbeat_s
        while True:
            await asyncio.sleep(max(0.0, self._last_request + self.heartbeat_s - time.monotonic()))
            if time.monotonic() - self._last_request >= self.heartbeat_s:
                with contextlib.suppress(ClientError):
                    await self.heartbeat()

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | bytes,
        headers: dict[str, str] | None = None,
        *,
        is_append: bool = False,
    ) -> dict[str, Any]:
        """One request with retries of the SAME body after a failure in transit; hub errors raise."""
        raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
        attempt = 0
        refused = 0
        while True:
            attempt += 1
            try:
                return await self._send(method, url, raw, headers or {}, retried=attempt > 1 and is_append)
            except _Retry as e:
                if attempt >= self.max_attempts:
                    raise ClientError("unavailable", f"gave up after {attempt} attempts: {e}") from None
                self.retries += 1
                await asyncio.sleep(_backoff(attempt, *self.backoff))
            except ClientError as e:
                if e.code in REFUSED and callable(self.token) and refused < 1:
                    refused += 1  # a short-lived token ran out: ask for a fresh one, same body
                    continue
                raise

    async def _send(
        self, method: str, url: str, raw: bytes, extra: dict[str, str], *, retried: bool
    ) -> dict[str, Any]:
        assert self._session is not None
        headers = {"Content-Type": "application/json", **extra}
        token = await _current(self.token)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._last_request = time.monotonic()
        try:
            async with self._session.request(
                method, url, data=raw, headers=headers, timeout=self.timeout
            ) as r:
                text = await r.read()
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise _Retry(f"{type(e).__name__}: {e}") from None
        if status in (502, 503, 504):  # a proxy without upstream, a hub going away or restarting
            raise _Retry(f"HTTP {status}")
        try:
            ans: dict[str, Any] = msgspec.json.decode(text) if text else {}
        except msgspec.DecodeError:
            raise ClientError("bad_response", f"HTTP {status}: not JSON: {text[:200]!r}") from None
        if status >= 400:
            err = ans.get("error") or {}
            code, message = err.get("code", f"http_{status}"), err.get("message", "")
            if code == "sequence_error" and retried:
                # a retry older than the producer's window: the hub takes seqs in order, so it
                # landed before the drop; only its offset is lost
                return {"offset": -1}
            raise ClientError(code, message)
        if ans.get("cancelled"):
            self._set_cancelled()
        return ans

    def _set_cancelled(self) -> None:
        if not self.cancel_event.is_set():
            self.cancel_event.set()
            if self.on_cancel is not None:
                self._tasks.spawn(self.on_cancel())
