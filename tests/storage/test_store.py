"""The async Store: group commit under each fsync policy, publishing only durable chunks, retention,
the file-handle LRU, stream ids that look like paths, and disk errors injected at the OS boundary.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL, files_under, read_all

from storage import (
    CloseInfo,
    InvalidStreamId,
    Log,
    LogOptions,
    StorageUnavailable,
    Store,
    Stream,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)
from storage.file.fsyncd import SyncHelper
from storage.file.journal import Journal


class Recorder:
    """A listener that checks, at each callback, that what it is told about is already durable."""

    def __init__(self, synced: dict[Path, int] | None = None) -> None:
        self.chunks: list[tuple[int, list[bytes]]] = []
        self.ends: list[CloseInfo] = []
        self.gone = 0
        self.synced = synced

    def on_chunks(self, stream: Stream, offset: int, chunks: list[bytes]) -> None:
        assert offset + len(chunks) <= stream.log.durable_offset
        if self.synced is not None:  # an fsync covering these chunks has completed
            assert self.synced.get(stream.log.path, 0) >= offset + len(chunks)
        self.chunks.append((offset, chunks))

    def on_end(self, stream: Stream, info: CloseInfo) -> None:
        assert stream.log.close_durable
        self.ends.append(info)

    def on_gone(self, stream: Stream) -> None:
        self.gone += 1

    def flat(self) -> list[bytes]:
        out: list[bytes] = []
        for offset, chunks in self.chunks:
            assert offset == len(out)  # in order, no gap, no duplicate
            out += chunks
        return out


def track_syncs(monkeypatch: pytest.MonkeyPatch) -> dict[Path, int]:
    """Record, per stream directory, the highest offset a completed fsync covered: the stream's
    own files' fsync (no journal) or the shared journal's fsync that followed the write."""
    synced: dict[Path, int] = {}
    real = Log.do_sync
    owners: dict[int, Path] = {}
    real_begin = Log.begin_sync
    begun: list[tuple[Path, int]] = []  # written, waiting for a journal fsync
    real_jsync = Journal.sync

    def begin_sync(self: Log) -> Any:
        t = real_begin(self)
        owners[id(t)] = self.path
        if self.journaled:
            begun.append((self.path, t.mark))
        return t

    def journal_sync(self: Journal) -> None:
        covered = list(begun)  # each was written to the journal before this fsync started
        del begun[: len(covered)]
        real_jsync(self)
        for path, mark in covered:
            synced[path] = max(synced.get(path, 0), mark)

    monkeypatch.setattr(Journal, "sync", journal_sync)
    real_hsync = SyncHelper.sync

    def helper_sync(self: SyncHelper, f: Any) -> asyncio.Future[None]:
        # the journal's fdatasync by the helper process: the same, once its answer is in (this
        # callback runs before the commit awaiting the future resumes: it was added first)
        covered = list(begun)
        del begun[: len(covered)]
        fut = real_hsync(self, f)

        def done(fut: asyncio.Future[None]) -> None:
            if not fut.cancelled() and fut.exception() is None:
                for path, mark in covered:
                    synced[path] = max(synced.get(path, 0), mark)

        fut.add_done_callback(done)
        return fut

    monkeypatch.setattr(SyncHelper, "sync", helper_sync)

    def do_sync(ticket: Any) -> None:
        real(ticket)
        path = owners.pop(id(ticket), None)
        if path is not None:
            synced[path] = max(synced.get(path, 0), ticket.mark)

    monkeypatch.setattr(Log, "begin_sync", begin_sync)
    monkeypatch.setattr(Log, "do_sync", staticmethod(do_sync))
    return synced


# --- basics and policies -----------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_append_read_close_restart(store_factory: Any, tmp_path: Path, policy: str) -> None:
    store = await store_factory(fsync=policy, interval_ms=2)
    s = await store.create("chat/1", labels={"k": "v"})
    want = [f"tok{i} ".encode() for i in range(200)]
    for i in range(0, 200, 5):
        res = await s.append(want[i : i + 5])
        assert res.offset == i and s.next_offset >= i + 5  # acknowledged means readable
    assert read_all(s) == want
    await s.close("done")
    assert s.ended and s.status == "done"
    with pytest.raises(StreamClosed):
        await s.append([b"late"])
    await store.stop()
    store = await store_factory(fsync=policy)
    s = store.get("chat/1")
    assert read_all(s) == want and s.status == "done" and s.info().labels == {"k": "v"}
    assert store.list("chat/") == ["chat/1"] and store.stats()["repairs"] == 0


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_group_commit_shares_fsyncs(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    synced = track_syncs(monkeypatch)
    store = await store_factory(fsync=policy, interval_ms=5)
    streams = [await store.create(f"s{i}") for i in range(10)]
    fsyncs_before = store.counters["fsyncs"]

    async def one(s: Stream, i: int) -> tuple[Stream, int, bytes]:
        data = f"{s.id}:{i}".encode()
        res = await s.append([data])
        # acknowledged only once an fsync covering it has completed
        assert synced.get(s.log.path, 0) >= res.offset + 1
        return s, res.offset, data

    results = await asyncio.gather(*(one(s, i) for i in range(50) for s in streams))
    fsyncs = store.counters["fsyncs"] - fsyncs_before
    assert len(results) == 500
    assert 1 <= fsyncs <= 25, fsyncs  # many appends share one fsync
    for s in streams:
        mine = sorted((o, d) for st_, o, d in results if st_ is s)
        assert [o for o, _ in mine] == list(range(50))  # dense offsets, none reused
        assert read_all(s) == [d for _, d in mine]


async def test_append_nowait_promises_settle_in_the_commit_and_a_raising_callback_stops_no_other(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``append_nowait``'s ``Durable``: its callbacks run once the commit covering the append has
    fsynced; one that raises is handed to the loop's exception handler, and the same commit still
    settles every other stream's promises (and a promise added on the way is not dropped)."""
    synced = track_syncs(monkeypatch)
    store = await store_factory(fsync="always")
    a, b = await store.create("nowait/a"), await store.create("nowait/b")
    reported: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: reported.append(ctx))
    seen: list[tuple[str, int, bool]] = []
    got_a = store.append_nowait("nowait/a", [b"a0"])
    got_b = store.append_nowait("nowait/b", [b"b0"])
    assert got_a is not None and got_b is not None
    (_, res_a, pa), (_, res_b, pb) = got_a, got_b
    assert pa is not None and pb is not None and not pa.done() and not pb.done()
    late: list[Any] = []

    def on_a(p: Any) -> None:
        seen.append(("a", res_a.offset, synced.get(a.log.path, 0) >= res_a.offset + 1))
        got = store.append_nowait("nowait/a", [b"a1"])  # queued from inside the commit's publish
        assert got is not None
        late.append(got[2])
        raise RuntimeError("a callback that fails")

    def on_b(p: Any) -> None:
        seen.append(("b", res_b.offset, synced.get(b.log.path, 0) >= res_b.offset + 1))

    pa.add_done_callback(on_a)
    pb.add_done_callback(on_b)
    deadline = time.monotonic() + 10
    while not (late and late[0] is not None and late[0].done()) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    assert sorted(seen) == [("a", 0, True), ("b", 0, True)]  # both after their fsync, neither lost
    assert pa.exception() is None and pb.exception() is None
    assert late and late[0].done() and late[0].exception() is None  # the promise added meanwhile
    assert [str(c.get("exception")) for c in reported] == ["a callback that fails"]
    assert read_all(a) == [b"a0", b"a1"] and read_all(b) == [b"b0"]


