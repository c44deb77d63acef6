"""Positions in a stream, as every protocol spells them. No I/O.

An offset is a chunk number: 0, 1, 2, ... dense per stream. Offsets (and producer sequence numbers)
travel through JavaScript numbers, so they stop at 2^53 - 1. ``Offset`` carries that range in the type,
for msgspec to check while decoding; ``parse_uint`` is the one parser of decimal offsets and counts in
URLs and headers (strict: ``"+1"``, ``" 1"``, ``"01"`` and ``"1_0"`` are refused, as Durable Streams
requires, where Python's ``int()`` would take them).
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

from hub.core.errors import HubError

MAX_OFFSET = (1 << 53) - 1

Offset = Annotated[int, msgspec.Meta(ge=0, le=MAX_OFFSET)]

_UINT = re.compile(r"0|[1-9][0-9]*")


def parse_uint(raw: str, name: str, code: str = "bad_request", limit: int = MAX_OFFSET) -> int:
    if not _UINT.fullmatch(raw) or int(raw) > limit:
        raise HubError(code, f"{name} must be an integer between 0 and {limit}, not {raw[:40]!r}")
    return int(raw)
