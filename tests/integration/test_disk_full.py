"""Disk full, for real: the hub's data dir on a tiny tmpfs. Appends fail with a clear error, nothing
acknowledged is lost, other streams keep being served, and the hub recovers when space returns."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.root  # mounts a tmpfs: skipped when not root (tests/integration/conftest.py)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    assert r.returncode == 0, f"this test needs root to mount a 4 MiB tmpfs: {r.stderr.strip()}"
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(path: Path) -> int:
    """Fill the filesystem until ENOSPC; returns bytes written."""
    n = 0
    # unbuffered: a buffered writer keeps the part of a write that did not fit and fails again at close,
    # depending on how the free space happens to align with the writes
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
                n += 65536
        except OSError as e:
            assert e.errno == errno.ENOSPC
        with contextlib.suppress(OSError):
            os.fsync(f.fileno())
    return n


async def test_disk_full_fails_appends_clearly_keeps_acked_data_and_recovers(start_hub, session, tiny_fs):
    data = tiny_fs / "data"
    hub = await start_hub(data_dir=data, fsync="always")
    base = hub.http
    for sid in ("full/a", "full/b"):
        async with session.put(f"{base}/streams/{sid}") as r:
            assert r.status == 201
    async with session.post(f"{base}/streams/full/b", json={"data": ["still", " here"]}) as r:
        assert r.status == 200
    ballast = tiny_fs / "ballast"
    fill(ballast)
    acked: list[str] = []
    failure = None
    for i in range(2000):
        chunk = f"{i:05d}" + "x" * 4000
        async with session.post(f"{base}/streams/full/a", json={"data": chunk}) as r:
            body = await r.json()
            if r.status == 200:
                assert body["offset"] == len(acked)
                acked.append(chunk)
            else:
                failure = (r.status, body)
                break
    assert failure is not None, "the disk never filled up"
    assert failure[0] == 503 and failure[1]["error"]["code"] == "storage_unavailable"
    assert "ENOSPC" in failure[1]["error"]["message"] or "space" in failure[1]["error"]["message"].lower()
    # everything acknowledged is readable; nothing half-written is visible; others are still served
    async with session.get(f"{base}/streams/full/a?from=0&limit=10000") as r:
        assert (await r.json())["chunks"] == acked
    async with session.get(f"{base}/streams/full/b") as r:
        assert (await r.json())["chunks"] == ["still", " here"]
    async with session.post(f"{base}/streams/full/a", json={"data": "y"}) as r:
        assert r.status == 503  # still full: still a clear error, never a silent loss
    ballast.unlink()  # space returns
    async with session.post(f"{base}/streams/full/a", json={"data": "after"}) as r:
        assert r.status == 200 and (await r.json())["offset"] == len(acked)
    async with session.post(f"{base}/streams/full/a/close", json={"status": "done"}) as r:
        assert r.status == 200
    await hub.server.close()
    again = await start_hub(data_dir=data)
    s = again.hub.store.get("full/a")
    assert s.read(0, 10000) == [c.encode() for c in [*acked, "after"]]
    assert s.status == "done"


async def test_disk_full_over_the_websocket_answers_each_append_with_its_error(start_hub, connect, tiny_fs):
    """The WebSocket's task-free append path (``Hub.append_nowait``): an append accepted, then failed
    by its group commit, is answered with an error frame carrying its id, never an ack."""
    data = tiny_fs / "data"
    hub = await start_hub(data_dir=data, fsync="always")
    ws = await connect(hub.ws_url)
    await ws.send(op="create", stream="full/w", id="c")
    await ws.recv_op("ack")
    ballast = tiny_fs / "ballast"
    fill(ballast)
    acked: list[str] = []
    err = None
    for i in range(2000):
        chunk = f"{i:05d}" + "x" * 4000
        await ws.send(op="append", stream="full/w", data=chunk, id=i)
        f = await ws.recv()
        if f["op"] == "ack":
            assert (f["id"], f["offset"]) == (i, len(acked))
            acked.append(chunk)
        else:
            err = f
            break
    assert err is not None, "the disk never filled up"
    assert (err["op"], err["code"], err["id"], err["stream"]) == (
        "error",
        "storage_unavailable",
        len(acked),
        "full/w",
    )
    ballast.unlink()
    await ws.send(op="append", stream="full/w", data="after", id="a")
    f = await ws.recv_op("ack")
    assert (f["id"], f["offset"]) == ("a", len(acked))
    s = hub.hub.store.get("full/w")
    assert s.read(0, 10000) == [c.encode() for c in [*acked, "after"]]
