"""Durable Streams forks: a fork is a copy of its source's prefix (same offsets), and the fork graph
(kept in memory, rebuilt from the streams' ``ds.*`` labels at start-up) lets a deleted source stay
"soft-deleted" (410) until its last fork goes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from hub.core.errors import HubError
from hub.core.service import Hub
from hub.protocols.durable.state import Durable
from hub.protocols.durable.wire import SOFT_DELETED, DSError
from storage import StreamHandle


def on_delete(hub: Hub, ds: Durable, sid: str) -> None:
    """A stream went (DELETE or expiry): drop it from the fork graph and collect a soft-deleted
    source whose last fork this was (and so on up the chain)."""
    src = ds.parents.pop(sid, None)
    children = ds.forks.get(src) if src is not None else None
    if src is not None and children is not None:
        children.discard(sid)
        if not children:
            del ds.forks[src]
            ds.tasks.spawn(collect(hub, ds, src))


async def collect(hub: Hub, ds: Durable, sid: str) -> None:
    async with ds.lock(sid):  # deletes and creates of one id never overlap (see create)
        with contextlib.suppress(HubError):
            if (await hub.get(sid)).meta.labels.get(SOFT_DELETED):
                await hub.delete(sid)


def fork_offset(src: StreamHandle, raw: int | str | None) -> int:
    tail = src.next_offset
    if raw is None or raw == "now":
        return tail
    if raw == "-1":
        return 0
    assert isinstance(raw, int)
    if raw > tail:
        raise DSError("invalid_offset", f"fork offset {raw} is past the source's tail ({tail})")
    return raw


@dataclass(frozen=True)
class ForkPlan:
    """What a fork starts with: the source's chunks ``[0, end)``, then ``partial`` (the first bytes
    of the chunk at ``end``, for a binary sub-offset)."""

    source: StreamHandle
    end: int
    partial: bytes | None

    async def copy_into(self, hub: Hub, fork: StreamHandle) -> None:
        pos = 0
        while pos < self.end:  # one ~4 MiB batch in memory at a time
            got = await hub.read(self.source, pos, min(4096, self.end - pos), 4 << 20)
            if not got:
                raise DSError("storage_error", f"the fork source ends at {pos}, before {self.end}")
            await hub.append(fork, got)
            pos += len(got)
        if self.partial:
            await hub.append(fork, [self.partial])


async def fork_plan(hub: Hub, src: StreamHandle, off: int, sub: int, json_mode: bool) -> ForkPlan:
    """Everything before ``off``, then ``sub`` more messages (JSON) or the first ``sub`` bytes of
    the chunk at ``off`` (anything else)."""
    if not sub:
        return ForkPlan(src, off, None)
    if json_mode:
        if off + sub > src.next_offset:
            raise DSError("invalid_offset", f"sub-offset {sub} is past the messages at the fork offset")
        return ForkPlan(src, off + sub, None)
    if off >= src.next_offset:
        raise DSError("invalid_offset", f"sub-offset {sub} is past the data at the fork offset")
    first = (await hub.read(src, off, 1))[0]
    if sub > len(first):
        raise DSError("invalid_offset", f"sub-offset {sub} is past the {len(first)}-byte message")
    return ForkPlan(src, off, first[:sub])
