"""Cyclic garbage collection for a long-running hub that holds thousands of connections.

Why: CPython (3.11-3.13) collects its oldest generation by scanning every tracked object at once. A
hub with 10,000 WebSocket connections holds ~900,000 of them (aiohttp's request handler, transport,
parser, tasks and coroutine frames: ~90 per connection), so one full collection stops the event loop
for ~0.45 s on a 2-core machine, and no chunk is delivered meanwhile. CPython runs one whenever a
quarter as many objects as the old generation holds have been promoted into it since the last: with
steady traffic (frames and futures that happen to be alive when a younger collection runs), every
15-30 s. Measured with ``python -m bench.load --connections 10000``: a 450 ms full collection set
the fast subscribers' p99 (bench/RESULTS.md).

What: after each collection of the middle (or oldest) generation, its survivors are frozen
(``gc.freeze()``: moved to a generation no collection scans). Young collections work as before, and
objects freed by their reference count (nearly all of them) leave the frozen set as usual. The cost:
a reference cycle that becomes garbage after being frozen waits for the next thaw. Such garbage comes
from what ends (a closed connection leaves ~30 objects in cycles: tasks, futures, exceptions with
their tracebacks; an ended stream a few), not from traffic, so the thaw is counted in endings, with
CPython's own 25 % rule: once the connections and streams ended since the last full collection reach
a quarter of those alive at it (at least ``min_ended``), or ``max_age_s`` after it if anything ended at
all, the set is unfrozen and collected once. A heap that only grows (thousands of tabs connecting) or carries
steady traffic is never scanned whole; under heavy churn full collections come about as often as
CPython's own; waiting garbage stays below ~a quarter of what churned.

Process-wide, like the collector itself: installed by the ``serve`` command, never by ``make_app``
(tests run many hubs in one process). ``--no-gc-freeze`` leaves CPython's defaults alone.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any

CHECK_S = 5.0  # how often the endings are counted
RATIO = 0.25  # thaw once endings since the last full collection reach this share of the living
MIN_ENDED = 1_000  # ...and at least this many: a small heap is cheap to scan, but not free
MAX_AGE_S = 900.0  # and in any case this long after the last full collection, if anything ended


class GcPolicy:
    """Freeze survivors of middle-generation collections; thaw and collect after enough endings.

    ``ended()`` counts connections and streams ended so far (monotonic); ``alive()`` those alive."""

    def __init__(
        self,
        ended: Callable[[], int],
        alive: Callable[[], int],
        check_s: float = CHECK_S,
        ratio: float = RATIO,
        min_ended: int = MIN_ENDED,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.ended, self.alive = ended, alive
        self.check_s, self.ratio, self.min_ended, self.max_age_s = check_s, ratio, min_ended, max_age_s
        self.ended_at_full = 0  # ended() at the last full collection
        self.alive_at_full = 0
        self.full_at = time.monotonic()
        self.frozen = 0  # objects frozen right after the last full collection
        self.thaws = 0
        self.last_full_ms = 0.0
        self.max_full_ms = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Right after a generation-1 or -2 collection the younger generations are empty, so this
        # freezes exactly the objects that have just survived it.
        if phase == "stop" and info["generation"] >= 1:
            gc.freeze()

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._full()  # everything alive at start (modules, the app) is frozen by the callback

    def uninstall(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        gc.unfreeze()

    def due(self, now: float) -> bool:
        new = self.ended() - self.ended_at_full
        if new <= 0:
            return False
        return (
            new >= max(self.min_ended, self.ratio * self.alive_at_full) or now - self.full_at > self.max_age_s
        )

    def _full(self) -> None:
        t0 = time.perf_counter()
        gc.unfreeze()
        gc.collect()  # with the callback installed, it freezes the survivors again
        self.last_full_ms = (time.perf_counter() - t0) * 1000
        self.max_full_ms = max(self.max_full_ms, self.last_full_ms)
        self.full_at = time.monotonic()
        self.ended_at_full, self.alive_at_full = self.ended(), self.alive()
        self.frozen = gc.get_freeze_count()

    def check(self) -> bool:
        """Thaw and collect the frozen set if enough ended since the last time. True if it did."""
        if not self.due(time.monotonic()):
            return False
        self._full()
        self.thaws += 1
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            self.check()

    def stats(self) -> dict[str, float | int]:
        return {
            "gc_frozen_objects": self.frozen,
            "gc_thaws": self.thaws,
            "gc_last_full_ms": round(self.last_full_ms, 2),
            "gc_max_full_ms": round(self.max_full_ms, 2),
        }
