"""The journal's sync helper (storage/file/fsyncd.py): a real helper process, real files and fds.

Its answers come in order and carry the errno of a failed fdatasync; it outlives SIGTERM and SIGINT
but not its socket; when it is gone, what waits fails with ``SyncHelperGone`` and a store carries on
with its commit thread, losing no acknowledged append (a commit whose helper died mid-sync is written
again to a new journal file). A stop lets the commit in flight finish, or gives up on it, unacked,
after ``COMMIT_STALL_S``; a commit stuck that long is logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import drop_unsynced, read_all

from storage import StorageUnavailable
from storage.file import fsyncd, journal
from storage.file import store as store_module
from storage.file.fsyncd import SyncHelper, SyncHelperGone
from storage.file.journal import Journal


@dataclass
class F:
    fd: int


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running after {timeout} s"
        await asyncio.sleep(0.01)


@pytest.fixture
def jfile(tmp_path: Path) -> Iterator[F]:
    """An open file standing for a journal file."""
    fd = os.open(tmp_path / "j", os.O_RDWR | os.O_CREAT)
    yield F(fd)
    os.close(fd)


@pytest.fixture
async def helper() -> Any:
    h = SyncHelper(asyncio.get_running_loop())
    yield h
    h.close()
    await asyncio.get_running_loop().run_in_executor(None, h.wait)


async def test_syncs_are_answered_in_order_and_a_cancelled_one_is_dropped(
    helper: SyncHelper, jfile: F
) -> None:
    f = jfile
    helper.adopt(f)
    os.write(f.fd, b"frames")
    r, w = os.pipe()  # fdatasync(2) on a pipe: EINVAL, an answer that tells itself apart
    try:
        first, second, bad, third = helper.sync(f), helper.sync(f), helper.sync(F(w)), helper.sync(f)
        first.cancel()
        got = await asyncio.wait_for(asyncio.gather(second, bad, third, return_exceptions=True), 10)
    finally:
        os.close(r)
        os.close(w)
    assert got[0] is None and got[2] is None
    assert isinstance(got[1], OSError) and got[1].errno == errno.EINVAL
    assert await asyncio.wait_for(helper.sync(f), 10) is None  # the dropped answer took no one's place
    proc = helper.proc
    helper.close()
    await asyncio.get_running_loop().run_in_executor(None, helper.wait)
    assert proc.returncode == 0  # it exits by itself once the socket closes


async def test_a_failed_fdatasync_comes_back_with_its_errno(helper: SyncHelper, jfile: F) -> None:
    r, w = os.pipe()  # fdatasync(2) on a pipe: EINVAL
    try:
        with pytest.raises(OSError) as e:
            await asyncio.wait_for(helper.sync(F(w)), 10)
        assert e.value.errno == errno.EINVAL
        # the next file is handed over with its request: it syncs
        assert await asyncio.wait_for(helper.sync(jfile), 10) is None
    finally:
        os.close(r)
        os.close(w)


def test_a_new_file_that_does_not_arrive_ends_the_helper_unanswered(tmp_path: Path) -> None:
    """The wire protocol, spoken by hand: a sync that should carry the next file but carries no
    descriptor is never answered for the previous file; the helper exits instead."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", fsyncd.__file__, str(theirs.fileno())], pass_fds=(theirs.fileno(),)
    )
    theirs.close()
    fd = os.open(tmp_path / "j", os.O_RDWR | os.O_CREAT)
    try:
        ours.settimeout(10)
        socket.send_fds(ours, [fsyncd.SYNC_FILE], [fd])
        assert ours.recv(16) == fsyncd.OK
        ours.send(fsyncd.SYNC)  # the file it holds
        assert ours.recv(16) == fsyncd.OK
        ours.send(fsyncd.SYNC_FILE)  # a next file, whose descriptor the kernel dropped
        assert ours.recv(16) == b""  # no answer: the socket closed
        assert proc.wait(10) == 0
    finally:
        os.close(fd)
        ours.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_sigterm_and_sigint_leave_it_syncing(helper: SyncHelper, jfile: F) -> None:
    assert await asyncio.wait_for(helper.sync(jfile), 10) is None
    os.kill(helper.proc.pid, signal.SIGTERM)
    os.kill(helper.proc.pid, signal.SIGINT)
    assert await asyncio.wait_for(helper.sync(jfile), 10) is None
    assert alive(helper.proc.pid)


