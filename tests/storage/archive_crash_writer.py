"""Archive crash writer: a real process that writes finished answers and freezes inside one phase of
the archive's background work, to be SIGKILLed there (see test_archive_crash.py).

    python tests/storage/archive_crash_writer.py DATA_DIR PHASE

PHASE names where to freeze: ``archive`` (inside the transaction that moves answers into the
archive: SQLite's progress handler blocks mid-statement), ``grow`` (inside such a transaction, as it
swaps a chat's pack for the grown one), ``rmdir`` (after that commit, before the
answers' directories are removed), ``train`` (while a dictionary is trained), ``add-dict`` (inside
the transaction that stores it), ``recode`` (inside a transaction that swaps blocks for recoded
ones), ``vacuum`` (inside the VACUUM that compacts the database after the recoding).

Lines on stdout, each one write, each after the awaited call returned (so after the store
acknowledged it), as crash_writer.py prints them::

    {"op":"ack","stream":ID,"offset":N,"data":[HEX,...]}
    {"op":"closed","stream":ID,"next":N}
    {"op":"frozen","phase":PHASE}        the process now blocks inside PHASE until it is killed
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from storage import LogOptions, Store, StoreOptions  # noqa: E402
from storage.file import archive, catalog, store  # noqa: E402

ANSWERS = 120
TRAIN_AFTER = 40
OPTS = LogOptions(segment_bytes=1 << 20, block_bytes=1024, seal_level=1)
WORDS = [" the", " answer", " resumes", " after", " a", " reconnect", ",", " and", " stream", "."]
_enc = msgspec.json.Encoder()
_armed = threading.Event()  # set while the phase to freeze in runs
_frozen = threading.Event()


def out(**msg: object) -> None:
    sys.stdout.buffer.write(_enc.encode(msg) + b"\n")
    sys.stdout.buffer.flush()


def freeze(phase: str) -> None:
    """Report, then block this thread for good: the test kills the process now."""
    if not _frozen.is_set():
        _frozen.set()
        out(op="frozen", phase=phase)
    threading.Event().wait()


class FreezingCatalog(catalog.Catalog):
    phase = ""
    _mark = 0

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)

        def progress() -> int:
            # mid-statement, inside the open transaction once it has written rows (VACUUM is a
            # transaction of its own; storing a dictionary is one row: inside its transaction)
            if _armed.is_set() and (
                self.phase == "vacuum"
                or (
                    self._w.in_transaction
                    and (self.phase == "add-dict" or self._w.total_changes > self._mark)
                )
            ):
                freeze(self.phase)
            return 0

        self._w.set_progress_handler(progress, 5)

    def _armed_call(self, phase: str, fn: Any, *a: Any) -> Any:
        if self.phase != phase:
            return fn(*a)
        self._mark = self._w.total_changes
        _armed.set()
        try:
            return fn(*a)
        finally:
            _armed.clear()

    def archive(self, *a: Any) -> Any:
        return self._armed_call("archive", super().archive, *a)

    def _grow(self, *a: Any) -> Any:
        return self._armed_call("grow", super()._grow, *a)

    def add_dict(self, *a: Any) -> Any:
        return self._armed_call("add-dict", super().add_dict, *a)

    def replace_blocks(self, *a: Any) -> Any:
        return self._armed_call("recode", super().replace_blocks, *a)

    def vacuum(self) -> None:
        self._armed_call("vacuum", super().vacuum)


async def main() -> None:
    root, phase = sys.argv[1], sys.argv[2]
    FreezingCatalog.phase = phase
    store.Catalog = FreezingCatalog  # type: ignore[misc]
    archive.DICT_TRAIN_AFTER = TRAIN_AFTER
    archive.DICT_BYTES = 4096
    if phase == "train":
        real_train = archive.train

        def train(samples: Any) -> bytes:
            freeze("train")
            return real_train(samples)

        archive.train = train
    st = Store(root, StoreOptions(fsync="always", log=OPTS, seal_delay_s=0.0, archive_delay_s=0.05))
    if phase == "rmdir":
        real_remove = st._remove_dirs

        def remove(paths: Any) -> None:
            freeze("rmdir")
            real_remove(paths)

        st._remove_dirs = remove  # type: ignore[method-assign]
    await st.start()
    sem = asyncio.Semaphore(8)

    async def answer(i: int) -> None:
        sid = f"chat/{os.getpid()}.{i // 4}/{i % 4}"
        async with sem:
            s = await st.create(sid)
            for k in range(0, 30 + i % 17, 3):
                chunks = [f"{WORDS[(i + k + j) % len(WORDS)]}{i}.{k + j}".encode() for j in range(3)]
                res = await s.append(chunks, "p", k // 3 + 1)
                out(op="ack", stream=sid, offset=res.offset, data=[c.hex() for c in chunks])
            await s.close("done")
            out(op="closed", stream=sid, next=s.next_offset)

    await asyncio.gather(*(answer(i) for i in range(ANSWERS)))
    await asyncio.Event().wait()  # the phase may still be ahead (training after the last answers)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except sqlite3.Error as e:
        out(op="error", message=str(e))
        raise
