"""Observers of the service API: where analytics (or anything else that watches traffic) plugs in,
once, for every transport. Hooks run after the operation succeeded, synchronously and in order; a
hook that raises is logged and skipped, never allowed to fail the operation or the other hooks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from storage import AppendResult

log = logging.getLogger("hub.hooks")


@dataclass
class Hooks:
    appended: list[Callable[[str, AppendResult], None]] = field(default_factory=list)  # not duplicates
    closed: list[Callable[[str, str, str | None], None]] = field(default_factory=list)  # id, status, error
    subscribed: list[Callable[[str, int], None]] = field(default_factory=list)  # id, from offset
    cancel_requested: list[Callable[[str], None]] = field(default_factory=list)

    @staticmethod
    def emit(hooks: list[Callable[..., None]], *args: Any) -> None:
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                log.exception("hook %r failed", hook)
