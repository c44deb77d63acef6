"""Bounded memory: idle streams leave memory past the LRU bound and come back intact on access;
expiry is driven by a heap of deadlines; tombstones live on disk, not in memory."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from storage import LogOptions, StreamGone, StreamNotFound

SMALL = LogOptions(segment_bytes=4096, block_bytes=1024, seal_level=3)


async def test_idle_streams_are_unloaded_and_reload_intact(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory(max_open_logs=16, log=SMALL)
    expected = {}
    for i in range(300):
        s = await store.create(f"u/{i}")
        chunks = [f"{i}:{k}".encode() for k in range(40)]
        await s.append(chunks)
        if i % 2:
            await s.close("done")
        expected[f"u/{i}"] = chunks
    assert len(store._streams) <= 16 + 16  # busy ones may linger briefly, never all 300
    for sid, chunks in expected.items():
        s = store.get(sid)
        assert s.read(0, 1000) == chunks
        assert s.status == ("done" if int(sid.split("/")[1]) % 2 else "open")
    assert len(store._streams) <= 32
    # a reloaded open stream takes appends at the right offset
    s = store.get("u/0")
    assert (await s.append([b"more"])).offset == 40


async def test_a_listener_keeps_a_stream_loaded(store_factory: Any) -> None:
    store = await store_factory(max_open_logs=4, log=SMALL)
    watched = await store.create("w")

    class L:
        got: list[bytes] = []

        def on_chunks(self, stream: Any, offset: int, chunks: list[bytes]) -> None:
            self.got += chunks

        def on_end(self, stream: Any, info: Any) -> None: ...
        def on_gone(self, stream: Any) -> None: ...

    listener = L()
    watched.listeners.add(listener)
    for i in range(50):
        await store.create(f"other/{i}")
    assert store.get("w") is watched
    await watched.append([b"x"])
    assert listener.got == [b"x"]


async def test_expiry_heap_and_tombstones_on_disk(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory(max_open_logs=8, log=SMALL, tombstone_ttl=100.0)
    for i in range(40):
        s = await store.create(f"t/{i}", ttl=10.0 if i % 2 else None)
        await s.append([b"a"])
        await s.close("done")
    now = time.time()
    assert await store.expire(now=now) == []
    gone = sorted(await store.expire(now=now + 11), key=lambda x: int(x.split("/")[1]))
    assert gone == [f"t/{i}" for i in range(1, 40, 2)]
    with pytest.raises(StreamGone):
        store.get("t/1")
    assert store.get("t/0").read(0) == [b"a"]
    # after a restart the heap is rebuilt from disk, and gone stays gone
    await store.stop()
    again = await store_factory(root=store.root, max_open_logs=8, log=SMALL, tombstone_ttl=100.0)
    with pytest.raises(StreamGone):
        again.get("t/3")
    s = again.get("t/0")
    assert s.read(0) == [b"a"]
    await again.expire(now=now + 200)  # tombstones older than their ttl are swept
    with pytest.raises(StreamNotFound):
        again.get("t/3")
