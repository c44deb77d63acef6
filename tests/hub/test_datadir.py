"""The data dir lock: exclusive, immediate, names the holder, dies with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.core.datadir import DataDirBusy, DataDirLock

HOLD = "import sys; from hub.core.datadir import DataDirLock; DataDirLock(sys.argv[1]).acquire(); print('held', flush=True); sys.stdin.read()"


def test_a_second_lock_on_the_same_dir_fails_at_once_naming_dir_and_pid(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "data")
    first.acquire()
    with pytest.raises(DataDirBusy) as e:
        DataDirLock(tmp_path / "data").acquire()
    assert e.value.pid == os.getpid()
    assert str(tmp_path / "data") in str(e.value) and str(os.getpid()) in str(e.value)
    first.release()
    again = DataDirLock(tmp_path / "data")
    again.acquire()  # free once released
    again.release()


def test_the_lock_is_held_by_another_process_until_it_is_killed(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "d")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirBusy) as e:
            DataDirLock.check(tmp_path / "d")
        assert e.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    DataDirLock.check(tmp_path / "d")  # kill -9 leaves no stale lock


def test_an_unwritable_dir_is_an_os_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(OSError):
        DataDirLock(tmp_path / "file" / "data").acquire()
