"""Background tasks that are owned: kept referenced until done (the event loop holds only weak
references, so an unreferenced task can be garbage-collected mid-flight), and cancelled together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class TaskSet:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)
        return t

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel(self) -> None:
        for t in list(self._tasks):
            t.cancel()

    async def aclose(self) -> None:
        """Cancel every task and wait until each has finished."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