async def test_always_fsyncs_before_each_ack_even_when_sequential(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced = track_syncs(monkeypatch)
    store = await store_factory(fsync="always")
    s = await store.create("seq")
    for _ in range(20):
        res = await s.append([b"x"])
        assert synced[s.log.path] >= res.offset + 1
    assert store.counters["fsyncs"] >= 20


async def test_never_policy_does_not_fsync_appends(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await store_factory(fsync="never")
    s = await store.create("n")
    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    for i in range(30):
        await s.append([b"x%d" % i])
    assert calls == [] and store.counters["fsyncs"] == 0
    assert len(read_all(s)) == 30  # written to the OS, so readable at once


async def test_policy_is_validated() -> None:
    with pytest.raises(ValueError):
        Store("/nonexistent", __import__("storage").StoreOptions(fsync="sometimes"))


# --- readers: wait and listeners -----------------------------------------------------------------


async def test_wait_wakes_on_append_and_on_end(store_factory: Any) -> None:
    store = await store_factory(fsync="always")
    s = await store.create("w")
    assert await s.wait(0, timeout=0.01) is False
    waiter = asyncio.create_task(s.wait(0, timeout=10))
    await asyncio.sleep(0)
    assert not waiter.done()
    await s.append([b"a"])
    assert await asyncio.wait_for(waiter, 5) is True
    assert await s.wait(0, timeout=0) is True  # already readable: no waiting
    ender = asyncio.create_task(s.wait(5, timeout=10))
    await asyncio.sleep(0)
    await s.close("cancelled")
    assert await asyncio.wait_for(ender, 5) is True and s.status == "cancelled"


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_listeners_get_chunks_only_once_durable(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    synced = track_syncs(monkeypatch) if policy != "never" else None
    store = await store_factory(fsync=policy, interval_ms=3)
    s = await store.create("l")
    rec = Recorder(synced)
    s.listeners.add(rec)
    want = [f"{i}".encode() * (i % 7) for i in range(300)]
    await asyncio.gather(*(s.append(want[i : i + 3]) for i in range(0, 300, 3)))
    await s.close("error", "boom")
    assert rec.flat() == want
    assert [e.status for e in rec.ends] == ["error"] and rec.ends[0].error == "boom"


async def test_info_hides_an_end_that_is_not_durable_yet(store_factory: Any) -> None:
    store = await store_factory(fsync="interval", interval_ms=200)
    s = await store.create("i")
    await s.append([b"a"])
    closing = asyncio.create_task(s.close())
    await asyncio.sleep(0)
    assert s.status == "open" and s.info().status == "open" and s.close_info is None
    await closing
    assert s.info().status == "done" and s.close_info is not None


# --- retention -----------------------------------------------------------------------------------


async def test_ttl_after_close_then_gone_then_not_found(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory(tombstone_ttl=100.0)
    s = await store.create("t", ttl=10.0)
    await s.append([b"a"])
    keep = await store.create("keep")  # no ttl, never closed
    rec = Recorder()
    s.listeners.add(rec)
    await s.close()
    closed = s.close_info.at  # type: ignore[union-attr]
    assert await store.expire(now=closed + 9) == []
    assert await store.expire(now=closed + 11) == ["t"]
    assert rec.gone == 1 and store.counters["expired"] == 1
    for bad in (lambda: store.get("t"), lambda: s.read(0)):
        with pytest.raises(StreamGone):
            bad()
    with pytest.raises(StreamGone):
        await s.append([b"b"])
    with pytest.raises(StreamNotFound):
        store.get("never-existed")
    assert not store.exists("t") and store.get("keep") is keep
    # the tombstone outlives a restart; the files do not
    await store.stop()
    assert not any("trash" in str(p) for p in files_under(tmp_path / "data"))
    store = await store_factory(tombstone_ttl=100.0)
    with pytest.raises(StreamGone):
        store.get("t")
    await store.expire(now=time.time() + 101)  # the tombstone itself expires
    with pytest.raises(StreamNotFound):
        store.get("t")
    # and the id can be used again
    again = await store.create("t")
    assert again.next_offset == 0


async def test_expires_at_and_default_ttl(store_factory: Any) -> None:
    store = await store_factory(default_ttl=5.0)
    now = time.time()
    a = await store.create("absolute", expires_at=now + 100)  # expires even while open
    b = await store.create("default")
    await b.close()
    assert a.status == "open"
    assert sorted(await store.expire(now=now + 101)) == ["absolute", "default"]


async def test_recreating_an_expired_id_is_a_fresh_stream(store_factory: Any) -> None:
    store = await store_factory()
    s = await store.create("x")
    await s.append([b"old"])
    await store.delete("x")
    with pytest.raises(StreamGone):
        store.get("x")
    with pytest.raises(StreamGone):  # the id is not reused while its tombstone lives (issue 11)
        await store.create("x")
    s2 = await store.create("x", replace_gone=True)  # the Durable Streams PUT may
    assert s2.next_offset == 0 and read_all(s2) == []
    with pytest.raises(StreamGone):
        s.read(0)  # the old handle stays gone


async def test_total_bytes_cap_deletes_oldest_closed_first(store_factory: Any) -> None:
    store = await store_factory()
    payload = [os.urandom(500) for _ in range(4)]  # incompressible, so sizes are predictable
    names = ["c0", "c1", "c2", "c3"]
    for name in names:
        s = await store.create(name)
        await s.append(payload)
        await s.close()
        await asyncio.sleep(0.002)  # distinct close times
    live = await store.create("open-one")
    await live.append(payload)
    sizes = {n: store.get(n).log.stored_bytes for n in [*names, "open-one"]}
    cap = sizes["open-one"] + sizes["c2"] + sizes["c3"]
    store.opts = dataclasses.replace(store.opts, max_total_bytes=cap)
    expired = await store.expire()
    assert expired == ["c0", "c1"]
    assert store.list() == ["c2", "c3", "open-one"]
    store.opts = dataclasses.replace(store.opts, max_total_bytes=1)
    assert sorted(await store.expire()) == ["c2", "c3"]  # an open stream is never evicted for size
    assert store.list() == ["open-one"]


# --- the file-handle LRU -------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_lru_bounds_open_files_across_300_streams(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory(fsync="always", max_open_logs=16)
    fds_before = open_fds()
    n = 300
    streams = [await store.create(f"lru/{i}") for i in range(n)]
    for i, s in enumerate(streams):
        await s.append([f"{i}-{j}".encode() for j in range(3)])
        assert store.stats()["open_files"] <= 2 * 16 + 2
    assert open_fds() - fds_before <= 2 * 16 + 10
    for _ in range(2):
        for i, s in enumerate(streams):
            assert s.read(0) == [f"{i}-{j}".encode() for j in range(3)]
            assert store.stats()["open_files"] <= 2 * 16 + 2
    assert open_fds() - fds_before <= 2 * 16 + 10
    # after a restart every stream is reachable, loaded on demand
    await store.stop()
    store = await store_factory(fsync="always", max_open_logs=16)
    for i in range(n):
        s = store.get(f"lru/{i}")
        assert s.read(1) == [f"{i}-1".encode(), f"{i}-2".encode()]
        assert store.stats()["open_files"] <= 2 * 16 + 2


async def test_lru_under_concurrent_appends_and_closes(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evicting a stream's handles while its close is being fsynced must not break that close."""
    real = Log.do_sync

    def slow_sync(ticket: Any) -> None:  # a slower disk: other streams run while this one syncs
        time.sleep(0.002)
        real(ticket)

    monkeypatch.setattr(Log, "do_sync", staticmethod(slow_sync))
    store = await store_factory(
        fsync="always", max_open_logs=4, log=LogOptions(segment_bytes=512, block_bytes=256)
    )
    streams = [await store.create(f"c/{i}") for i in range(60)]

    async def work(i: int, s: Stream) -> None:
        for j in range(12):
            await s.append([f"{i}.{j}".encode() * 5])
        await s.close()

    await asyncio.gather(*(work(i, s) for i, s in enumerate(streams)))
    assert store.counters["write_errors"] == 0
    assert all(not s.log.failed for s in streams)
    await store.stop()
    store = await store_factory(fsync="always", max_open_logs=4)
    for i in range(60):
        s = store.get(f"c/{i}")
        assert s.status == "done"
        assert read_all(s) == [f"{i}.{j}".encode() * 5 for j in range(12)]


# --- stream ids ----------------------------------------------------------------------------------

PATHLIKE = [
    "../../etc/passwd",
    "a/../../b",
    "/absolute/path",
    "..",
    ".",
    "streams",
    "a\\..\\..\\b",
    "~/.ssh/id_rsa",
    "x" * 512,
    "é" * 256,  # 512 UTF-8 bytes
    "chat/42/answer-3",
    " ",
]


async def test_path_like_ids_stay_under_the_data_dir(store_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "data"
    store = await store_factory()
    for i, sid in enumerate(PATHLIKE):
        s = await store.create(sid)
        await s.append([f"{i}".encode()])
        await s.close()
    await store.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing was created beside it
    resolved_root = root.resolve()
    for f in files_under(root):
        assert f.resolve().is_relative_to(resolved_root)
        rel = f.relative_to(root).parts
        assert ".." not in rel
        assert rel[0] in ("streams", "tombstones") or len(rel) == 1  # or a marker file in the root
        if rel[0] == "streams":  # streams/ab/cd/<32 hex digits>/<file>: the id never names a path
            assert len(rel) == 5 and len(rel[3]) == 32 and rel[3].startswith(rel[1] + rel[2])
    store = await store_factory()
    assert sorted(store.list()) == sorted(PATHLIKE)
    for i, sid in enumerate(PATHLIKE):
        assert store.get(sid).read(0) == [f"{i}".encode()]


@pytest.mark.parametrize(
    "sid",
    [
        "",
        "a\0b",
        "\0",
        "line\nbreak",
        "tab\tx",
        "del\x7f",
        "x" * 513,
        "é" * 257,
        "lone\ud800",
        42,
        None,
        b"bytes",
    ],
)
async def test_invalid_ids_are_refused(store_factory: Any, tmp_path: Path, sid: Any) -> None:
    store = await store_factory()
    with pytest.raises(InvalidStreamId):
        await store.create(sid)
    with pytest.raises(InvalidStreamId):
        store.get(sid)
    assert [p for p in files_under(tmp_path / "data") if "streams" in p.parts] == []


async def test_duplicate_and_concurrent_creates(store_factory: Any) -> None:
    store = await store_factory()
    results = await asyncio.gather(*(store.create("same") for _ in range(5)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Stream)]
    assert len(winners) == 1
    assert all(isinstance(r, StreamExists) for r in results if r not in winners)
    both = await asyncio.gather(store.create("ok", exist_ok=True), store.create("ok", exist_ok=True))
    assert both[0] is both[1]
    await winners[0].append([b"kept"])
    await store.stop()
    store = await store_factory()
    assert store.get("same").read(0) == [b"kept"]


# --- disk errors -----------------------------------------------------------------------------------


def fail_next(monkeypatch: pytest.MonkeyPatch, name: str, err: int = errno.EIO, times: int = 1) -> list[int]:
    """Make the next ``times`` calls of os.<name> raise; returns a list that counts the failures."""
    real = getattr(os, name)
    failed: list[int] = []

    def wrapper(*a: Any) -> Any:
        if len(failed) < times:
            failed.append(1)
            raise OSError(err, os.strerror(err))
        return real(*a)

    monkeypatch.setattr(os, name, wrapper)
    return failed


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
async def test_write_error_fails_the_append_and_loses_nothing(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    store = await store_factory(fsync=policy, interval_ms=2)
    s = await store.create("d")
    acked = [b"a", b"b"]
    await s.append(acked)
    failed = fail_next(monkeypatch, "pwrite", errno.ENOSPC)
    results = await asyncio.gather(s.append([b"x"]), s.append([b"y"]), return_exceptions=True)
    assert failed == [1]
    if policy == "never":  # each append writes on its own: only the first one failed
        assert isinstance(results[0], StorageUnavailable) and not isinstance(results[1], Exception)
        acked.append(b"y")
    else:  # both were in the failed group write: neither is acknowledged
        assert all(isinstance(r, StorageUnavailable) for r in results), results
    assert store.counters["write_errors"] == 1
    assert read_all(s) == acked
    res = await s.append([b"later"])  # the stream keeps working
    acked.append(b"later")
    assert res.offset == len(acked) - 1 and read_all(s) == acked
    await store.stop()
    store = await store_factory(fsync=policy)
    assert read_all(store.get("d")) == acked


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_fsync_error_stops_acks_and_recovers_from_the_files(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    store = await store_factory(fsync=policy, interval_ms=2, sync_helper=False)
    s = await store.create("f")
    await s.append([b"a"])
    fail_next(monkeypatch, "fdatasync")  # the journal's, the one fsync of a commit (commit thread)
    with pytest.raises(StorageUnavailable, match="fsync"):
        await s.append([b"unsure"])
    # the page cache may have dropped our data: this stream object acknowledges nothing more
    with pytest.raises(StorageUnavailable):
        await s.append([b"refused"])
    fresh = store.get("f")  # re-runs recovery from the files
    assert fresh is not s and not fresh.log.failed
    got = read_all(fresh)
    assert got[:1] == [b"a"] and got in ([b"a"], [b"a", b"unsure"])  # never acked: may or may not be there
    res = await fresh.append([b"after"])
    assert read_all(fresh) == [*got, b"after"] and res.offset == len(got)


async def test_producer_retry_through_the_store(store_factory: Any) -> None:
    store = await store_factory(fsync="always")
    s = await store.create("p")
    first = await s.append([b"a", b"b"], producer_id="prod", seq=1)
    again = await s.append([b"a", b"b"], producer_id="prod", seq=1)
    assert (again.offset, again.duplicate) == (first.offset, True)
    assert read_all(s) == [b"a", b"b"]
    await store.stop()
    store = await store_factory(fsync="always")
    s = store.get("p")
    assert (await s.append([b"a", b"b"], producer_id="prod", seq=1)).duplicate
    assert read_all(s) == [b"a", b"b"]


async def test_repairs_are_counted_on_load(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory()
    s = await store.create("r")
    await s.append([b"a"])
    path = s.log.path
    await store.stop()
    seg = sorted(path.glob("*.log"))[-1]
    with open(seg, "ab") as f:
        f.write(b"\x07torn")
    store = await store_factory()
    s = store.get("r")
    assert read_all(s) == [b"a"]
    assert store.counters["repairs"] == 1 and store.stats()["repairs"] == 1
    assert s.info().repairs == 1 and "torn" in s.info().repair_notes[0]


async def test_background_sealing(store_factory: Any) -> None:
    store = await store_factory(fsync="always")
    s = await store.create("seal")
    want = [f"token {i % 40}".encode() for i in range(1500)]
    for i in range(0, 1500, 50):
        await s.append(want[i : i + 50])
    await s.close()
    path = s.log.path
    await store.stop()  # waits for background seals
    assert not list(path.glob("*.log")) and list(path.glob("*.zlog"))
    store = await store_factory(fsync="always")
    s = store.get("seal")
    assert read_all(s, max_chunks=100) == want and s.info().repairs == 0
    assert s.info().stored_bytes < s.info().raw_bytes


async def test_stop_makes_pending_appends_durable(store_factory: Any) -> None:
    store = await store_factory(fsync="interval", interval_ms=10_000)  # the committer would wait 10 s
    s = await store.create("stop")
    tasks = [asyncio.create_task(s.append([b"%d" % i])) for i in range(10)]
    await asyncio.sleep(0)
    await store.stop()
    results = await asyncio.gather(*tasks)
    assert sorted(r.offset for r in results) == list(range(10))
    store = await store_factory()
    assert len(read_all(store.get("stop"))) == 10


def test_small_options_are_what_the_tests_assume() -> None:
    assert SMALL.segment_bytes == 4096 and SMALL.block_bytes == 1024


async def test_eviction_while_a_close_is_being_fsynced(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The LRU must not close a file whose fsync is running in a worker thread."""
    import threading

    # gated in this process's threads (the sync helper's fdatasync holds its own copy of the fd)
    store = await store_factory(fsync="always", max_open_logs=1, sync_helper=False)
    a = await store.create("a")
    b = await store.create("b")
    await a.append([b"x"])
    await b.append([b"y"])
    entered, release = threading.Event(), threading.Event()
    real = Log.do_sync

    synced_files: list[str] = []

    def gated_sync(ticket: Any) -> None:
        entered.set()
        release.wait(5)
        for fd in ticket.fds:  # which file each fd names by the time it is fsynced
            with contextlib.suppress(OSError):
                synced_files.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(ticket)

    real_journal = Journal.sync

    def gated_journal(self: Journal) -> None:  # under the journal, the commit fsyncs only that
        entered.set()
        release.wait(5)
        with contextlib.suppress(OSError):
            synced_files.append(os.readlink(f"/proc/self/fd/{self.cur.fd}"))
        real_journal(self)

    monkeypatch.setattr(Log, "do_sync", staticmethod(gated_sync))
    monkeypatch.setattr(Journal, "sync", gated_journal)
    closing = asyncio.create_task(a.close())
    deadline = time.monotonic() + 10
    while not entered.is_set():  # the close's fsync has started in a worker thread
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    assert b.read(0) == [b"y"]  # touches b: with one slot, a is the eviction candidate
    release.set()
    await closing  # the close must be fsynced on a's real file and acknowledged
    assert not a.log.failed and a.status == "done"
    # the fsync ran on the file it was meant for: a's own files, or the journal that holds a's close
    where = str(store.root / "journal") if a.log.journaled else str(a.log.path)
    assert synced_files and all(f.startswith(where) for f in synced_files), synced_files
    monkeypatch.setattr(Log, "do_sync", staticmethod(real))
    monkeypatch.setattr(Journal, "sync", real_journal)
    await store.stop()
    store = await store_factory(fsync="always")
    assert store.get("a").status == "done"


async def test_a_write_error_on_one_stream_spares_the_others_in_its_group(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await store_factory(fsync="always")
    a, b = await store.create("a"), await store.create("b")
    fail_next(monkeypatch, "pwrite")
    results = await asyncio.gather(a.append([b"a1"]), b.append([b"b1"]), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["AppendResult", "StorageUnavailable"]
    for s, r, data in ((a, results[0], b"a1"), (b, results[1], b"b1")):
        assert read_all(s) == ([] if isinstance(r, Exception) else [data])
        await s.append([b"more"])
        assert read_all(s)[-1] == b"more"


async def test_delete_then_recreate_at_once_never_races_the_removal(store_factory, tmp_path) -> None:
    """delete() returns with the id's path free: a create right after (the Durable Streams PUT may
    reuse a deleted id) never collides with the background removal of the old files, even when that
    removal runs late (here: held back until the new stream exists)."""
    import threading

    store = await store_factory()
    s = await store.create("again")
    await s.append([b"old"])
    release = threading.Event()
    pool = store._bg_pool
    blockers = [pool.submit(release.wait, 10) for _ in range(pool._max_workers)]
    await store.delete("again")
    s = await store.create("again", replace_gone=True)
    await s.append([b"new"])
    release.set()
    for b in blockers:
        b.result(timeout=10)
    await store.stop()
    store = await store_factory()
    assert read_all(store.get("again").log) == [b"new"]


async def test_the_stream_count_is_kept_not_counted_at_start(tmp_path: Path) -> None:
    """``stats()["streams"]`` survives restarts from the catalog's settings (count(*) reads the
    whole table: 0.6 s at a million answers), and a catalog written before the setting counts once."""
    import sqlite3

    root = tmp_path / "d"
    async with Store(root) as st:
        for i in range(12):
            s = await st.create(f"n/{i}")
            await s.append([b"x"])
        for i in range(5):
            await st.delete(f"n/{i}")
        assert st.stats()["streams"] == 7
    db = sqlite3.connect(root / "store.db")
    assert db.execute("SELECT value FROM settings WHERE name = 'streams_count'").fetchone() == (7,)
    db.execute("DELETE FROM settings WHERE name = 'streams_count'")  # as an older catalog has it
    db.commit()
    db.close()
    async with Store(root) as st:
        assert st.stats()["streams"] == 7
        await st.create("n/new")
        assert st.stats()["streams"] == 8
    async with Store(root) as st:
        assert st.stats()["streams"] == 8
