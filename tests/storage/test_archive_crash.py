"""kill -9 inside the archive's background work: moving answers into the archive, growing a chat's
pack with its next answers, removing their directories, training a dictionary, storing it, recoding blocks with it, and the VACUUM after it.

Each case runs a real writer process (archive_crash_writer.py) that freezes inside the phase (SQLite's
progress handler blocks mid-statement, inside the open transaction) and SIGKILLs it there; then a
store restarted on the data dir must have lost no acknowledged chunk, stored none twice, kept every
close, finished the archiving, and left the database consistent (integrity check, every pack's
reference count equal to the rows using it, the archived-bytes total equal to the blocks' bytes).
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from test_crash import Ledger

from storage import LogOptions, Store, StoreOptions, ids
from storage.file.archive import ArchivedLog

WRITER = Path(__file__).with_name("archive_crash_writer.py")
ROOT = WRITER.parents[2]
OPTS = LogOptions(segment_bytes=1 << 20, block_bytes=1024, seal_level=1)
DEADLINE = 90.0  # generous: the phase is reached in a few seconds on a quiet machine


def run_until_frozen(data: Path, phase: str, ledger: Ledger) -> None:
    err = open(data.parent / f"writer-{phase}.err", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(data), phase],
        stdout=subprocess.PIPE,
        stderr=err,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    frozen = False
    try:
        while not frozen:
            try:
                line = lines.get(timeout=DEADLINE)
            except queue.Empty:
                pytest.fail(f"{phase}: the writer never reached the phase")
            if line is None:
                err.seek(0)
                pytest.fail(f"{phase}: the writer exited: {err.read().decode(errors='replace')[-3000:]}")
            msg = msgspec.json.decode(line)
            if msg["op"] == "frozen":
                assert msg["phase"] == phase
                frozen = True
            else:
                ledger.record(msg)
    finally:
        proc.kill()  # SIGKILL
        proc.wait()
        reader.join(DEADLINE)
        while (line := lines.get_nowait() if not lines.empty() else None) is not None:
            if line.endswith(b"\n") and (msg := msgspec.json.decode(line))["op"] != "frozen":
                ledger.record(msg)  # printed before the kill: acknowledged too
        err.close()


def check_database(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        users = dict(conn.execute("SELECT arch, count(*) FROM streams WHERE arch IS NOT NULL GROUP BY arch"))
        firsts = {pos >> 32: refs or 1 for pos, refs in conn.execute("SELECT pos, refs FROM blocks")
                  if pos & 0xFFFFFFFF == 0}  # fmt: skip
        assert firsts == users, "a pack's reference count differs from the rows that use it"
        keys = {pos >> 32 for (pos,) in conn.execute("SELECT pos FROM blocks")}
        assert keys <= set(users), "blocks no row uses (leaked)"
        total = conn.execute("SELECT coalesce(sum(length(data)), 0) FROM blocks").fetchone()[0]
        saved = conn.execute("SELECT value FROM settings WHERE name = 'archived_bytes'").fetchone()
        assert (saved[0] if saved else 0) == total
    finally:
        conn.close()


async def verify(data: Path, ledger: Ledger) -> int:
    """Restart, let the store finish its archiving, then read every answer back."""
    store = Store(data, StoreOptions(log=OPTS, seal_delay_s=0.0, archive_delay_s=0.0))
    await store.start()
    try:

        def finished() -> bool:  # every closed answer archived and its directory gone
            return all(
                isinstance(store.get(sid).log, ArchivedLog) and not ids.stream_dir(data, sid).exists()
                for sid in ledger.closed
            )

        async with asyncio.timeout(DEADLINE):
            while not finished():
                await asyncio.sleep(0.02)
        checked = 0
        assert ledger.created <= set(store.list())
        for sid in store.list():
            s = store.get(sid)
            chunks: list[bytes] = []
            while got := s.read(len(chunks)):
                chunks += got
            for offset, want in ledger.acked.get(sid, {}).items():
                assert offset < len(chunks) and chunks[offset] == want, f"{sid}@{offset}: acked chunk lost"
                checked += 1
            dups = [c for c, n in Counter(chunks).items() if n > 1]
            assert not dups, f"{sid}: chunks stored twice: {dups[:3]}"
            if sid in ledger.closed:
                assert s.status == "done" and s.next_offset == ledger.closed[sid]
    finally:
        await store.stop()
    check_database(data / "store.db")
    return checked


@pytest.mark.parametrize("phase", ["archive", "grow", "rmdir", "train", "add-dict", "recode", "vacuum"])
def test_sigkill_inside_the_archives_background_work_loses_nothing(tmp_path: Path, phase: str) -> None:
    data = tmp_path / "data"
    ledger = Ledger()
    run_until_frozen(data, phase, ledger)
    assert ledger.acks > 0
    checked = asyncio.run(verify(data, ledger))
    assert checked == sum(len(v) for v in ledger.acked.values()) > 0
    # and the archive keeps working after the repair: a second restart reads the same
    assert asyncio.run(verify(data, ledger)) == checked
