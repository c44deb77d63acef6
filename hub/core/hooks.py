"""Observers of the service API: where analytics (or anything else that watches traffic) plugs in,
once, for every transport, and where the stream lifecycle (created, ended, deleted, whichever hub or
expiry caused it) reaches chats and protocols. Hooks run after the fact, synchronously and in order;
a hook that raises is logged and skipped, never allowed to fail the operation or the other hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage import AppendResult, StreamHandle

log = logging.getLogger("hub.hooks")


@dataclass
class Hooks:
    appended: list[Callable[[str, AppendResult], None]] = field(default_factory=list)  # not duplicates
    closed: list[Callable[[str, str, str | None], None]] = field(default_factory=list)  # id, status, error
    subscribed: list[Callable[[str, int], None]] = field(default_factory=list)  # id, from offset
    cancel_requested: list[Callable[[str], None]] = field(default_factory=list)
    # the lifecycle, from the engine's events: a stream was created (or forked), its end became
    # durable, it was deleted or expired
    created: list[Callable[[StreamHandle], None]] = field(default_factory=list)
    ended: list[Callable[[StreamHandle], None]] = field(default_factory=list)
    deleted: list[Callable[[str], None]] = field(default_factory=list)

    @staticmethod
    def emit(hooks: list[Callable[..., None]], *args: Any) -> None:
        if not hooks:  # ``appended`` is emitted per append, and usually nobody listens
            return
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                log.exception("hook %r failed", hook)
