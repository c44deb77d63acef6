"""The journal's sync helper (storage/file/fsyncd.py): a real helper process, real files and fds.

Its answers come in order and carry the errno of a failed fdatasync; it outlives SIGTERM and SIGINT
but not its socket; when it is gone, what waits fails with ``SyncHelperGone`` and a store carries on
with its commit thread, losing no acknowledged append."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import read_all

from storage.file.fsyncd import SyncHelper, SyncHelperGone


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
    first, second, third = helper.sync(f), helper.sync(f), helper.sync(f)
    first.cancel()
    assert await asyncio.wait_for(asyncio.gather(second, third), 10) == [None, None]
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
