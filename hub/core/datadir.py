"""One hub per data dir: an exclusive ``flock`` on ``<data dir>/LOCK``, held for the hub's whole life.

Two hubs on one directory would both acknowledge the same offsets with different data and both run
recovery over each other's files, so the second must not touch the store at all: ``acquire`` fails at
once (never waits) with ``DataDirBusy`` naming the directory and the holder's pid, which the holder
writes into the file after locking. The lock goes with the process (the kernel drops it on exit, even
on kill -9), so a crashed hub never leaves a stale lock behind; the file itself is never deleted
(unlinking it would let a third process lock a fresh inode while the second still holds the old one).
``flock`` locks belong to the open file, not the process, so two hubs inside one process exclude each
other too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "LOCK"


class DataDirBusy(Exception):
    def __init__(self, root: Path, pid: int | None) -> None:
        self.root, self.pid = root, pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"data dir {root} is in use by {holder} (one hub per data dir)")


class DataDirLock:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Lock the directory (creating it) or raise ``DataDirBusy``; ``OSError`` if it cannot be
        created or written (the caller reports that as a configuration error)."""
        if self._fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirBusy(self.root, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no pid of a process that no longer holds it
        os.close(fd)  # closing the last descriptor drops the flock

    @classmethod
    def check(cls, root: Path) -> None:
        """Raise ``DataDirBusy`` now if another hub holds ``root`` (take and drop the lock): lets the CLI
        report the busy dir before it reports anything that follows from it, like a busy port."""
        probe = cls(root)
        probe.acquire()
        probe.release()


def _read_pid(fd: int) -> int | None:
    try:
        raw = os.pread(fd, 32, 0).decode().strip()
        return int(raw) if raw else None
    except (OSError, ValueError):
        return None
