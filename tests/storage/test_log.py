"""One stream's Log, driven directly: appends, durability marks, reads, close, seal, recovery, disk errors.

No event loop: ``commit()`` stands in for the store's group commit. Small segments (4 KiB) and zstd
blocks (1 KiB) make rolls and seals happen within a few dozen chunks.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SMALL, read_all, seg_files

from storage import (
    AppendResult,
    ChunkTooLarge,
    CorruptData,
    Log,
    LogOptions,
    OffsetOutOfRange,
    SequenceError,
    StorageUnavailable,
    StreamClosed,
    record,
)
from storage.file.segment import idx_name

MakeLog = Callable[..., Log]


def chunk(i: int) -> bytes:
    # varied sizes: empty, short tokens, and some over 127 bytes (two-byte length uvarints)
    n = (i * 37) % 300 if i % 5 == 0 else i % 9
    return (f"<{i}>" * 100).encode()[:n]


def fill(log: Log, n: int, start: int = 0, per_append: int = 3) -> list[bytes]:
    out = []
    i = start
    while i < start + n:
        batch = [chunk(j) for j in range(i, min(i + per_append, start + n))]
        res = log.append(batch)
        assert res.offset == i and res.count == len(batch)
        out += batch
        i += len(batch)
    return out


def reopen(log: Log, opts: LogOptions = SMALL) -> Log:
    log.shutdown()
    return Log.open(log.path, opts)


# --- appends, durability, reads --------------------------------------------------------------


def test_reads_see_only_durable_chunks(make_log: MakeLog) -> None:
    log = make_log()
    assert log.append([b"a", b"", b"c"]).offset == 0
    assert (log.next_offset, log.written_offset, log.durable_offset) == (3, 0, 0)
    assert log.read(0) == []
    log.flush()
    assert (log.written_offset, log.durable_offset) == (3, 0)
    assert log.read(0) == []  # written is not durable: a crash could still take it back
    with pytest.raises(OffsetOutOfRange):
        log.read(1)
    log.commit()
    assert log.read(0) == [b"a", b"", b"c"]
    assert log.read(2) == [b"c"] and log.read(3) == []
    for bad in (-1, 4):
        with pytest.raises(OffsetOutOfRange):
            log.read(bad)


def test_many_appends_roll_segments_and_read_back_from_any_offset(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 600)
    log.commit()
    assert len(seg_files(log.path)) > 3  # 4 KiB segments rolled
    assert read_all(log) == want
    for start in (0, 1, 77, 299, 300, 599, 600):
        assert log.read(start, max_chunks=50) == want[start : start + 50]
    assert log.info().raw_bytes == sum(map(len, want))


def test_read_limits(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"x" * 100] * 10)
    log.commit()
    assert len(log.read(0, max_chunks=3)) == 3
    assert len(log.read(0, max_bytes=250)) == 3  # stops once the budget is reached
    assert len(log.read(0, max_bytes=1)) == 1  # never zero chunks when one is available


def test_chunk_and_append_limits(make_log: MakeLog) -> None:
    log = make_log(LogOptions(segment_bytes=4096, block_bytes=1024, max_chunk_bytes=10, max_append_bytes=25))
    with pytest.raises(ChunkTooLarge):
        log.append([b"x" * 11])
    with pytest.raises(ChunkTooLarge):
        log.append([b"x" * 10] * 3)
    with pytest.raises(ChunkTooLarge):
        log.append([])
    assert log.append([b"x" * 10, b"y" * 10]).offset == 0
    assert log.next_offset == 2


def test_close_is_durable_and_final(make_log: MakeLog) -> None:
    log = make_log()
    with pytest.raises(ValueError):
        log.close("finished")  # not a status
    log.append([b"a"])
    log.close("error", "model overloaded")
    assert log.status == "error"
    with pytest.raises(StreamClosed):
        log.append([b"b"])
    with pytest.raises(StreamClosed):
        log.close()
    log.commit()
    assert log.close_durable
    log = reopen(log)
    assert log.status == "error" and log.info().error == "model overloaded"
    assert log.read(0) == [b"a"]
    with pytest.raises(StreamClosed):
        log.append([b"b"])


def test_seal_compresses_and_reads_stay_identical(make_log: MakeLog) -> None:
    log = make_log()
    text = [f"token{i % 50} ".encode() for i in range(3000)]
    for i in range(0, len(text), 10):
        log.append(text[i : i + 10])
    log.commit()
    raw_stored = log.stored_bytes
    n_rolled = len(seg_files(log.path)) - 1
    assert log.seal_all() == n_rolled  # every rolled, durable segment; not the active one
    assert len(seg_files(log.path, "zlog")) == n_rolled
    assert len(seg_files(log.path, "idx")) == n_rolled
    log.close()
    log.commit()
    assert log.seal_all() == 1  # a closed stream's last segment seals too
    assert seg_files(log.path) == []
    assert log.stored_bytes < raw_stored / 3
    assert read_all(log) == text
    for start in (0, 1, 999, 1500, 2999):
        assert log.read(start, max_chunks=20) == text[start : start + 20]
    log = reopen(log)
    assert log.info().repairs == 0
    assert read_all(log, max_chunks=100) == text
    assert log.info().raw_bytes == sum(map(len, text))


def test_seal_waits_for_durability(make_log: MakeLog) -> None:
    log = make_log()
    fill(log, 300)
    log.flush()
    assert log.seal_candidate() is None  # rolled but not fsynced: nothing may be sealed yet
    log.commit()
    assert log.seal_candidate() is not None


def test_clean_reopen_reports_no_repairs(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 400)
    log.commit()
    log.seal_all()
    log = reopen(log)
    info = log.info()
    assert (info.repairs, info.repair_notes, info.chunks, info.epoch) == (0, [], 400, "e0")
    assert read_all(log) == want
    want += fill(log, 50, start=400)
    log.commit()
    assert read_all(log) == want


def test_release_files_then_keep_working(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 200)
    assert not log.release_files()  # pending data: must keep its handle
    log.commit()
    read_all(log)
    assert log.open_files > 0
    assert log.release_files() and log.open_files == 0
    assert read_all(log) == want
    want += fill(log, 10, start=200)
    log.commit()
    assert read_all(log) == want


# --- producer idempotency ----------------------------------------------------------------------


def test_producer_retry_returns_the_original_offset_and_writes_nothing(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"other"])
    first = log.append([b"a", b"b"], producer_id="p", seq=1)
    assert (first.offset, first.count, first.duplicate) == (1, 2, False)
    again = log.append([b"a", b"b"], producer_id="p", seq=1)
    assert (again.offset, again.count, again.duplicate) == (1, 2, True)
    assert log.next_offset == 3
    log.commit()
    size = log.active.size
    assert log.append([b"a", b"b"], producer_id="p", seq=1).duplicate
    log.commit()
    assert log.active.size == size  # nothing written
    with pytest.raises(SequenceError):
        log.append([b"z"], producer_id="p", seq=0)
    assert log.append([b"c"], producer_id="p", seq=2).offset == 3
    # a new epoch starts a new sequence; an older epoch is refused
    assert log.append([b"d"], producer_id="p", seq=0, epoch=1).offset == 4
    with pytest.raises(SequenceError):
        log.append([b"e"], producer_id="p", seq=5, epoch=0)
    # producers are independent
    assert log.append([b"q"], producer_id="q", seq=1).offset == 5
    log.commit()
    assert read_all(log) == [b"other", b"a", b"b", b"c", b"d", b"q"]


def test_producer_state_survives_reopen_and_sealing(make_log: MakeLog) -> None:
    log = make_log()
    fill(log, 10)
    r = log.append([b"mark"], producer_id="p", seq=7, epoch=2)
    want = fill(log, 300, start=11)  # rolls past the segment holding the producer mark
    log.commit()
    log = reopen(log)
    assert log.append([b"mark"], producer_id="p", seq=7, epoch=2) == r.__class__(r.offset, 1, True)
    assert log.seal_all() >= 1
    assert not any(p.name.startswith("00000000000000000000.log") for p in log.path.iterdir())
    log = reopen(log)
    dup = log.append([b"mark"], producer_id="p", seq=7, epoch=2)
    assert dup.duplicate and dup.offset == r.offset
    assert log.next_offset == 311
    log.commit()
    assert read_all(log)[11:] == want


def test_a_retry_of_a_lost_append_is_written_again(make_log: MakeLog) -> None:
    log = make_log()
    log.append([b"a"], producer_id="p", seq=1)
    log.commit()
    log.append([b"b"], producer_id="p", seq=2)  # pending only: the crash below takes it back
    log.shutdown()
    log = Log.open(log.path, SMALL)
    res = log.append([b"b"], producer_id="p", seq=2)
    assert not res.duplicate and res.offset == 1


# --- disk errors at the OS boundary ----------------------------------------------------------


def failing_pwrite(
    monkeypatch: pytest.MonkeyPatch, times: int = 1, err: int = errno.EIO, partial: bool = False
):
    """Make the next ``times`` os.pwrite calls fail (optionally after writing half the buffer)."""
    real = os.pwrite
    left = [times]

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if left[0] > 0:
            left[0] -= 1
            if partial:
                real(fd, bytes(data)[: len(data) // 2], offset)
            raise OSError(err, os.strerror(err))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.mark.parametrize("partial", [False, True])
@pytest.mark.parametrize("reopened", [False, True])
def test_write_failure_acknowledges_nothing_and_loses_nothing(
    make_log: MakeLog, monkeypatch: pytest.MonkeyPatch, partial: bool, reopened: bool
) -> None:
    log = make_log()
    want = fill(log, 50)
    log.append([b"pm"], producer_id="p", seq=1)
    want.append(b"pm")
    log.commit()
    if reopened:  # the first write after recovery must roll back to the recovered state too
        log = reopen(log)
    failing_pwrite(monkeypatch, partial=partial, err=errno.ENOSPC)
    log.append([b"lost1", b"lost2"], producer_id="p", seq=2)
    log.append([b"lost3"])
    with pytest.raises(StorageUnavailable, match="ENOSPC"):
        log.commit()
    assert log.next_offset == log.durable_offset == 51  # the failed appends were forgotten
    assert read_all(log) == want
    # later appends work, at the offsets the failed ones would have had, and the producer can retry
    res = log.append([b"lost1", b"lost2"], producer_id="p", seq=2)
    assert (res.offset, res.duplicate) == (51, False)
    log.commit()
    want += [b"lost1", b"lost2"]
    assert read_all(log) == want
    log = reopen(log)
    assert read_all(log) == want and log.info().repairs == 0


def test_failed_close_is_forgotten(make_log: MakeLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log()
    log.append([b"a"])
    log.commit()
    failing_pwrite(monkeypatch)
    log.close()
    with pytest.raises(StorageUnavailable):
        log.commit()
    assert log.status == "open"
    log.append([b"b"])
    log.close()
    log.commit()
    log = reopen(log)
    assert log.status == "done" and read_all(log) == [b"a", b"b"]


def test_write_failure_while_rolling(make_log: MakeLog, monkeypatch: pytest.MonkeyPatch) -> None:
    log = make_log()
    want = fill(log, 20)
    log.commit()
    while log.active.size + len(log._pending) < SMALL.segment_bytes:
        want.append(b"y" * 100)
        log.append([want[-1]])
    pending = len(want) - log.durable_offset
    failing_pwrite(monkeypatch)
    with pytest.raises(StorageUnavailable):
        log.append([b"z"])  # this append rolls, and the roll's flush fails
    assert log.next_offset == len(want) - pending
    log.append([b"z"])
    log.commit()
    assert read_all(log) == want[: len(want) - pending] + [b"z"]


# --- recovery ----------------------------------------------------------------------------------


def committed_log(make_log: MakeLog, n: int = 40) -> tuple[Log, list[bytes]]:
    log = make_log(LogOptions(segment_bytes=1 << 20, block_bytes=1024))
    want = fill(log, n, per_append=2)
    log.commit()
    return log, want


def record_bounds(path: Path) -> list[tuple[int, record.Header]]:
    return list(record.iter_records(path.read_bytes()))


def test_truncation_at_every_byte_of_the_last_records(make_log: MakeLog, tmp_path: Path) -> None:
    log, want = committed_log(make_log)
    log.shutdown()
    seg = seg_files(log.path)[0]
    image = seg.read_bytes()
    recs = record_bounds(seg)
    start = recs[-4][0]
    pristine = tmp_path / "pristine"
    shutil.copytree(log.path, pristine)
    for cut in range(start, len(image) + 1):
        shutil.rmtree(log.path)
        shutil.copytree(pristine, log.path)
        with open(seg, "r+b") as f:
            f.truncate(cut)
        rec = Log.open(log.path, SMALL)
        complete = [h for pos, h in recs if pos + h.size <= cut]
        n = complete[-1].end_offset
        info = rec.info()
        assert read_all(rec) == want[:n], cut
        assert info.chunks == n and rec.next_offset == n
        torn = cut != sum(h.size for h in complete)
        assert info.repairs == (1 if torn else 0), (cut, info.repair_notes)
        assert info.epoch == "e0"  # only a torn tail was dropped: nothing anyone could have seen
        assert seg.stat().st_size == sum(h.size for h in complete)  # the torn bytes are gone from disk
        # the recovered log takes appends right after the prefix, and they survive a reopen
        rec.append([b"after"])
        rec.commit()
        rec.shutdown()
        rec = Log.open(log.path, SMALL)
        assert read_all(rec) == want[:n] + [b"after"] and rec.info().repairs == 0
        rec.shutdown()


@pytest.mark.parametrize("damage", ["delete", "truncate", "garbage", "empty"])
def test_sealed_index_is_rebuilt_and_counted(make_log: MakeLog, damage: str) -> None:
    log = make_log()
    want = fill(log, 500)
    log.close()
    log.commit()
    assert log.seal_all() > 1
    log.shutdown()
    idx = sorted(log.path.glob("*.idx"))[1]
    good = idx.read_bytes()
    if damage == "delete":
        idx.unlink()
    elif damage == "truncate":
        idx.write_bytes(good[:-3])
    elif damage == "garbage":
        idx.write_bytes(b"\xff" * len(good))
    else:
        idx.write_bytes(b"")
    log = Log.open(log.path, SMALL)
    info = log.info()
    assert info.repairs == 1 and idx.name in info.repair_notes[0]
    assert idx.read_bytes() == good
    assert read_all(log, max_chunks=40) == want
    log = reopen(log)
    assert log.info().repairs == 0


def flip(path: Path, pos: int, bit: int = 0) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << bit)]))


def check_corrupt_middle(log: Log, want: list[bytes], bad: record.Header) -> None:
    lo, hi = bad.first_offset, bad.end_offset
    assert log.durable_offset == len(want)  # nothing after the damaged record was dropped
    for o in range(lo, hi):
        with pytest.raises(CorruptData):
            log.read(o)
    assert log.read(0, max_chunks=len(want)) == want[:lo]  # a read stops before the damage
    assert log.read(lo - 1) == want[lo - 1 : lo]
    assert read_all(log, start=hi) == want[hi:]
    info = log.info()
    assert info.repairs >= 1 and info.chunks == len(want)


def test_bit_flip_in_a_middle_record_payload(make_log: MakeLog, tmp_path: Path) -> None:
    log, want = committed_log(make_log)
    log.shutdown()
    seg = seg_files(log.path)[0]
    pos, bad = record_bounds(seg)[10]
    assert bad.length > 100
    pristine = tmp_path / "pristine"
    shutil.copytree(log.path, pristine)
    for i in range(0, bad.length, 5):  # lengths column, chunk bytes, last byte
        shutil.rmtree(log.path)
        shutil.copytree(pristine, log.path)
        flip(seg, pos + record.HEADER_SIZE + i, bit=i % 8)
        rec = Log.open(log.path, SMALL)
        try:
            check_corrupt_middle(rec, want, bad)
        finally:
            rec.shutdown()
    flip(seg, pos + bad.size - 1, bit=7)
    log = Log.open(log.path, SMALL)
    check_corrupt_middle(log, want, bad)
    # the damage is remembered across reopens and appends continue after the end
    log.append([b"new"])
    log.commit()
    want.append(b"new")
    log = reopen(log)
    check_corrupt_middle(log, want, bad)


def test_bit_flip_anywhere_in_a_middle_record_header(make_log: MakeLog, tmp_path: Path) -> None:
    log, want = committed_log(make_log)
    log.shutdown()
    seg = seg_files(log.path)[0]
    pos, bad = record_bounds(seg)[10]
    pristine = tmp_path / "pristine"
    shutil.copytree(log.path, pristine)
    for byte in range(record.HEADER_SIZE):
        for bit in range(8):
            shutil.rmtree(log.path)
            shutil.copytree(pristine, log.path)
            flip(seg, pos + byte, bit)
            rec = Log.open(log.path, SMALL)
            try:
                check_corrupt_middle(rec, want, bad)
            except AssertionError as e:
                raise AssertionError(f"header byte {byte} bit {bit}: {e}") from e
            finally:
                rec.shutdown()


def test_bit_flip_in_a_sealed_block(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 500)
    log.close()
    log.commit()
    log.seal_all()
    log.shutdown()
    zlog = seg_files(log.path, "zlog")[0]
    recs = record_bounds(zlog)
    assert len(recs) > 3
    pos, bad = recs[1]
    flip(zlog, pos + bad.size - 5)
    log = Log.open(log.path, SMALL)
    check_corrupt_middle(log, want, bad)
    assert log.status == "done"


def test_corruption_in_a_rolled_segment_leaves_later_segments_readable(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 400)
    log.commit()
    log.shutdown()
    first = seg_files(log.path)[0]
    recs = record_bounds(first)
    pos, h = recs[-1]  # the very last record of a rolled segment: there is no record after it to resync on
    flip(first, pos + record.HEADER_SIZE)
    log = Log.open(log.path, SMALL)
    assert log.durable_offset == 400
    for o in range(h.first_offset, h.end_offset):
        with pytest.raises(CorruptData):
            log.read(o)
    assert log.read(0, max_chunks=1000) == want[: h.first_offset]
    assert read_all(log, start=h.end_offset) == want[h.end_offset :]
    assert log.info().repairs >= 1


def test_interrupted_seal_leftovers_are_cleaned_up(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 300)
    log.commit()
    log.shutdown()
    raw = seg_files(log.path)[0]
    raw_copy = raw.read_bytes()
    log = Log.open(log.path, SMALL)
    log.seal_all()
    log.shutdown()
    # the rename happened but the old .log was not yet unlinked; plus a stale temp file
    raw.write_bytes(raw_copy)
    (log.path / "00000000000000000000.zlog.tmp").write_bytes(b"partial")
    log = Log.open(log.path, SMALL)
    assert not raw.exists() and not list(log.path.glob("*.tmp"))
    assert read_all(log) == want and log.info().raw_bytes == sum(map(len, want))


def test_crash_between_checkpoint_and_rename(make_log: MakeLog) -> None:
    """The checkpoint already counts the segment being sealed, but the .zlog never appeared."""
    log = make_log()
    want = fill(log, 300)
    log.append([b"pm"], producer_id="p", seq=4)
    want.append(b"pm")
    want += fill(log, 300, start=301)
    log.append([b"pm5"], producer_id="p", seq=5)
    want.append(b"pm5")
    want += fill(log, 100, start=602)
    log.commit()
    log.shutdown()
    raw_copies = {p: p.read_bytes() for p in seg_files(log.path)}
    log = Log.open(log.path, SMALL)
    assert log.seal_all() >= 2
    log.shutdown()
    for p in [*log.path.glob("*.zlog"), *log.path.glob("*.idx")]:
        p.unlink()
    for p, data in raw_copies.items():
        p.write_bytes(data)
    total = sum(map(len, want))
    log = Log.open(log.path, SMALL)  # checkpoint says upto > 0, but the raw segments are all there
    assert read_all(log) == want and log.info().raw_bytes == total
    assert log.append([b"pm5"], producer_id="p", seq=5).duplicate
    # re-seal one segment at a time, reopening in between: every intermediate state must hold
    while (seg := log.seal_candidate()) is not None:
        new, ck = log.build_seal(seg)
        log.apply_seal(seg, new, ck)
        log = reopen(log)
        assert read_all(log) == want
        assert log.info().raw_bytes == total  # a re-sealed segment is not counted twice
        assert log.append([b"pm5"], producer_id="p", seq=5).duplicate  # nor its producers rewound
        # seq 4 is still in the retry window, at its original offset (once, not twice)
        assert log.append([b"pm"], producer_id="p", seq=4) == AppendResult(300, 1, duplicate=True)
        with pytest.raises(SequenceError):
            log.append([b"pm"], producer_id="p", seq=3)


def test_lost_segment_between_others_is_reported_not_skipped(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 600)
    log.commit()
    log.shutdown()
    segs = seg_files(log.path)
    assert len(segs) >= 4
    lost = segs[1]
    lo, hi = int(lost.name.split(".")[0]), int(segs[2].name.split(".")[0])
    lost.unlink()
    log = Log.open(log.path, SMALL)
    assert log.info().repairs >= 1 and log.durable_offset == 600
    assert log.read(0, max_chunks=1000) == want[:lo]  # stops before the hole
    for o in (lo, hi - 1):
        with pytest.raises(CorruptData):
            log.read(o)  # a hole is an error, never an empty "caught up" answer
    assert read_all(log, start=hi) == want[hi:]


def test_complete_records_after_a_zeroed_hole_change_the_epoch(make_log: MakeLog) -> None:
    """Zeros where records were is what an OS crash leaves: the tail is dropped, readers must reset."""
    log, want = committed_log(make_log)
    log.shutdown()
    seg = seg_files(log.path)[0]
    recs = record_bounds(seg)
    pos, h = recs[-3]
    with open(seg, "r+b") as f:
        f.seek(pos)
        f.write(b"\0" * h.size)
    log = Log.open(log.path, SMALL)
    assert log.durable_offset == h.first_offset
    assert read_all(log) == want[: h.first_offset]
    assert log.info().epoch != "e0" and log.info().repairs == 1
    log = reopen(log)
    assert log.info().epoch != "e0" and log.info().repairs == 0


def test_missing_active_segment_file_starts_empty(make_log: MakeLog) -> None:
    log = make_log()
    log.shutdown()
    for p in log.path.glob("*.log"):
        p.unlink()
    log = Log.open(log.path, SMALL)
    assert log.durable_offset == 0
    log.append([b"a"])
    log.commit()
    assert reopen(log).read(0) == [b"a"]


def test_unreadable_checkpoint_is_a_repair(make_log: MakeLog) -> None:
    log = make_log()
    want = fill(log, 300)
    log.commit()
    log.seal_all()
    log.shutdown()
    (log.path / "checkpoint.json").write_bytes(b"{not json")
    log = Log.open(log.path, SMALL)
    assert log.info().repairs == 1
    assert read_all(log) == want


def test_index_file_names_match_sealed_segments(make_log: MakeLog) -> None:
    log = make_log()
    fill(log, 300)
    log.commit()
    log.seal_all()
    for z in seg_files(log.path, "zlog"):
        base = int(z.name.split(".")[0])
        assert (log.path / idx_name(base)).exists()


def test_two_damaged_records_in_one_segment(make_log: MakeLog) -> None:
    log, want = committed_log(make_log)
    log.shutdown()
    seg = seg_files(log.path)[0]
    recs = record_bounds(seg)
    (p1, h1), (p2, h2) = recs[5], recs[12]
    flip(seg, p1 + 2, bit=6)  # a length field
    flip(seg, p2 + 12, bit=1)  # a first_offset field
    log = Log.open(log.path, SMALL)
    assert log.durable_offset == len(want)
    assert [c for s in log.segments for c in s.corrupt] == [
        (h1.first_offset, h1.end_offset),
        (h2.first_offset, h2.end_offset),
    ]
    assert log.read(0, max_chunks=1000) == want[: h1.first_offset]
    assert log.read(h1.end_offset, max_chunks=1000) == want[h1.end_offset : h2.first_offset]
    assert read_all(log, start=h2.end_offset) == want[h2.end_offset :]
