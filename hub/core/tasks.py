"""Background tasks that are owned: kept referenced until done (the event loop holds only weak
references, so an unreferenced task can be garbage-collected mid-flight), and cancelled together.

The set is created by the first ``spawn``: every WebSocket connection has a TaskSet, most never use it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] | None = None

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        t = asyncio.ensure_future(coro)
        if self._tasks is None:
            self._tasks = set()
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def __len__(self) -> int:
        return len(self._tasks or ())

    def cancel(self) -> None:
        for t in list(self._tasks or ()):
            t.cancel()

    async def aclose(self) -> None:
        """Cancel every task and wait until each has finished."""
        tasks = list(self._tasks or ())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