async def test_a_killed_helper_fails_what_waits_and_every_later_sync(helper: SyncHelper, jfile: F) -> None:
    assert await asyncio.wait_for(helper.sync(jfile), 10) is None
    helper.proc.kill()
    with pytest.raises(SyncHelperGone):
        for _ in range(1000):  # until the socket's close is seen (bounded)
            await asyncio.wait_for(helper.sync(jfile), 10)
    assert not helper.alive
    with pytest.raises(SyncHelperGone):
        await helper.sync(jfile)


async def test_a_store_whose_helper_dies_acks_on_from_its_commit_thread_and_loses_nothing(
    store_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await store_factory(fsync="always")
    helper = store._sync_helper
    assert helper is not None and alive(helper.proc.pid)
    streams = [await store.create(f"h/{i}") for i in range(8)]
    want: dict[str, list[bytes]] = {s.id: [] for s in streams}

    async def write(s: Any, n: int, tag: str) -> None:
        for k in range(n):
            chunk = f"{tag}{k}".encode()
            await s.append([chunk])
            want[s.id].append(chunk)  # acknowledged: durable

    await asyncio.gather(*(write(s, 20, "a") for s in streams))
    fsyncs = store.counters["commit_fsyncs"]
    with caplog.at_level(logging.WARNING, logger="storage.file.store"):
        writers = asyncio.gather(*(write(s, 40, "b") for s in streams))
        helper.proc.kill()  # while commits are running through it
        await asyncio.wait_for(writers, 30)
    assert store._sync_helper is None  # the commit thread syncs from now on
    assert "commit thread" in caplog.text
    assert store.counters["commit_fsyncs"] > fsyncs
    await wait_gone(helper.proc.pid)
    for s in streams:
        assert read_all(s) == want[s.id]
    await store.stop()
    again = await store_factory(fsync="always")
    assert again._sync_helper is not None and again._sync_helper.alive  # a new start has one again
    for s in streams:
        assert read_all(again.get(s.id)) == want[s.id]


async def test_a_stopped_store_leaves_no_helper_behind(store_factory: Any) -> None:
    store = await store_factory(fsync="interval")
    helper = store._sync_helper
    assert helper is not None
    await (await store.create("x")).append([b"1"])
    await store.stop()
    await wait_gone(helper.proc.pid)
    never = await store_factory(fsync="never")  # no journal, nothing to sync: no helper
    assert never._sync_helper is None


def wal_files(root: Path) -> list[Path]:
    return sorted((root / "journal").glob("*.wal"))


def frames_end(path: Path) -> int:
    return journal.scan(path.read_bytes())[1]


async def until(cond: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def append_past_a_stopped_helper(store: Any, s: Any, chunk: bytes) -> tuple[SyncHelper, Any]:
    """SIGSTOP the store's sync helper, then append: back once the commit's frames are in the
    journal, so its sync is sent (in the same loop step) and waits. The caller SIGCONTs or kills."""
    helper = store._sync_helper
    assert helper is not None
    (wal,) = wal_files(store.root)
    end0 = frames_end(wal)
    os.kill(helper.proc.pid, signal.SIGSTOP)
    try:
        pending = asyncio.ensure_future(s.append([chunk]))
        await until(lambda: frames_end(wal) > end0)
        assert not pending.done()
    except BaseException:
        os.kill(helper.proc.pid, signal.SIGCONT)
        raise
    return helper, pending


async def test_a_commit_whose_helper_dies_mid_sync_is_written_again_to_a_new_file(
    store_factory: Any, tmp_path: Path
) -> None:
    """The helper may die after its fdatasync failed, taking the error with it: the store must not
    trust a second fdatasync of that file. The commit goes again into a new journal file; the old one
    is checkpointed (its segment files fsynced, which report their own errors) and deleted, and the
    append, acknowledged, survives a crash that drops every unsynced segment byte."""
    store = await store_factory(fsync="always")
    s = await store.create("m")
    await s.append([b"before"])
    helper, pending = await append_past_a_stopped_helper(store, s, b"in flight")
    try:
        os.kill(helper.proc.pid, signal.SIGKILL)
        await asyncio.wait_for(pending, 10)  # acknowledged
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(helper.proc.pid, signal.SIGKILL)
    assert store._sync_helper is None
    # not the first file synced again: the next one, and the first is checkpointed away
    await until(lambda: [p.name for p in wal_files(store.root)] == ["0000000000000002.wal"])
    assert journal.scan((store.root / "journal" / "0000000000000002.wal").read_bytes())[0]
    await s.append([b"after"])  # the commit thread from now on
    crashed = tmp_path / "crashed"
    shutil.copytree(store.root, crashed)
    drop_unsynced(crashed)  # every journaled segment byte gone: replay must bring each back
    again = await store_factory(crashed, fsync="always")
    assert read_all(again.get("m")) == [b"before", b"in flight", b"after"]


@pytest.mark.parametrize("sync_helper", [True, False], ids=["sync-helper", "commit-thread"])
async def test_a_journal_file_that_cannot_be_synced_fails_its_appends_and_the_next_file_takes_over(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sync_helper: bool
) -> None:
    """A real failed fdatasync, in whichever process makes it: the first journal file's descriptor
    is /dev/null's (writes vanish, fdatasync says EINVAL). Its appends fail; the next commit starts
    a new file, handed to the helper, and acknowledges."""
    real = Journal._start
    started: list[int] = []

    def start(self: Journal) -> Any:
        f = real(self)
        if not started:
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, f.fd)
            os.close(null)
        started.append(f.n)
        return f

    monkeypatch.setattr(Journal, "_start", start)
    store = await store_factory(fsync="always", sync_helper=sync_helper)
    assert (store._sync_helper is not None) is sync_helper
    s = await store.create("n")
    with pytest.raises(StorageUnavailable, match="fsync failed: Invalid argument"):
        await s.append([b"unsure"])
    fresh = store.get("n")  # recovers from its files
    got = read_all(fresh)
    assert got in ([], [b"unsure"])
    await fresh.append([b"after"])
    assert len(started) == 2  # one new file, and the helper (if any) syncs it: the ack came
    assert (store._sync_helper is not None) is sync_helper
    crashed = tmp_path / "crashed"
    shutil.copytree(store.root, crashed)
    drop_unsynced(crashed)
    again = await store_factory(crashed, fsync="always")
    assert read_all(again.get("n")) == [*got, b"after"]


async def test_a_stop_lets_the_commit_in_flight_finish(store_factory: Any) -> None:
    """stop() waits for the commit it finds running instead of cancelling it: the appends in it are
    acknowledged, not failed as 'stopped before committed'."""
    store = await store_factory(fsync="always")
    s = await store.create("st")
    await s.append([b"1"])
    helper, pending = await append_past_a_stopped_helper(store, s, b"2")
    try:
        stopping = asyncio.ensure_future(store.stop())
        for _ in range(3):  # stop() runs up to its wait for the committer
            await asyncio.sleep(0)
        assert not stopping.done() and not pending.done()
    finally:
        os.kill(helper.proc.pid, signal.SIGCONT)
    await asyncio.wait_for(stopping, 20)
    res = await asyncio.wait_for(pending, 1)
    assert res.offset == 1
    await wait_gone(helper.proc.pid)
    again = await store_factory(fsync="always")
    assert read_all(again.get("st")) == [b"1", b"2"]


async def test_a_commit_stuck_on_a_stopped_helper_is_logged_and_counted(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(store_module, "COMMIT_STALL_S", 0.2)
    store = await store_factory(fsync="always")
    s = await store.create("w")
    await s.append([b"1"])
    assert store.counters["commit_stalls"] == 0
    with caplog.at_level(logging.WARNING, logger="storage.file.store"):
        helper, pending = await append_past_a_stopped_helper(store, s, b"2")
        try:
            await until(lambda: store.counters["commit_stalls"] == 1)
            assert not pending.done()
        finally:
            os.kill(helper.proc.pid, signal.SIGCONT)
        await asyncio.wait_for(pending, 10)
    assert f"the sync helper (pid {helper.proc.pid}) is waiting for the disk" in caplog.text
    assert store.counters["commit_stalls"] == 1
    await s.append([b"3"])  # a quick commit is not one
    assert store.counters["commit_stalls"] == 1


async def test_a_stop_gives_up_on_a_commit_that_does_not_finish_and_acks_none_of_it(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "COMMIT_STALL_S", 0.3)
    store = await store_factory(fsync="always")
    s = await store.create("g")
    await s.append([b"1"])
    helper, pending = await append_past_a_stopped_helper(store, s, b"2")  # stopped for good
    await asyncio.wait_for(store.stop(), 20)  # the helper is killed, stopped or not
    with pytest.raises(StorageUnavailable):
        await asyncio.wait_for(pending, 1)
    await wait_gone(helper.proc.pid)
    again = await store_factory(fsync="always")
    assert read_all(again.get("g"))[:1] == [b"1"]  # acknowledged; "2" may or may not be there
