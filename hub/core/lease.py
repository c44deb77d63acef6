"""Producer leases: an open answer whose producer is gone ends, so no reader waits forever.

The I/O-free half of "answers end": it decides *which* open streams are due to be closed and why; the
service closes them (durably, so every reader, now or after a restart, sees the same end) and then calls
``forget``. Reasons are stable error codes, stored as the stream's close error:

- ``producer_lost``: nobody has produced to the stream for ``lease_s``. A producer *holds* a stream
  from its first create or append on a connection until that connection goes (``attach``/``detach``);
  while held it never lapses. An HTTP producer has no connection to hold: each append or heartbeat
  renews the lease for ``lease_s`` (``renew``). A stream found open when the hub starts has no holder
  (a hub restart counts as gone): it gets one lease from the start for its producer to come back.
- ``open_ttl_expired``: the stream has been open for ``open_ttl_s`` since it was created, held or not.

``expire`` at the bottom is the only code here that waits: the service runs it as a task.

Invariants: a stream is due at most once per ``track`` (``due`` forgets what it returns); a held stream
is never due for ``producer_lost``; deadlines use one monotonic clock, injected so tests need no sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

PRODUCER_LOST = "producer_lost"
OPEN_TTL_EXPIRED = "open_ttl_expired"


@dataclass
class _Lease:
    lapses_at: float | None  # None while a producer holds the stream
    ttl_at: float | None  # when open_ttl_s runs out (None: no open TTL)
    holders: set[Hashable] = field(default_factory=set)
    scheduled: float | None = None  # the time of its one live heap entry
    gen: int = 0  # bumped when that entry is replaced, so the old one is skipped


class Leases:
    def __init__(
        self,
        lease_s: float | None,
        open_ttl_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_s = lease_s
        self.open_ttl_s = open_ttl_s
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        self._held: dict[Hashable, set[str]] = {}
        self._heap: list[tuple[float, int, str]] = []

    @property
    def enabled(self) -> bool:
        return self.lease_s is not None or self.open_ttl_s is not None

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._leases

    def __len__(self) -> int:
        return len(self._leases)

    # --- the service's hooks --------------------------------------------------------------------

    def track(self, stream_id: str, age_s: float = 0.0) -> None:
        """An open stream: created now (``age_s`` 0) or found open at start (``age_s`` since it was
        created). Its lease starts now; its open TTL counts from its creation."""
        if not self.enabled or stream_id in self._leases:
            return
        now = self.clock()
        ttl_at = now - age_s + self.open_ttl_s if self.open_ttl_s is not None else None
        self._leases[stream_id] = lease = _Lease(self._lapse(now), ttl_at)
        self._schedule(stream_id, lease)

    def attach(self, stream_id: str, holder: Hashable) -> None:
        """``holder`` (a connection) produced to the stream: it holds the stream until ``detach``."""
        lease = self._leases.get(stream_id)
        if lease is None or holder in lease.holders:
            return
        lease.holders.add(holder)
        self._held.setdefault(holder, set()).add(stream_id)
        lease.lapses_at = None  # its heap entry, if any, finds nothing due and reschedules

    def held_by(self, stream_id: str, holder: Hashable) -> bool:
        lease = self._leases.get(stream_id)
        return lease is not None and holder in lease.holders

    def detach(self, holder: Hashable) -> None:
        """``holder`` is gone: each stream it was the last holder of gets one lease to be taken up."""
        now = self.clock()
        for sid in self._held.pop(holder, ()):
            lease = self._leases.get(sid)
            if lease is None:
                continue
            lease.holders.discard(holder)
            if not lease.holders:
                lease.lapses_at = self._lapse(now)
                self._schedule(sid, lease)

    def renew(self, stream_id: str) -> None:
        """An append or heartbeat from a producer without a held connection (HTTP)."""
        lease = self._leases.get(stream_id)
        if lease is None or lease.holders:
            return
        lease.lapses_at = self._lapse(self.clock())
        self._schedule(stream_id, lease)

    def forget(self, stream_id: str) -> None:
        """The stream ended or was deleted."""
        lease = self._leases.pop(stream_id, None)
        if lease is None:
            return
        for h in lease.holders:
            held = self._held.get(h)
            if held is not None:
                held.discard(stream_id)
                if not held:
                    del self._held[h]

    def due(self) -> list[tuple[str, str]]:
        """``(stream, reason)`` for every stream whose lease or open TTL has run out; forgotten here."""
        now = self.clock()
        out: list[tuple[str, str]] = []
        while self._heap and self._heap[0][0] <= now:
            _, gen, sid = heapq.heappop(self._heap)
            lease = self._leases.get(sid)
            if lease is None or lease.gen != gen:
                continue  # superseded by an earlier deadline
            lease.scheduled = None
            if lease.ttl_at is not None and lease.ttl_at <= now:
                out.append((sid, OPEN_TTL_EXPIRED))
            elif lease.lapses_at is not None and lease.lapses_at <= now:
                out.append((sid, PRODUCER_LOST))
            else:
                self._schedule(sid, lease)  # renewed or held since this entry was made
                continue
            self.forget(sid)
        return out

    def next_due(self) -> float | None:
        """Seconds until the earliest possible ``due`` result (None: nothing tracked will lapse)."""
        while self._heap:
            at, gen, sid = self._heap[0]
            lease = self._leases.get(sid)
            if lease is not None and lease.gen == gen:
                return max(0.0, at - self.clock())
            heapq.heappop(self._heap)
        return None

    # --- internals ------------------------------------------------------------------------------

    def _lapse(self, now: float) -> float | None:
        return now + self.lease_s if self.lease_s is not None else None

    def _schedule(self, stream_id: str, lease: _Lease) -> None:
        """Keep one heap entry per stream, at or before its next deadline. A later deadline (a renewal)
        leaves the entry alone: when it pops, it reschedules. So a busy HTTP producer renewing on
        every append costs no heap growth."""
        times = [t for t in (lease.lapses_at, lease.ttl_at) if t is not None]
        if not times:
            return
        at = min(times)
        if lease.scheduled is not None and lease.scheduled <= at:
            return
        lease.gen += 1
        lease.scheduled = at
        heapq.heappush(self._heap, (at, lease.gen, stream_id))


# --- the one part that waits ---------------------------------------------------------------------


async def expire(
    leases: Leases, close: Callable[[str, str], Awaitable[None]], max_wait_s: float = 1.0
) -> None:
    """Run until cancelled: close every stream as it comes due, with its reason. ``close`` must be
    idempotent for a stream that ended meanwhile (its producer closed it in the same instant).
    Wakes at the earliest deadline, and at least every ``max_wait_s`` (a lease taken out after
    the sleep began may be due before it ends)."""
    while True:
        wait = leases.next_due()
        await asyncio.sleep(min(max_wait_s, wait) if wait is not None else max_wait_s)
        for stream_id, reason in leases.due():
            await close(stream_id, reason)
