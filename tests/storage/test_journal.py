"""The shared journal (storage/file/journal.py): one fsync per group commit whatever the number of
dirty streams, no fixed wait on an idle disk, replay after an OS crash (simulated by throwing away
every segment byte not yet checkpointed, ``drop_unsynced``), a journal cut at any byte, and how the
journal meets deletes, re-creates, seals, archiving and write or fsync errors."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL, drop_unsynced, read_all
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import LogOptions, StorageUnavailable, Store, StoreOptions, StreamGone, ids, record
from storage.file import journal
from storage.file.journal import Entry, Journal


def snapshot(store: Store, dest: Path) -> Path:
    """Copy a running store's data dir. Taken on the event loop, where every segment and journal
    write happens, so it is what a power cut at this instant could find (plus what drop_unsynced
    takes away)."""
    shutil.copytree(store.root, dest)
    return dest


def wal_files(root: Path) -> list[Path]:
    return sorted((root / "journal").glob("*.wal"))


# --- the frame format ---------------------------------------------------------------------------


def _frames(n: int) -> tuple[bytes, list[int]]:
    buf, ends = b"", []
    for i in range(n):
        e = Entry(f"ab/cd/{'0' * 32}/{i:020d}.log", 1.5, i * 10, bytes([i]) * (i * 7))
        buf += journal.encode_frame(i + 1, e)
        ends.append(len(buf))
    return buf, ends


def test_a_cut_at_any_byte_keeps_exactly_the_whole_frames_before_it() -> None:
    buf, ends = _frames(6)
    for cut in range(len(buf) + 1):
        frames, end = journal.scan(buf[:cut])
        whole = [e for e in ends if e <= cut]
        assert len(frames) == len(whole) and end == (whole[-1] if whole else 0), cut
        assert [s for s, _ in frames] == list(range(1, len(frames) + 1))


def test_a_flipped_bit_or_a_seq_that_does_not_follow_ends_the_journal() -> None:
    buf, ends = _frames(5)
    bad = bytearray(buf)
    bad[ends[2] + 12] ^= 0x10  # inside frame 4
    frames, end = journal.scan(bytes(bad))
    assert len(frames) == 3 and end == ends[2]
    # leftovers of a failed write: a valid frame whose seq does not follow its predecessor
    stale = buf[: ends[1]] + journal.encode_frame(7, Entry(f"ab/cd/{'0' * 32}/{0:020d}.log", 1.5, 0, b"x"))
    assert len(journal.scan(stale)[0]) == 2
    # a name that is not a segment file under streams/ is damage, never a path to write to
    evil = journal.encode_frame(1, Entry("../../etc/passwd", 1.5, 0, b"x"))
    assert journal.scan(evil) == ([], 0)


# --- one fsync per commit, no wait when idle ------------------------------------------------------


@pytest.mark.parametrize("helper", [True, False], ids=["sync-helper", "commit-thread"])
async def test_a_commit_of_64_dirty_streams_costs_one_fsync(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, helper: bool
) -> None:
    store = await store_factory(fsync="interval", sync_helper=helper)
    assert (store._sync_helper is not None) == helper
    streams = [await store.create(f"wide/{i}") for i in range(64)]
    calls = [0]
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def count(real: Any) -> Any:
        def wrapped(fd: int) -> None:
            calls[0] += 1
            real(fd)

        return wrapped

    monkeypatch.setattr(os, "fsync", count(real_fsync))
    monkeypatch.setattr(os, "fdatasync", count(real_fdatasync))
    commits0, fsyncs0 = store.counters["fsyncs"], store.counters["commit_fsyncs"]
    for round_ in range(20):
        await asyncio.gather(*(s.append([f"{round_}".encode()]) for s in streams))
    commits = store.counters["fsyncs"] - commits0
    assert 1 <= commits <= 40, commits  # each round's 64 appends share a commit or two
    # one fsync each: the journal's, never the 64 segment files' (by the helper process: none here)
    assert calls[0] == (0 if helper else commits)
    assert store.counters["commit_fsyncs"] - fsyncs0 == commits
    for s in streams:
        assert read_all(s) == [f"{r}".encode() for r in range(20)]


async def test_interval_commits_at_once_on_an_idle_disk(store_factory: Any) -> None:
    # the interval is no fixed wait any more: with a 2 s "interval" an idle append still takes one
    # fsync, not 2 s
    store = await store_factory(fsync="interval", interval_ms=2000)
    s = await store.create("idle")
    t = time.monotonic()
    for i in range(3):
        await s.append([b"%d" % i])
    assert time.monotonic() - t < 1.5
    assert read_all(s) == [b"0", b"1", b"2"]


# --- replay after an OS crash ---------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_replay_brings_back_every_acked_append_after_an_os_crash(
    store_factory: Any, tmp_path: Path, policy: str
) -> None:
    store = await store_factory(fsync=policy)
    want: dict[str, list[bytes]] = {}
    for i in range(8):
        s = await store.create(f"chat/{i}")
        want[s.id] = []
        for k in range(30 + i * 7):  # several segments of 4 KiB for the longer ones
            chunk = f"{i}:{k}|".encode() + b"z" * (k % 90)
            await s.append([chunk], producer_id="p", seq=k + 1)
            want[s.id].append(chunk)
        if i % 2:
            await s.close("done")
    crashed = snapshot(store, tmp_path / "crashed")
    assert wal_files(crashed) and any(p.stat().st_size for p in wal_files(crashed))
    drop_unsynced(crashed)
    store2 = await store_factory(crashed, fsync=policy)
    assert store2.counters["journal_replayed"] > 0
    assert not any(p.stat().st_size for p in wal_files(crashed))  # applied, fsynced, emptied
    for i, (sid, chunks) in enumerate(want.items()):
        s = store2.get(sid)
        assert read_all(s) == chunks, sid
        assert s.status == ("done" if i % 2 else "open")
        assert s.log.repairs == 0 and s.epoch == store.get(sid).epoch
        if s.status == "open":  # the producer's state came back with its records
            res = await s.append([chunks[-1]], producer_id="p", seq=len(chunks))
            assert res.duplicate and res.offset == len(chunks) - 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(appends=st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=200)), min_size=1, max_size=40),
       cut=st.floats(0, 1))  # fmt: skip
def test_a_journal_cut_at_any_byte_recovers_a_prefix_with_every_whole_frame(
    tmp_path_factory: pytest.TempPathFactory, appends: list[tuple[int, bytes]], cut: float
) -> None:
    """A journal torn anywhere (with every un-checkpointed segment byte lost): each stream comes back
    as a prefix of what was appended, holding at least every chunk of the frames before the cut."""
    tmp = tmp_path_factory.mktemp("cut")

    async def run() -> None:
        store = Store(tmp / "data", StoreOptions(fsync="interval", log=SMALL))
        await store.start()
        streams = [await store.create(f"s{i}") for i in range(4)]
        want: dict[str, list[bytes]] = {s.id: [] for s in streams}
        for i, data in appends:
            await streams[i].append([data])
            want[streams[i].id].append(data)
        crashed = snapshot(store, tmp / "crashed")
        await store.stop()
        drop_unsynced(crashed)
        (wal,) = [p for p in wal_files(crashed) if p.stat().st_size]
        buf = wal.read_bytes()
        k = int(len(buf) * cut)
        os.truncate(wal, k)
        kept: dict[str, int] = {}  # stream dir name -> chunks in whole frames before the cut
        for _, e in journal.scan(buf[:k])[0]:
            n = sum(h.count for _, h in record.iter_records(e.data) if h.type == record.DATA)
            kept[e.name.split("/")[2]] = kept.get(e.name.split("/")[2], 0) + n
        again = Store(crashed, StoreOptions(fsync="interval", log=SMALL))
        await again.start()
        try:
            for sid, chunks in want.items():
                got = read_all(again.get(sid))
                assert got == chunks[: len(got)], sid
                assert len(got) >= kept.get(ids.dir_name(sid), 0), sid
        finally:
            await again.stop()

    asyncio.run(run())


# --- what the journal must not resurrect ---------------------------------------------------------


async def test_replay_never_resurrects_a_deleted_stream_nor_writes_into_its_new_incarnation(
    store_factory: Any, tmp_path: Path
) -> None:
    store = await store_factory()
    gone = await store.create("gone")
    await gone.append([b"old"] * 50)
    again = await store.create("again")
    await again.append([b"first life"] * 50)
    await store.delete("gone")
    await store.delete("again")
    again = await store.create("again", replace_gone=True)  # same id, same directory, new stream
    await again.append([b"second"])
    crashed = snapshot(store, tmp_path / "crashed")
    drop_unsynced(crashed)
    store2 = await store_factory(crashed)
    with pytest.raises(StreamGone):
        store2.get("gone")
    assert not ids.stream_dir(crashed, "gone").exists()
    assert read_all(store2.get("again")) == [b"second"]


async def test_replay_skips_sealed_segments_and_archived_answers(store_factory: Any, tmp_path: Path) -> None:
    store = await store_factory(
        log=LogOptions(segment_bytes=1024, block_bytes=512, seal_level=1), seal_delay_s=0, archive_delay_s=0
    )
    long = await store.create("long")
    chunks = [b"%04d" % i + b"x" * 60 for i in range(100)]  # ~7 segments, sealed as they roll
    for c in chunks:
        await long.append([c])
    short = await store.create("short")
    await short.append([b"a short answer"])
    await short.close("done")
    deadline = time.monotonic() + 20
    while not (store.counters["archived"] >= 1 and sum(g.sealed for g in long.log.segments) >= 5):
        assert time.monotonic() < deadline, (store.counters, long.log.segments)
        await asyncio.sleep(0.02)
    crashed = snapshot(store, tmp_path / "crashed")
    drop_unsynced(crashed)
    store2 = await store_factory(crashed)
    assert read_all(store2.get("long")) == chunks
    assert read_all(store2.get("short")) == [b"a short answer"]
    assert not ids.stream_dir(crashed, "short").exists()  # archived: no directory came back


# --- checkpoints -------------------------------------------------------------------------------


async def test_checkpoints_fsync_the_segments_then_drop_old_journal_files(
    store_factory: Any, tmp_path: Path
) -> None:
    store = await store_factory(journal_bytes=2048)
    streams = [await store.create(f"c{i}") for i in range(4)]
    for k in range(60):
        await asyncio.gather(*(s.append([b"%d" % k * 20]) for s in streams))
    deadline = time.monotonic() + 10
    while store.counters["checkpoints"] < 3 or store._checkpointing:
        assert time.monotonic() < deadline, store.counters
        await asyncio.sleep(0.01)
    assert store.counters["checkpoint_fsyncs"] >= 4
    assert len(wal_files(store.root)) <= 2  # the active file (and one whose checkpoint runs)
    crashed = snapshot(store, tmp_path / "crashed")
    drop_unsynced(crashed)
    store2 = await store_factory(crashed)
    for s in streams:
        assert read_all(store2.get(s.id)) == [b"%d" % k * 20 for k in range(60)]
    await store.stop()
    assert wal_files(store.root) == []  # a clean stop checkpoints everything: nothing to replay


# --- write and fsync errors -------------------------------------------------------------------------


async def test_a_failed_journal_write_acknowledges_nothing_of_its_commit(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = await store_factory(fsync="interval")
    a, b = await store.create("a"), await store.create("b")
    await a.append([b"a0"], producer_id="p", seq=1)
    await b.append([b"b0"])
    real = Journal.write
    failed = []

    def full(self: Journal, *args: Any) -> None:
        if not failed:
            failed.append(1)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, *args)

    monkeypatch.setattr(Journal, "write", full)
    results = await asyncio.gather(
        a.append([b"a1"], producer_id="p", seq=2), b.append([b"b1"]), return_exceptions=True
    )
    assert all(isinstance(r, StorageUnavailable) and "ENOSPC" in str(r) for r in results), results
    assert read_all(a) == [b"a0"] and read_all(b) == [b"b0"]  # segments truncated back
    # the retry is written, at the same offsets (producer state rolled back too)
    assert (await a.append([b"a1"], producer_id="p", seq=2)).offset == 1
    assert (await b.append([b"b1"])).offset == 1
    crashed = snapshot(store, tmp_path / "crashed")
    drop_unsynced(crashed)
    store2 = await store_factory(crashed)
    assert read_all(store2.get("a")) == [b"a0", b"a1"] and read_all(store2.get("b")) == [b"b0", b"b1"]


async def test_appends_acked_after_a_journal_write_failed_midway_are_replayed(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A journal pwrite that fails inside ``Journal.write`` (its seqs already taken): the appends
    acknowledged after it must still come back from the journal after an OS crash. Their frames
    used to sit behind a seq gap in the same file, where replay stopped."""
    store = await store_factory(fsync="always")
    a = await store.create("a")
    await a.append([b"a0"])
    real = os.pwrite
    failed = []

    def full(fd: int, data: Any, at: int) -> int:
        if not failed and os.readlink(f"/proc/self/fd/{fd}").endswith(".wal"):
            failed.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, at)

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(StorageUnavailable, match="ENOSPC"):
        await a.append([b"a1"])
    monkeypatch.setattr(os, "pwrite", real)
    assert failed
    assert (await a.append([b"a1"])).offset == 1  # the retry, acknowledged
    assert (await a.append([b"a2"])).offset == 2
    crashed = snapshot(store, tmp_path / "crashed")
    # the OS crash takes the segment's bytes from the first one a journal frame holds (the file's
    # checkpointed part, fsynced, stays): replay must bring back every acknowledged one of them
    (seg,) = (crashed / "streams").rglob("*.log")
    frames = [e for p in wal_files(crashed) for _, e in journal.scan(p.read_bytes())[0]]
    os.truncate(seg, min(e.position for e in frames if e.name.endswith(seg.name)))
    store2 = await store_factory(crashed)
    assert read_all(store2.get("a")) == [b"a0", b"a1", b"a2"]
    assert store2.stats()["repairs"] == 0


