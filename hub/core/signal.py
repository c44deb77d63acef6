"""A one-bit signal like ``asyncio.Event``, for objects held by every idle connection.

``asyncio.Event`` allocates a waiter deque in its constructor (760 bytes: CPython allocates a deque's
first 64-slot block up front), and a connection held three that nobody waited on. ``Signal`` holds a
bool, and a future only while someone waits.

Invariants: ``set`` wakes every current waiter and later ``wait`` calls return at once until ``clear``;
``clear`` never drops a waiter: one registered before ``clear`` is woken by the next ``set``; a
cancelled waiter is removed, the others stay.
"""

from __future__ import annotations

import asyncio


class Signal:
    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None  # created by the first wait

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for w in waiters or ():
            if not w.done():
                w.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        # one future per waiter: a cancelled waiter cancels only its own
        w = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [w]
        else:
            self._waiters.append(w)
        try:
            await w
        finally:
            if self._waiters is not None and w in self._waiters:
                self._waiters.remove(w)
                if not self._waiters:
                    self._waiters = None
        return True
