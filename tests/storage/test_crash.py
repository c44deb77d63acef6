"""Crash test: SIGKILL a real writer process at random moments, restart it on the same data dir, repeat.

Every line the writer printed was printed after the store acknowledged it, so after each kill the
test also drains what was left in the pipe: those appends were acknowledged too. At every restart
the writer reports what recovery found, and at the end the test reopens every stream itself and
checks that each acknowledged chunk is at its offset, in order, exactly once, and that every
acknowledged close survived. Kills land anywhere: in the middle of recovery, of a group commit, of a
seal, of a create. Timing only decides *where* a kill lands, never whether the test passes.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard
from conftest import drop_unsynced

from storage import Log, LogOptions, Store, StoreOptions, ids
from storage.file.archive import ArchivedLog
from storage.file.catalog import Catalog

WRITER = Path(__file__).with_name("crash_writer.py")
ROOT = WRITER.parents[2]
KILLS = {"always": 40, "interval": 35}  # 75 kills in all
LINE_TIMEOUT = 20.0  # generous: only a hung writer ever waits this long


class Writer:
    def __init__(self, data: Path, policy: str, seed: int, journal_bytes: int | None = None) -> None:
        self.stderr = open(data.parent / f"writer-{policy}-{seed}.err", "w+b")  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0"}
        extra = [] if journal_bytes is None else [str(journal_bytes)]
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(data), policy, str(seed), *extra],
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self) -> dict[str, Any] | None:
        try:
            line = self.lines.get(timeout=LINE_TIMEOUT)
        except queue.Empty:
            pytest.fail(f"writer printed nothing for {LINE_TIMEOUT} s; stderr: {self.err()}")
        if line is None:
            return None
        if not line.endswith(b"\n"):
            return None  # a line cut by the kill was never completely reported: not an ack
        return msgspec.json.decode(line)

    def kill(self) -> list[dict[str, Any]]:
        """SIGKILL, then everything already in the pipe (each of those was acknowledged too)."""
        self.proc.kill()
        self.proc.wait()
        rest = []
        while (msg := self.next()) is not None:
            rest.append(msg)
        self.reader.join()
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()
        return rest

    def err(self) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]


class Ledger:
    """What the writers were told was durable."""

    def __init__(self) -> None:
        self.acked: dict[str, dict[int, bytes]] = {}
        self.closed: dict[str, int] = {}
        self.created: set[str] = set()
        self.epochs: dict[str, str] = {}
        self.acks = 0

    def record(self, msg: dict[str, Any]) -> None:
        op = msg["op"]
        if op == "error":
            pytest.fail(f"writer reported: {msg['message']}")
        elif op == "ack":
            got = self.acked.setdefault(msg["stream"], {})
            for i, h in enumerate(msg["data"]):
                assert msg["offset"] + i not in got, f"offset {msg['offset'] + i} acknowledged twice"
                got[msg["offset"] + i] = bytes.fromhex(h)
            self.acks += 1
        elif op == "closed":
            self.closed[msg["stream"]] = msg["next"]
        elif op == "created":
            self.created.add(msg["stream"])

    def check_state(self, msg: dict[str, Any]) -> None:
        """What a restarted writer found after recovery covers everything acknowledged so far."""
        sid = msg["stream"]
        acked = self.acked.get(sid, {})
        assert msg["next"] >= max(acked, default=-1) + 1, f"{sid}: acknowledged chunks lost: {msg}"
        if sid in self.closed:
            assert msg["status"] != "open" and msg["next"] == self.closed[sid], (
                f"{sid}: lost its close: {msg}"
            )
        # a kill loses at most unacknowledged bytes at the tail, never complete records
        assert self.epochs.setdefault(sid, msg["epoch"]) == msg["epoch"], f"{sid}: epoch changed"


def run_writer_cycles(
    data: Path,
    policy: str,
    kills: int,
    rng: random.Random,
    ledger: Ledger,
    journal_bytes: int | None = None,
    os_crash: bool = False,
) -> None:
    for cycle in range(kills):
        if os_crash and data.exists():
            drop_unsynced(data)
        w = Writer(data, policy, seed=rng.randrange(1 << 30), journal_bytes=journal_bytes)
        seen: set[str] = set()
        # where to kill: during recovery (after some state lines), right after ready, or after k acks
        # or once an answer reached the archive: the first cycle always, so that every run's kills
        # meet the archiver whatever the machine's speed (a faster writer reaches k acks before
        # any answer's archive delay is over)
        modes = ["recovery", "ready", "acks", "acks", "acks", "acks", "archived"]
        mode = "archived" if cycle == 0 else rng.choice(modes)
        target = {"recovery": 0, "ready": 0, "archived": 0, "acks": rng.choice([1, 5, 20, 60, 150, 300])}[
            mode
        ]
        states_before_kill = rng.randint(0, 3)
        acks = 0
        ready = False
        while True:
            msg = w.next()
            if msg is None:
                pytest.fail(f"{policy} cycle {cycle}: writer exited on its own: {w.err()}")
            if msg["op"] == "state":
                ledger.check_state(msg)
                seen.add(msg["stream"])
                if mode == "recovery" and len(seen) > states_before_kill:
                    break
                continue
            if msg["op"] == "ready":
                ready = True
                assert ledger.created <= seen, (
                    f"created streams missing after restart: {ledger.created - seen}"
                )
                if mode in ("ready", "recovery"):
                    break
                continue
            ledger.record(msg)
            acks += msg["op"] == "ack"
            if mode == "archived" and msg["op"] == "archived":
                break
            if mode != "archived" and ready and acks >= target:
                break
        for msg in w.kill():
            if msg["op"] not in ("state", "ready"):
                ledger.record(msg)


def verify(data: Path, ledger: Ledger) -> tuple[int, int]:
    """Restart once more (the store reconciles its catalog), then read every stream back without
    the store: live ones by recovering their files, archived ones from the catalog's rows.
    Returns (chunks checked, archived answers)."""
    opts = LogOptions(segment_bytes=4096, block_bytes=1024, seal_level=1)

    async def restart() -> None:
        store = Store(data, StoreOptions(log=opts, archive_delay_s=None))
        await store.start()
        await store.stop()

    asyncio.run(restart())
    checked = archived = 0
    catalog = Catalog(data / "store.db")
    dicts = {i: zstandard.ZstdCompressionDict(d) for i, d in catalog.dicts().items()}
    try:
        sids = catalog.list_ids()
        assert ledger.created <= set(sids), "a created stream disappeared"
        for sid in sids:
            entry = catalog.get(sid)
            assert entry is not None
            path = ids.stream_dir(data, sid)
            if entry.archived:
                log: Log = ArchivedLog(path, entry, opts, catalog, dicts)
            else:
                log = Log.open(path, opts)
            archived += entry.archived
            try:
                chunks: list[bytes] = []
                while got := log.read(len(chunks)):
                    chunks += got
                assert len(chunks) == log.durable_offset
                for offset, want in ledger.acked.get(sid, {}).items():
                    assert offset < len(chunks) and chunks[offset] == want, (
                        f"{sid}@{offset}: acknowledged chunk lost"
                    )
                    checked += 1
                # exactly once: every chunk carries a unique tag, so a duplicate would show
                dups = [c for c, n in Counter(c for c in chunks if c).items() if n > 1]
                assert not dups, f"{sid}: chunks stored twice: {dups[:3]}"
                if sid in ledger.closed:
                    assert log.status != "open" and log.durable_offset == ledger.closed[sid]
                assert log.info().epoch == ledger.epochs.get(sid, log.info().epoch)
            finally:
                log.shutdown()
    finally:
        catalog.close()
    return checked, archived


@pytest.mark.parametrize("policy", ["always", "interval"])
def test_sigkill_never_loses_an_acknowledged_chunk(tmp_path: Path, policy: str) -> None:
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    data = tmp_path / "data"
    ledger = Ledger()
    started = time.monotonic()
    try:
        run_writer_cycles(data, policy, KILLS[policy], rng, ledger)
        checked, archived = verify(data, ledger)
    except BaseException as e:
        e.add_note(f"reproduce with CRASH_SEED={seed}")
        raise
    elapsed = time.monotonic() - started
    print(
        f"{policy}: {KILLS[policy]} kills, {ledger.acks} acks, {checked} chunks verified,"
        f" {archived} answers archived, in {elapsed:.1f} s"
    )
    assert ledger.acks > KILLS[policy]  # the kills did land while work was being acknowledged
    assert archived > 0, "no answer was ever archived: kills never met the archiver"
    assert len(ledger.closed) > 0 and checked > 0


def test_sigkill_during_checkpoints_and_replay_with_lost_page_cache(tmp_path: Path) -> None:
    """The journal's own crash test: a 2 KiB journal file makes every few commits a checkpoint
    (rotation, segment fsyncs, journal deletes), so kills land inside checkpoints and, at each
    restart, inside the replay of what the last run left. Before each restart every segment byte
    not yet checkpointed is thrown away (an OS crash's worst case): only the journal has them."""
    seed = int(os.environ.get("CRASH_SEED", "0")) or random.randrange(1 << 30)
    rng = random.Random(seed)
    data = tmp_path / "data"
    ledger = Ledger()
    kills = 30
    try:
        run_writer_cycles(data, "interval", kills, rng, ledger, journal_bytes=2048, os_crash=True)
        drop_unsynced(data)
        checked, _ = verify(data, ledger)
    except BaseException as e:
        e.add_note(f"reproduce with CRASH_SEED={seed}")
        raise
    assert ledger.acks > kills and checked > 0
