"""The service API without a server: a real Hub on a real file engine in a tmp dir, called directly,
as every transport calls it. Storage errors come out as the hub's errors; counters and hooks see
each operation once; a failing hook fails nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hub.core.auth import Auth
from hub.core.config import Config
from hub.core.errors import HubError
from hub.core.service import Hub


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(Config(data_dir=tmp_path / "data", fsync="never", max_chunk_bytes=16), Auth(None, "admin"))
    await h.start()
    yield h
    await h.stop()


async def test_append_close_read_and_the_counters_and_hooks(hub: Hub) -> None:
    seen: list[tuple[str, Any]] = []
    hub.hooks.appended.append(lambda sid, res: seen.append(("appended", (sid, res.offset, res.count))))
    hub.hooks.closed.append(lambda sid, status, err: seen.append(("closed", (sid, status, err))))

    def broken(*_: Any) -> None:
        raise RuntimeError("a buggy analytics hook")

    hub.hooks.appended.insert(0, broken)
    res = await hub.append("s", [b"a", b"b"], "p", 1, create=True)
    again = await hub.append("s", [b"a", b"b"], "p", 1)  # a retry: acknowledged, not counted, no hook
    assert (res.offset, res.count, again.duplicate) == (0, 2, True)
    await hub.append("s", [b"c"], "p", 2)
    await hub.close("s", "error", "boom")
    assert await hub.read("s", 1) == [b"b", b"c"]
    assert (hub.counters.appends, hub.counters.appended_chunks) == (2, 3)
    assert seen == [("appended", ("s", 0, 2)), ("appended", ("s", 2, 1)), ("closed", ("s", "error", "boom"))]


async def test_storage_errors_come_out_as_hub_errors(hub: Hub) -> None:
    cases = [
        (hub.get("nope"), "stream_not_found", 404),
        (hub.append("nope", [b"x"]), "stream_not_found", 404),
        (hub.create("bad\x00id", exist_ok=True), "invalid_stream_id", 400),
    ]
    for coro, code, status in cases:
        with pytest.raises(HubError) as e:
            await coro
        assert (e.value.code, e.value.status) == (code, status)
    await hub.create("c")
    await hub.close("c")
    with pytest.raises(HubError) as e:
        await hub.append("c", [b"late"])
    assert (e.value.code, e.value.status, e.value.stream) == ("stream_closed", 409, "c")
    await hub.delete("c")
    with pytest.raises(HubError) as e:
        await hub.get("c")
    assert (e.value.code, e.value.status) == ("stream_gone", 410)


async def test_the_chunk_limit_is_checked_once_for_everyone(hub: Hub) -> None:
    with pytest.raises(HubError) as e:
        await hub.append("big", [b"ok", b"x" * 17], create=True)
    assert (e.value.code, e.value.status) == ("chunk_too_large", 413)
    assert not await hub.exists("big")  # refused before anything was created or written


async def test_cancel_reaches_the_producer_once_and_ends_with_the_stream(hub: Hub) -> None:
    told: list[str] = []
    await hub.create("job")
    hub.watch_cancel("job", told.append)
    assert await hub.cancel("job") is True and told == ["job"]
    assert "job" in hub.cancel_requested and hub.counters.cancels == 1
    await hub.close("job", "cancelled")
    assert "job" not in hub.cancel_requested
    assert await hub.cancel("job") is False  # ended: nobody to tell, nothing counted
    assert hub.counters.cancels == 1


async def test_watch_sees_every_lifecycle_event_once(hub: Hub) -> None:
    seen: list[tuple[str, str]] = []

    def broken(_: object) -> None:
        raise RuntimeError("a buggy watcher")

    hub.watch(created=broken, ended=broken, deleted=broken)
    hub.watch(
        created=lambda s: seen.append(("created", s.id)),
        ended=lambda s: seen.append(("ended", s.id)),
        deleted=lambda sid: seen.append(("deleted", sid)),
    )
    await hub.append("w", [b"x"], create=True)
    await hub.fork("w", "w2")
    await hub.close("w")
    await hub.delete("w")
    assert seen == [("created", "w"), ("created", "w2"), ("ended", "w"), ("deleted", "w")]
    assert "w" not in hub.resume_counts and len(hub.cancel_listeners) == 0  # per-stream state went too