def test_a_file_s_first_frame_may_jump_past_the_last_seq_but_never_go_back() -> None:
    buf, _ = _frames(2)
    e = Entry(f"ab/cd/{'0' * 32}/{0:020d}.log", 1.5, 0, b"x")
    assert [s for s, _ in journal.scan(journal.encode_frame(9, e), after=2)[0]] == [9]
    assert journal.scan(journal.encode_frame(2, e), after=2) == ([], 0)
    assert len(journal.scan(buf + journal.encode_frame(9, e))[0]) == 2  # within a file: by one


def test_the_journal_writes_zeros_ahead_so_commits_do_not_grow_the_file(tmp_path: Path) -> None:
    """Frames land in zeros written ahead of them (``PREALLOC``): small commits leave the file's
    size as it is (their fdatasync has no metadata to commit), and replay takes the zeros for the
    end of the frames, not for a torn tail."""
    (tmp_path / "streams").mkdir()
    j = Journal(tmp_path)
    e = Entry(f"ab/cd/{'0' * 32}/{0:020d}.log", 1.5, 0, b"y" * 100)
    j.write([e])
    j.sync()
    size = os.stat(j.cur.path).st_size
    assert size >= journal.PREALLOC
    for _ in range(50):
        j.write([e])
        j.sync()
    assert os.stat(j.cur.path).st_size == size
    buf = j.cur.path.read_bytes()
    frames, end = journal.scan(buf)
    assert len(frames) == 51 and end == j.cur.size < len(buf) and journal.zeros_only(buf, end)
    j.close(checkpoint=False)
    # a torn frame in the zeros (a crash mid-write) is still a torn tail, counted
    torn = tmp_path / "torn"
    (torn / "journal").mkdir(parents=True)
    (torn / "streams").mkdir()
    one = journal.encode_frame(1, e)
    (torn / "journal" / f"{1:016d}.wal").write_bytes(one + journal.encode_frame(2, e)[:40] + bytes(1000))
    cut = journal.replay(torn)
    assert cut.frames == 1 and cut.torn_bytes == 40 + 1000
    res = journal.replay(tmp_path)
    assert res.frames == 51 and res.torn_bytes == 0


