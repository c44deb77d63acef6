"""The journal's fdatasync in a helper process, so that a group commit never waits on the GIL.

A commit thread in the hub's own process needs the GIL to wake up, to call ``fdatasync`` and to
tell the event loop it is done, and under load the event loop holds it: measured on 2 cores with 32
writers, a commit spent ~300 us waiting for the thread to get going and ~70 us more before the loop
heard back, for a ~200 us fdatasync, and the event loop sat idle for a fifth of the time waiting on
it. Here the event loop writes the commit's frames itself (a write to the page cache) and sends one
message over a socket pair; this process, a few lines of Python with a GIL of its own, calls
``fdatasync`` and answers with one message, which the event loop reads like any socket.

The hub passes each journal file's descriptor once, with ``SCM_RIGHTS``, before its first sync
(normally before any frame is written to it), and keeps no other state here: the helper only ever
syncs the last file it was given. It is a duplicate of the same open file, so the helper sees every
writeback error the hub's own descriptor would, and takes it: a failed fdatasync's error is reported
once, to whoever called it. That is why the store never re-syncs a file whose sync went with a dead
helper (``Store._journal_commit_helped``).

It ignores SIGINT and SIGTERM (a Ctrl-C or a service stop sent to the whole process group must not
take it away under the hub's last commits) and exits when the hub's end of the socket closes, which
includes the hub being killed. If it is gone anyway, the store falls back to its
commit thread: the commit in flight is written again into a new journal file and synced there, and
every later one is synced there too; nothing is lost.

Messages, one per datagram (``SOCK_SEQPACKET``): hub -> helper ``b"f"`` with a descriptor (the file to
sync from now on), ``b"S"`` with a descriptor (the same, then sync it and answer) or ``b"s"`` (sync
the current file, then answer); helper -> hub three bytes, ``b"\\0\\0\\0"`` (durable) or ``b"\\1"``
and the errno, big-endian. A ``b"f"`` or ``b"S"`` whose descriptor did not arrive (the kernel
truncated the ancillary data: a full descriptor table, a security module) ends the helper: it must
never answer for the previous file, and the store falls back to its thread.

Run as ``python -I -S fsyncd.py FD`` (``SyncHelper`` does): standard library only, no site import.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from typing import Protocol

_REPLY = struct.Struct("!BH")
OK = _REPLY.pack(0, 0)
FILE, SYNC, SYNC_FILE = b"f", b"s", b"S"


class File(Protocol):
    """An open file to sync (the journal's ``_File``): known by identity, not by descriptor number,
    as a number is reused once its file is closed."""

    @property
    def fd(self) -> int: ...


class SyncHelperGone(Exception):
    """The helper process is not there any more (or could not be asked): sync elsewhere."""


def serve(sock: socket.socket) -> None:
    """The helper's loop: one fdatasync per ``b"s"`` or ``b"S"``, on the last descriptor received."""
    fd = -1
    while True:
        try:
            msg, fds, flags, _ = socket.recv_fds(sock, 16, 1)
        except OSError:
            return
        if not msg:
            return  # the hub's end closed: the hub stopped or died
        if msg in (FILE, SYNC_FILE):
            if len(fds) != 1 or flags & socket.MSG_CTRUNC:
                return  # the new file did not come: exit rather than sync the old one
            if fd >= 0:
                os.close(fd)
            fd = fds[0]
        else:
            for extra in fds:  # never sent with a plain sync
                os.close(extra)
        if msg not in (SYNC, SYNC_FILE):
            continue
        try:
            if fd < 0:
                raise OSError(errno.EBADF, "no journal file was handed over")
            os.fdatasync(fd)
            reply = OK
        except OSError as e:
            reply = _REPLY.pack(1, e.errno or errno.EIO)
        try:
            sock.send(reply)
        except OSError:
            return


class SyncHelper:
    """The hub's side: ``sync(f)`` resolves once the helper's fdatasync of the open file ``f``
    returned (or raises its ``OSError``). Requests are answered in order; a cancelled one's answer is dropped.
    ``SyncHelperGone`` when the helper cannot be reached, for the request that found out and every
    one after it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", __file__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock: socket.socket | None = ours
        self._file: File | None = None  # the file the helper syncs
        self._waiting: deque[asyncio.Future[None]] = deque()
        loop.add_reader(ours.fileno(), self._on_reply)

    @property
    def alive(self) -> bool:
        return self._sock is not None

    def adopt(self, f: File) -> None:
        """From now on the helper syncs ``f`` (and closes its copy of the previous file)."""
        if f is not self._file:
            self._send(FILE, f)

    def sync(self, f: File) -> asyncio.Future[None]:
        fut = self._loop.create_future()
        if self._sock is None:
            fut.set_exception(SyncHelperGone("the sync helper has stopped"))
            return fut
        self._waiting.append(fut)
        if f is self._file:
            self._send(SYNC, None)
        else:
            self._send(SYNC_FILE, f)
        return fut

    def _send(self, msg: bytes, f: File | None) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            if f is None:
                sock.send(msg)
            else:
                socket.send_fds(sock, [msg], [f.fd])
                self._file = f
        except OSError as e:  # the helper is gone (EPIPE, ECONNRESET), or its socket is full
            self._gone(f"cannot reach the sync helper: {e}")

    def _on_reply(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(_REPLY.size)
            except BlockingIOError:
                return
            except OSError as e:
                self._gone(f"the sync helper's socket failed: {e}")
                return
            if len(data) != _REPLY.size or not self._waiting:
                self._gone("the sync helper has stopped" if not data else f"the sync helper sent {data!r}")
                return
            fut = self._waiting.popleft()
            if fut.done():
                continue  # the commit that asked was cancelled (a store stop)
            failed, code = _REPLY.unpack(data)
            if failed:
                fut.set_exception(OSError(code, os.strerror(code)))
            else:
                fut.set_result(None)

    def _gone(self, why: str) -> None:
        self._close_socket()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_exception(SyncHelperGone(why))

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def close(self) -> None:
        """Close the hub's end: the helper exits. Requests still waiting fail (``SyncHelperGone``)."""
        self._gone("the sync helper was closed")

    def wait(self, timeout: float = 5.0) -> None:
        """Blocking (a worker thread): reap the helper once closed, killing it if it does not exit.
        Bounded: a helper stuck in the kernel (an fdatasync on a hung disk) outlives SIGKILL until
        the call returns, and is left to the OS then, not waited for."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout)


def main(argv: list[str]) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    serve(socket.socket(fileno=int(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
