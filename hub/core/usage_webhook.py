"""The usage webhook (``--usage-webhook URL``): one JSON ``UsageRecord`` POSTed per answer that ends.

Invariants: ``submit`` never waits and never fails (the hub's hot path calls it); the queue is bounded
(``max_queue``): when the receiver is down long enough to fill it, the oldest record is dropped and
counted, so memory stays bounded. One background task POSTs in order, retrying a failure (network,
timeout, 5xx, 408, 429) with exponential backoff and jitter up to ``attempts`` times; any other 4xx is
the receiver refusing the record, never retried. Each POST carries ``Idempotency-Key: <record id>`` so a
receiver can drop a retried duplicate, and with a secret an ``X-Rhub-Signature: sha256=<hex HMAC of the
body>``. Logs name the receiver by scheme, host and path only: credentials in the URL (user info, a
query token) and the secret are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
from collections import deque

import aiohttp
import msgspec
from yarl import URL

from hub.core.analytics import UsageRecord
from hub.core.signal import Signal

log = logging.getLogger("hub.usage")


def safe_url(url: str) -> str:
    """The URL without user info and query: what a log line may show."""
    try:
        u = URL(url)
        return str(u.with_user(None).with_query(None).with_fragment(None))
    except (ValueError, TypeError):
        return "<unparsable url>"


class UsageWebhook:
    def __init__(
        self,
        url: str,
        secret: str | None = None,
        *,
        max_queue: int = 1000,
        attempts: int = 6,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
        timeout: float = 10.0,
    ) -> None:
        self.url, self.secret = url, secret
        self.max_queue, self.attempts = max_queue, attempts
        self.base_delay, self.max_delay, self.timeout = base_delay, max_delay, timeout
        self._q: deque[UsageRecord] = deque()
        self._ready = Signal()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.sent = 0
        self.failed = 0  # gave up on (refused, or out of attempts)
        self.dropped = 0  # pushed out of a full queue
        self.retries = 0
        self._busy = False  # a record is being sent (it stays first in the queue until done)

    def submit(self, rec: UsageRecord) -> None:
        if len(self._q) >= self.max_queue:
            self._q.popleft()
            self.dropped += 1
        self._q.append(rec)
        self._ready.set()

    @property
    def queued(self) -> int:
        return len(self._q)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "resumable-hub usage webhook"},
        )
        self._task = asyncio.create_task(self._run())

    async def stop(self, drain_s: float = 2.0) -> None:
        """Give the queue ``drain_s`` to go out, then stop (what is left is lost, and logged)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_s):
                while self._q or self._busy:
                    await asyncio.sleep(0.02)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._q:
            log.warning("usage webhook %s: %d records not sent at shutdown", safe_url(self.url), len(self._q))
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            while not self._q:
                self._ready.clear()
                await self._ready.wait()
            rec = self._q[0]
            self._busy = True
            try:
                await self._deliver(rec)
            finally:
                self._busy = False
            if self._q and self._q[0] is rec:
                self._q.popleft()

    async def _deliver(self, rec: UsageRecord) -> None:
        assert self._session is not None
        body = msgspec.json.encode(rec)
        headers = {"Content-Type": "application/json", "Idempotency-Key": rec.id}
        if self.secret:
            sig = hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            headers["X-Rhub-Signature"] = f"sha256={sig}"
        why = ""
        for attempt in range(self.attempts):
            if attempt:
                self.retries += 1
                delay = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: receivers back up together
            try:
                async with self._session.post(self.url, data=body, headers=headers) as r:
                    await r.read()
                    if 200 <= r.status < 300:
                        self.sent += 1
                        return
                    why = f"HTTP {r.status}"
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        break  # refused: sending it again would be refused again
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                why = type(e).__name__
        self.failed += 1
        log.warning("usage webhook %s: record %s not delivered (%s)", safe_url(self.url), rec.stream, why)
