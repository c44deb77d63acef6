"""The hub's sync helper process (storage/file/fsyncd.py) as an operator sees it: one child of the
hub that syncs its journal, and nothing left running once the hub is gone, even killed with SIGKILL
(its children are not signalled: the helper leaves when its socket to the hub closes)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from collections.abc import Callable

from .procs import HubProcess, post


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def cmdline(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode()


def test_the_sync_helper_leaves_with_a_hub_killed_by_sigkill(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--fsync", "always")
    helpers = [c for c in children(hub.proc.pid) if "fsyncd.py" in cmdline(c)]
    assert len(helpers) == 1, [cmdline(c) for c in children(hub.proc.pid)]
    for i in range(5):  # acknowledged after the helper's fdatasync
        assert post(f"{hub.http}/streams/sync/a?create=1", {"data": f"t{i}"})["offset"] == i
    os.kill(hub.proc.pid, signal.SIGKILL)  # the hub alone, not its process group
    assert hub.proc.wait(10) == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while running(helpers[0]):
        assert time.monotonic() < deadline, "the sync helper outlived its hub"
        time.sleep(0.01)  # polling another process, with a deadline
    again = hub_process("--fsync", "always", "--data-dir", hub.argv[hub.argv.index("--data-dir") + 1])
    with urllib.request.urlopen(f"{again.http}/streams/sync/a?from=0", timeout=10) as r:
        assert json.loads(r.read())["chunks"] == [f"t{i}" for i in range(5)]
