"""A producer's batch: tokens appended but not sent yet, with the future each ``append`` call got.

Shared by the WebSocket and the HTTP producers, and free of I/O: a producer's sender calls
``take()`` when it may send one more request, sends ``Taken.chunks`` with the next seq, then
``resolve``s what it took with the hub's first offset, or ``fail``s the batch. Invariants: tokens
leave in the order they were appended; every future resolves exactly once (its offset, -1 when the
hub could only say the append had landed, or the error that ended the producer); after a failure
nothing more is taken and every later ``add`` raises that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def _retrieved(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # an append nobody awaited must not log "exception was never retrieved"


@dataclass(slots=True)
class Taken:
    """One request's worth: its chunks, and the futures it resolves (each at ``where`` in chunks)."""

    chunks: list[str]
    futs: list[asyncio.Future[int]]
    where: list[int]


@dataclass(slots=True)
class Batch:
    max_batch: int
    coalesce_ms: float  # merge tokens into chunks, sent at least this often (0: as they come)
    coalesce_tokens: int  # ... or once this many are waiting (0: no count)
    on_due: Callable[[], None]  # the coalescing timer fired: the owner wakes its sender
    tokens: list[str] = field(default_factory=list)
    futs: list[tuple[int, asyncio.Future[int]]] = field(default_factory=list)  # (first token, future)
    due: bool = False  # the timer fired or a flush asked: send even a short batch
    failed: BaseException | None = None
    next_offset: int = 0  # as far as the hub's answers tell
    _timer: asyncio.TimerHandle | None = None
    _room: asyncio.Event = field(default_factory=asyncio.Event)  # set while below max_batch

    def __post_init__(self) -> None:
        self._room.set()

    def __len__(self) -> int:
        return len(self.tokens)

    async def add(self, data: str | list[str]) -> asyncio.Future[int]:
        """Queue ``data``; waits only while ``max_batch`` tokens are queued. Raises the failure."""
        while self.failed is None and len(self.tokens) >= self.max_batch:
            self._room.clear()
            await self._room.wait()
        if self.failed is not None:
            raise self.failed
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieved)
        self.futs.append((len(self.tokens), fut))
        self.tokens.extend([data] if isinstance(data, str) else data)
        if self.coalesce_ms and self._timer is None and not self.due:
            self._timer = asyncio.get_running_loop().call_later(self.coalesce_ms / 1000, self._fire)
        return fut

    def _fire(self) -> None:
        self._timer = None
        self.due = True
        self.on_due()

    def ready(self) -> bool:
        """Something to send now (coalescing holds a short batch back until it is due)."""
        if self.failed is not None or not self.tokens:
            return False
        if not (self.coalesce_ms or self.coalesce_tokens):
            return True
        return self.due or bool(self.coalesce_tokens and len(self.tokens) >= self.coalesce_tokens)

    def take(self) -> Taken:
        """Cut the next request's chunks out of the batch, with the futures it resolves and where."""
        tokens, futs = self.tokens[: self.max_batch], self.futs
        self.tokens = self.tokens[self.max_batch :]
        cut = next((i for i, (first, _) in enumerate(futs) if first >= len(tokens)), len(futs))
        self.futs = [(first - len(tokens), f) for first, f in futs[cut:]]
        futs = futs[:cut]
        if self.coalesce_ms or self.coalesce_tokens:
            size = self.coalesce_tokens or len(tokens)
            chunks = ["".join(tokens[i : i + size]) for i in range(0, len(tokens), size)]
            where = [first // size for first, _ in futs]
        else:
            chunks, where = tokens, [first for first, _ in futs]
        if not self.tokens:
            self.due = False
            self.cancel_timer()
        self._room.set()
        return Taken(chunks, [f for _, f in futs], where)

    def resolve(self, taken: Taken, first: int) -> None:
        """The hub stored ``taken`` from offset ``first`` (-1: landed, offset unknown)."""
        if first >= 0:
            self.next_offset = max(self.next_offset, first + len(taken.chunks))
        for f, i in zip(taken.futs, taken.where, strict=True):
            if not f.done():
                f.set_result(first + i if first >= 0 else -1)

    def fail(self, err: BaseException, taken: Taken | None = None) -> None:
        """The producer cannot go on: ``err`` for what was taken and everything still batched."""
        self.failed = self.failed or err
        for f in (taken.futs if taken else []) + [f for _, f in self.futs]:
            if not f.done():
                f.set_exception(err)
        self.tokens, self.futs = [], []
        self._room.set()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