def test_a_disk_that_keeps_failing_journal_writes_gets_one_new_file_not_one_per_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "streams").mkdir()
    j = Journal(tmp_path)
    e = Entry(f"ab/cd/{'0' * 32}/{0:020d}.log", 1.5, 0, b"z" * 10)
    j.write([e])
    real = os.pwrite

    def full(fd: int, data: Any, at: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    for _ in range(5):  # what ``_journal_commit`` does each time, with the disk still full
        if j.broken:
            j.rotate()
        monkeypatch.setattr(os, "pwrite", full)
        with pytest.raises(OSError):
            j.write([e])
        monkeypatch.setattr(os, "pwrite", real)
    assert len(j.old) == 1 and j.cur.size == 0 and not j.broken  # one rotation for the streak
    j.write([e])  # the disk is back: a seq past the used-up ones, in the file the streak left
    frames, _ = journal.scan(j.cur.path.read_bytes(), after=1)
    assert [s for s, _ in frames] == [j.seq]
    j.close(checkpoint=False)


async def test_a_failed_journal_fsync_stops_acks_and_moves_to_a_new_file(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store = await store_factory(fsync="always", sync_helper=False)  # this process's fdatasync fails
    s = await store.create("f")
    await s.append([b"a"])
    first = wal_files(store.root)
    real = os.fdatasync
    failed = []

    def once(fd: int) -> None:
        if not failed:
            failed.append(1)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real(fd)

    monkeypatch.setattr(os, "fdatasync", once)  # the journal's
    with pytest.raises(StorageUnavailable, match="fsync"):
        await s.append([b"unsure"])
    fresh = store.get("f")  # recovers from the files, which it fsyncs itself first
    got = read_all(fresh)
    assert got in ([b"a"], [b"a", b"unsure"])
    await fresh.append([b"after"])
    assert wal_files(store.root) != first  # never another frame into the file whose fsync failed
    crashed = snapshot(store, tmp_path / "crashed")
    drop_unsynced(crashed)
    store2 = await store_factory(crashed)
    assert read_all(store2.get("f")) == [*got, b"after"]
