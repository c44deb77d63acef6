"""Callbacks by key (cancel listeners per stream, watchers per chat): the one ``dict[key, set[cb]]``.

A key with no callbacks left is removed, so a registry holds nothing for streams nobody watches.
``emit`` calls over a copy, so a callback may unregister itself (or others) while being called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")


class Registry(Generic[K]):
    def __init__(self) -> None:
        self._by_key: dict[K, set[Callable[..., Any]]] = {}

    def add(self, key: K, cb: Callable[..., Any]) -> None:
        self._by_key.setdefault(key, set()).add(cb)

    def discard(self, key: K, cb: Callable[..., Any]) -> None:
        cbs = self._by_key.get(key)
        if cbs is not None:
            cbs.discard(cb)
            if not cbs:
                del self._by_key[key]

    def pop(self, key: K) -> set[Callable[..., Any]]:
        """Forget the key; its callbacks are returned (for a last word to each)."""
        return self._by_key.pop(key, set())

    def has(self, key: K) -> bool:
        return key in self._by_key

    def emit(self, key: K, *args: Any) -> int:
        """Call every callback of ``key``; how many there were."""
        cbs = self._by_key.get(key)
        if not cbs:
            return 0
        for cb in list(cbs):
            cb(*args)
        return len(cbs)

    def __len__(self) -> int:
        return len(self._by_key)
