"""Property tests for recovery: any history of appends, flushes, commits, closes, seals, clean reopens,
crashes and torn tails leaves a log that serves exactly a prefix of what was appended, in order,
without duplicates, and never less than what was committed (unless the torn bytes were committed ones).

Driven on ``Log`` directly, no event loop. A "crash" drops the pending buffer (what the process had
not yet written) and reopens; a "torn crash" also cuts the last raw segment at any byte, which is
what an OS crash or a kill in the middle of a write leaves.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from conftest import new_meta, read_all
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage import Log, LogOptions, SequenceError, StreamClosed
from storage.engine import PRODUCER_WINDOW

chunks_st = st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=6)
# 1 KiB segments: a few appends roll one, so histories cross segments, seals and their checkpoints
OPTS = LogOptions(segment_bytes=1024, block_bytes=256, seal_level=1)
PRODUCERS = ("p", "q")


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="logprops-"))
        self.log = Log.create(self.dir / "s", new_meta(), OPTS)
        self.chunks: list[bytes] = []  # every accepted chunk: pending, written or durable
        self.written = 0  # chunks known to be in the file
        self.durable = 0  # chunks committed (fsynced): these must survive any crash
        self.durable_size: dict[str, int] = {}  # raw segment name -> bytes known fsynced
        self.appends: list[tuple[str, int, int, int]] = []  # producer appends: (pid, seq, offset, count)
        self.close_at: int | None = None  # chunk count when a close was accepted
        self.close_level = 0  # 0 pending, 1 written, 2 durable

    def teardown(self) -> None:
        segs = self.log.segments
        event(f"segments: {'1' if len(segs) == 1 else '2-4' if len(segs) <= 4 else '5+'}")
        event(f"sealed segments: {'yes' if any(s.sealed for s in segs) else 'no'}")
        event(f"chunks: {'<20' if len(self.chunks) < 20 else '20-99' if len(self.chunks) < 100 else '100+'}")
        self.log.shutdown()
        shutil.rmtree(self.dir, ignore_errors=True)

    # --- model helpers ----------------------------------------------------------------------------

    def last_seq(self, pid: str) -> tuple[int, int, int] | None:
        for p, seq, off, n in reversed(self.appends):
            if p == pid:
                return seq, off, n
        return None

    def recovered(self, n: int) -> None:
        """The log came back with ``n`` chunks: shrink the model to match."""
        assert self.log.next_offset == self.log.durable_offset == n
        assert n <= len(self.chunks)
        self.chunks = self.chunks[:n]
        self.written = n
        self.durable = min(self.durable, n)
        # a record survives whole or not at all, and with it its producer mark
        self.appends = [a for a in self.appends if a[2] + a[3] <= n]
        if self.log.status == "open":
            self.close_at = None
        else:
            assert self.close_at == n  # a close only ever comes back at the offset it was written at
            self.close_level = 2
        self.durable_size = {s.path.name: s.size for s in self.log.segments if not s.sealed}

    @initialize(n=st.integers(0, 150), seal=st.booleans())
    def history(self, n: int, seal: bool) -> None:
        """Start from a committed log of ``n`` chunks, often spanning several (sealed) segments."""
        for i in range(n):
            self.log.append([bytes([i % 256]) * (i % 150)])
        self.log.commit()
        if seal:
            self.log.seal_all()
        self.chunks = [bytes([i % 256]) * (i % 150) for i in range(n)]
        self.written = self.durable = n
        self.durable_size = {s.path.name: s.size for s in self.log.segments if not s.sealed}

    # --- rules ------------------------------------------------------------------------------------

    @rule(chunks=chunks_st)
    def append(self, chunks: list[bytes]) -> None:
        if self.close_at is not None:
            with pytest.raises(StreamClosed):
                self.log.append(chunks)
            return
        res = self.log.append(chunks)
        assert (res.offset, res.count, res.duplicate) == (len(self.chunks), len(chunks), False)
        self.chunks += chunks

    @rule(batches=st.lists(chunks_st, min_size=1, max_size=8))
    def append_many(self, batches: list[list[bytes]]) -> None:
        for chunks in batches:
            self.append(chunks)

    @rule(pid=st.sampled_from(PRODUCERS), chunks=chunks_st)
    def append_as_producer(self, pid: str, chunks: list[bytes]) -> None:
        last = self.last_seq(pid)
        seq = last[0] + 1 if last else 1
        if self.close_at is not None:
            with pytest.raises(StreamClosed):
                self.log.append(chunks, producer_id=pid, seq=seq)
            return
        res = self.log.append(chunks, producer_id=pid, seq=seq)
        assert (res.offset, res.duplicate) == (len(self.chunks), False)
        self.appends.append((pid, seq, res.offset, len(chunks)))
        self.chunks += chunks

    @rule(pid=st.sampled_from(PRODUCERS), back=st.integers(0, PRODUCER_WINDOW))
    def retry_in_window(self, pid: str, back: int) -> None:
        """A retry of one of the producer's last PRODUCER_WINDOW appends is a duplicate at its
        original offset, across crashes and seals; one older than that is refused."""
        mine = [a for a in self.appends if a[0] == pid]
        if not mine:
            return
        before = self.log.next_offset
        if back < min(PRODUCER_WINDOW, len(mine)):
            _, seq, off, n = mine[-1 - back]
            res = self.log.append([b"retried"] * n, producer_id=pid, seq=seq)
            assert (res.offset, res.count, res.duplicate) == (off, n, True)
        elif len(mine) > PRODUCER_WINDOW:
            with pytest.raises(SequenceError):
                self.log.append([b"stale"], producer_id=pid, seq=mine[-1 - PRODUCER_WINDOW][1])
        assert self.log.next_offset == before

    @rule(status=st.sampled_from(["done", "error", "cancelled"]))
    def close(self, status: str) -> None:
        if self.close_at is not None:
            with pytest.raises(StreamClosed):
                self.log.close(status)
            return
        self.log.close(status, "boom" if status == "error" else None)
        self.close_at, self.close_level = len(self.chunks), 0

    @rule()
    def flush(self) -> None:
        self.log.flush()
        self.written = len(self.chunks)
        if self.close_at is not None:
            self.close_level = max(self.close_level, 1)

    @rule()
    def commit(self) -> None:
        self.log.commit()
        self.written = self.durable = len(self.chunks)
        if self.close_at is not None:
            self.close_level = 2
        self.durable_size = {s.path.name: s.size for s in self.log.segments if not s.sealed}

    @rule()
    def seal(self) -> None:
        self.log.seal_all()
        assert all(s.sealed for s in self.log.segments[:-1]) or self.log.seal_candidate() is None

    @rule()
    def clean_reopen(self) -> None:
        self.log.commit()
        self.log.shutdown()
        self.log = Log.open(self.log.path, OPTS)
        assert self.log.info().repairs == 0, self.log.info().repair_notes
        assert self.log.info().epoch == "e0"
        self.written = self.durable = len(self.chunks)
        if self.close_at is not None:
            self.close_level = 2
        self.recovered(len(self.chunks))

    def sync_written(self) -> None:
        # an append that rolls a segment flushes everything pending first, so the log may have
        # written more than the model's explicit flushes say; never less
        assert self.log.written_offset >= self.written
        self.written = self.log.written_offset

    @rule()
    def crash(self) -> None:
        self.sync_written()
        self.log.shutdown()  # the pending buffer dies with the process; written bytes stay
        self.log = Log.open(self.log.path, OPTS)
        assert self.log.info().repairs == 0, self.log.info().repair_notes
        if self.close_at is not None and self.close_level == 0:
            self.close_at = None  # a close that was never written never happened
        assert self.log.next_offset == self.written
        assert (self.log.status != "open") == (self.close_at is not None)
        self.recovered(self.written)

    @precondition(lambda self: not self.log.active.sealed)
    @rule(data=st.data())
    def torn_crash(self, data: st.DataObject) -> None:
        self.sync_written()
        self.log.shutdown()
        seg = self.log.active.path
        size = seg.stat().st_size
        # drawn independently of the file size (a close record's timestamp varies in length): either
        # a few hundred bytes off the end (the usual torn write) or a fraction of the whole segment
        if data.draw(st.booleans(), label="near the end"):
            cut = max(0, size - data.draw(st.integers(0, 600), label="bytes cut"))
        else:
            cut = size * data.draw(st.integers(0, 1 << 16), label="fraction kept") >> 16
        with open(seg, "r+b") as f:
            f.truncate(cut)
        keeps_durable = cut >= self.durable_size.get(seg.name, 0)
        self.log = Log.open(self.log.path, OPTS)
        n = self.log.next_offset
        if keeps_durable:
            assert n >= self.durable, "a committed chunk was lost although its bytes were not cut"
            if self.close_at is not None and self.close_level == 2:
                assert self.log.status != "open", "a committed close was lost although its bytes were not cut"
        assert n <= self.written
        assert self.log.info().epoch == "e0"  # only torn bytes were dropped, no complete record
        event("torn crash: " + ("kept every committed chunk" if keeps_durable else "cut committed bytes"))
        self.recovered(n)

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def serves_exactly_the_durable_prefix(self) -> None:
        log = self.log
        assert log.durable_offset >= self.durable
        assert log.next_offset == len(self.chunks)
        assert read_all(log) == self.chunks[: log.durable_offset]

    @invariant()
    def producer_retries_see_the_original_offset(self) -> None:
        for pid in PRODUCERS:
            last = self.last_seq(pid)
            st_ = self.log.producers.get(pid)
            if last is None:
                assert st_ is None or st_.seq == 0
            else:
                assert st_ is not None and (st_.seq, st_.first_offset, st_.count) == last


LogMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_log_recovery_machine = LogMachine.TestCase
