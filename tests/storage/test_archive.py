"""The catalog and the archive (storage/file/catalog.py, archive.py) under a real Store on real files.

Finished answers leave their directories for rows of store.db and read back through the same
StreamHandle API (replay, seek, fork, delete, producer retries); damaged rows answer corrupt_data;
a torn WAL tail is dropped by SQLite's own checksums; the old layout migrates on start.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import SMALL, files_under, read_all

from storage import CorruptData, StreamClosed, StreamGone, ids
from storage.file import codec
from storage.file.archive import ArchivedLog

FIXTURE = Path(__file__).with_name("fixtures") / "layout-v1"


async def until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def archived_store(store_factory: Any, **kw: Any) -> Any:
    kw.setdefault("seal_delay_s", 0.0)
    kw.setdefault("archive_delay_s", 0.0)
    return await store_factory(**kw)


async def finish(store: Any, sid: str, chunks: list[bytes], per: int = 3, **kw: Any) -> None:
    s = await store.create(sid, **kw)
    for i in range(0, len(chunks), per):
        await s.append(chunks[i : i + per], "p", i // per + 1)
    await s.close("done")


async def test_finished_answers_move_into_the_archive_and_read_back(
    store_factory: Any, tmp_path: Path
) -> None:
    store = await archived_store(store_factory)
    answers = {f"chat/{i // 8}/{i % 8}": [f"{i}.{k} ".encode() for k in range(5 + i * 7)] for i in range(40)}
    await asyncio.gather(*(finish(store, sid, chunks) for sid, chunks in answers.items()))
    live = await store.create("chat/9/live")
    await live.append([b"still going"])
    await until(lambda: store.counters["archived"] == 40)
    # nothing of a finished answer is left in files: the data dir is the db and the live stream
    streams = [p for p in files_under(tmp_path / "data" / "streams")]
    assert all(ids.dir_name("chat/9/live") in str(p) for p in streams), streams
    assert len([d for d in (tmp_path / "data" / "streams").iterdir()]) == 1  # empty fan-out dirs pruned
    for sid, chunks in answers.items():
        s = store.get(sid)
        assert isinstance(s.log, ArchivedLog) and s.status == "done"
        assert read_all(s) == chunks
        if len(chunks) > 3:
            assert s.read(3, max_chunks=2) == chunks[3:5]  # a seek into the middle
        assert s.read(len(chunks)) == []
        with pytest.raises(StreamClosed):
            await s.append([b"late"])
        # the producer's last append, retried, is still recognised
        last = (len(chunks) + 2) // 3
        retry = await s.append(chunks[(last - 1) * 3 :], "p", last)
        assert retry.duplicate and retry.offset == (last - 1) * 3
        if last > 2:  # and so is an older one inside the retry window
            older = await s.append(chunks[(last - 3) * 3 : (last - 2) * 3], "p", last - 2)
            assert older.duplicate and older.offset == (last - 3) * 3
        info = s.info()
        assert (info.chunks, info.raw_bytes) == (len(chunks), sum(map(len, chunks)))
    assert store.list("chat/3/") == [f"chat/3/{k}" for k in range(8)]
    assert store.list("chat/", limit=3) == ["chat/0/0", "chat/0/1", "chat/0/2"]
    assert await store.open_stream_ids() == ["chat/9/live"]


async def test_archived_answers_survive_a_restart_and_stay_unloaded(
    store_factory: Any, tmp_path: Path
) -> None:
    store = await archived_store(store_factory)
    chunks = [f"t{k}".encode() for k in range(200)]  # several blocks (SMALL: 1 KiB blocks)
    await finish(store, "long", chunks, per=7, labels={"k": "v"})
    await until(lambda: store.counters["archived"] == 1)
    epoch = store.get("long").epoch
    await store.stop()
    again = await archived_store(store_factory, root=store.root)
    assert again.stats()["streams"] == 1 and again.stats()["streams_loaded"] == 0
    s = again.get("long")
    assert isinstance(s.log, ArchivedLog)
    assert read_all(s) == chunks and s.epoch == epoch and s.meta.labels == {"k": "v"}
    for start in (0, 1, 57, 150, 199):
        assert s.read(start, max_chunks=3) == chunks[start : start + 3]
    assert (await s.producer_state("p")) is not None
    await again.set_labels("long", {"k": "w"})
    await again.stop()
    third = await archived_store(store_factory, root=store.root)
    assert third.get("long").meta.labels == {"k": "w"}


async def test_a_fork_of_an_archived_answer_shares_its_blocks(store_factory: Any) -> None:
    store = await archived_store(store_factory, archive_delay_s=0.3)
    chunks = [f" c{k}".encode() for k in range(30)]
    a, b = await store.create("chat/1/a"), await store.create("chat/1/b")
    await a.append([b" other", b" answer"])
    await b.append(chunks)
    await asyncio.gather(a.close("done"), b.close("done"))
    await until(lambda: store.counters["archived"] == 2)
    key, at = _keys(store.root)["chat/1/b"]
    assert at == 2 and _keys(store.root)["chat/1/a"][0] == key  # a pack's second answer
    blocks = len(_block_rows(store.root))
    fork = await store.fork("chat/1/b", "chat/2/a", upto=10)
    assert read_all(fork) == chunks[:10]
    assert fork.read(9, 5) == chunks[9:10]
    info = fork.info()
    assert info.shared_segments == 1 and info.raw_bytes == sum(map(len, chunks[:10]))
    # nothing was copied: the fork's files hold no chunk of the prefix
    assert sum(p.stat().st_size for p in files_under(fork.log.path) if p.suffix == ".log") == 0
    await fork.append([b" new"])
    assert read_all(fork) == [*chunks[:10], b" new"]
    whole = await store.fork("chat/1/b", "chat/3/a")  # the whole answer
    assert read_all(whole) == chunks
    await store.delete("chat/1/b")
    await store.delete("chat/1/a")
    with pytest.raises(StreamGone):
        store.get("chat/1/b")
    assert len(_block_rows(store.root)) == blocks  # the forks still use the parent's block
    assert read_all(fork) == [*chunks[:10], b" new"]
    await fork.close("done")
    await until(lambda: isinstance(store.get("chat/2/a").log, ArchivedLog))
    archived = store.get("chat/2/a")
    assert read_all(archived) == [*chunks[:10], b" new"] and archived.read(10) == [b" new"]
    await store.stop()
    store = await archived_store(store_factory, root=store.root)
    assert read_all(store.get("chat/2/a")) == [*chunks[:10], b" new"]
    assert read_all(store.get("chat/3/a")) == chunks
    assert (await store.fork("chat/2/a", "chat/4/a", upto=11)).read(0, 100) == [*chunks[:10], b" new"]
    await store.delete("chat/2/a")
    await store.delete("chat/3/a")
    assert read_all(store.get("chat/4/a")) == [*chunks[:10], b" new"]  # a copy: its source was a fork
    conn = sqlite3.connect(store.root / "store.db")
    keys = {pos >> 32 for (pos,) in conn.execute("SELECT pos FROM blocks")}
    users = {arch for (arch,) in conn.execute("SELECT arch FROM streams WHERE arch IS NOT NULL")}
    conn.close()
    assert keys <= users  # the last user gone, the parent's block went with it
    assert len(keys) < blocks + 1


async def test_a_fork_whose_row_never_committed_is_removed_on_start(store_factory: Any) -> None:
    store = await archived_store(store_factory)
    await finish(store, "src", [b" a", b" b", b" c"])
    await until(lambda: store.counters["archived"] == 1)
    fork = await store.fork("src", "fork", upto=2)
    path = fork.log.path
    await store.stop()
    # as if the fork's transaction (its row and its reference to the parent's block) never committed
    conn = sqlite3.connect(store.root / "store.db")
    conn.execute("DELETE FROM streams WHERE id = 'fork'")
    conn.execute("UPDATE blocks SET refs = NULL")
    conn.commit()
    conn.close()
    (store.root / "CLEAN_SHUTDOWN").unlink()
    assert (path / "prefix.json").exists()
    again = await archived_store(store_factory, root=store.root)
    assert again.list() == ["src"] and not path.exists()
    await again.delete("src")
    assert _block_rows(again.root) == []


async def test_a_corrupt_archived_block_answers_corrupt_data(store_factory: Any) -> None:
    store = await archived_store(store_factory, fsync="never")
    # longer than archive.SMALL_ANSWER: its sealed blocks are archived as they are, several of them
    chunks = [f"x{k:04d}".encode() * 20 for k in range(900)]
    await finish(store, "bad", chunks, per=10)
    await until(lambda: store.counters["archived"] == 1)
    await store.stop()
    conn = sqlite3.connect(store.root / "store.db")
    rows = [(p & 0xFFFFFFFF, d) for p, d in conn.execute("SELECT pos, data FROM blocks ORDER BY pos")]
    assert len(rows) >= 3
    first, data = rows[1]
    flipped = bytearray(data)
    flipped[40] ^= 0x10
    conn.execute("UPDATE blocks SET data = ? WHERE pos & 0xFFFFFFFF = ?", (bytes(flipped), first))
    conn.commit()
    conn.close()
    again = await archived_store(store_factory, root=store.root)
    s = again.get("bad")
    assert s.read(0, max_chunks=1000) == chunks[:first]  # served up to the damage, no further
    with pytest.raises(CorruptData):
        s.read(first)
    nxt = rows[2][0]
    assert s.read(nxt, max_chunks=1000) == chunks[nxt:]  # and after it


async def test_a_torn_wal_tail_is_dropped(store_factory: Any) -> None:
    """A crash while SQLite appends a commit leaves a torn frame at the end of store.db-wal; its
    checksum fails and the commit is ignored, everything before it is intact."""
    store = await archived_store(store_factory)
    await finish(store, "a", [b"one", b"two"])
    await until(lambda: store.counters["archived"] == 1)
    root = store.root
    shutil.copy(root / "store.db-wal", root / "wal.copy")
    await store.stop()
    shutil.copy(root / "wal.copy", root / "store.db-wal")  # as if killed before a checkpoint
    with open(root / "store.db-wal", "ab") as f:
        f.write(b"\x00\x2d\xe2\x18" + b"torn frame" * 300)
    (root / "CLEAN_SHUTDOWN").unlink(missing_ok=True)
    again = await archived_store(store_factory, root=root)
    assert read_all(again.get("a")) == [b"one", b"two"]
    s = await again.create("b")
    await s.append([b"after"])
    assert again.list() == ["a", "b"]


async def test_expiry_comes_from_the_indexed_deadline(store_factory: Any) -> None:
    store = await archived_store(store_factory)
    await finish(store, "short", [b"x"], ttl=5.0)
    await finish(store, "forever", [b"y"])
    await until(lambda: store.counters["archived"] == 2)
    await store.stop()
    again = await archived_store(store_factory, root=store.root, retention_every=3600)
    import time

    assert await again.expire(now=time.time()) == []
    assert await again.expire(now=time.time() + 6) == ["short"]
    assert again.list() == ["forever"] and again.stats()["streams_loaded"] <= 2


async def test_a_crash_leaves_directories_and_rows_that_start_reconciles(
    store_factory: Any, tmp_path: Path
) -> None:
    store = await archived_store(store_factory, archive_delay_s=None)
    await finish(store, "kept", [b"k"])
    await store.stop()
    root = store.root
    (root / "CLEAN_SHUTDOWN").unlink()
    # a row lost with an unsynced commit: the directory is the truth, and comes back
    conn = sqlite3.connect(root / "store.db")
    conn.execute("DELETE FROM streams WHERE id = 'kept'")
    conn.commit()
    conn.close()
    again = await archived_store(store_factory, root=root)
    await until(lambda: not again.catalog.open_ids())  # the walk set its status from the files
    assert again.list() == ["kept"] and again.get("kept").status == "done"
    assert read_all(again.get("kept")) == [b"k"]
    await until(lambda: again.counters["archived"] == 1)


async def test_the_old_layout_is_migrated_on_start(store_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "old"
    shutil.copytree(FIXTURE, root)
    assert not (root / "store.db").exists()
    # the fixture's tombstone was written on 2026-12-01: a long enough ttl keeps it answering "gone"
    forever = 100 * 365 * 86400.0
    store = await store_factory(
        root=root, log=SMALL, seal_delay_s=0.0, archive_delay_s=0.0, tombstone_ttl=forever
    )
    assert store.list() == ["chat/1/a", "chat/1/b", "chat/2/a"]
    with pytest.raises(StreamGone):
        store.get("gone/1")  # its tombstone still answers
    a = store.get("chat/1/a")
    assert a.status == "done" and a.meta.labels == {"role": "assistant"}
    assert read_all(a) == [c for i in range(50) for c in (f"tok{i} ".encode(), b"x")]
    b = store.get("chat/1/b")
    assert (b.status, b.close_info.error if b.close_info else None) == ("error", "model failed")
    assert read_all(b) == [f"long answer token {i};".encode() for i in range(300)]
    assert b.meta.ttl == 3600.0
    open_ = store.get("chat/2/a")
    assert open_.status == "open" and read_all(open_) == [b"still ", b"open"]
    assert (await open_.producer_state("p2")) is not None
    assert await store.open_stream_ids() == ["chat/2/a"]
    # the finished ones then move into the archive; the open one keeps its files
    await until(lambda: store.counters["archived"] == 2)
    assert isinstance(store.get("chat/1/b").log, ArchivedLog)
    assert read_all(store.get("chat/1/b")) == [f"long answer token {i};".encode() for i in range(300)]
    assert {p.parent.name for p in (root / "streams").glob("*/*/*/meta.json")} == {ids.dir_name("chat/2/a")}
    r = await open_.append([b" more"], "p2", 8)
    assert r.offset == 2
    await store.stop()
    again = await store_factory(root=root, log=SMALL)
    assert again.list() == ["chat/1/a", "chat/1/b", "chat/2/a"]
    assert read_all(again.get("chat/1/a"))[:2] == [b"tok0 ", b"x"]


async def test_a_dictionary_is_trained_and_earlier_answers_recoded(
    store_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storage.file import archive

    monkeypatch.setattr(archive, "DICT_TRAIN_AFTER", 30)
    monkeypatch.setattr(archive, "DICT_BYTES", 4096)
    store = await archived_store(store_factory, fsync="never")
    words = [b" the", b" stream", b" answer", b" resumes", b" after", b" a", b" reconnect", b"."]
    answers = {f"d/{i:03d}": [words[(i * 7 + k * 3) % len(words)] for k in range(40 + i)] for i in range(60)}
    for sid, chunks in answers.items():
        await finish(store, sid, chunks, per=5)
    await until(lambda: store.counters["archived"] == 60 and store.counters.get("recoded", 0) > 0, 30)
    assert store.counters["dicts_trained"] == 1
    for sid, chunks in answers.items():
        assert read_all(store.get(sid)) == chunks
    conn = sqlite3.connect(store.root / "store.db")
    flags = {d[4] for (d,) in conn.execute("SELECT data FROM blocks")}
    conn.close()
    # bare zstd frames of separated chunks; with the dictionary unless it did not make that block smaller
    assert 0x1B in flags and flags <= {0x19, 0x1B}
    await store.stop()
    again = await archived_store(store_factory, root=store.root)
    for sid, chunks in answers.items():
        s = again.get(sid)
        assert read_all(s) == chunks and s.read(7, max_chunks=2) == chunks[7:9]


async def test_a_total_bytes_cap_drops_the_oldest_archived_answers_and_frees_their_pages(
    store_factory: Any,
) -> None:
    store = await archived_store(store_factory, fsync="never", retention_every=3600)
    import random

    big = [random.Random(k).randbytes(4000) for k in range(40)]  # 160 KB each: long, not recoded
    for i in range(6):
        await finish(store, f"a/{i}", [c + f"/{i}".encode() for c in big], per=8)
        # one at a time: archive order is seal order, and two seals may finish either way round
        await until(lambda: store.counters["archived"] == i + 1)  # noqa: B023
    db = store.root / "store.db"
    per = store.catalog.archived_bytes // 6
    await store.stop()
    before = db.stat().st_size
    store = await archived_store(
        store_factory,
        root=store.root,
        fsync="never",
        retention_every=3600,
        max_total_bytes=2 * per + per // 2,
    )
    assert sorted(await store.expire()) == ["a/0", "a/1", "a/2", "a/3"]
    assert store.list() == ["a/4", "a/5"] and read_all(store.get("a/5"))[0] == big[0] + b"/5"
    assert store.catalog.archived_bytes <= 2 * per + per // 2
    await store.stop()
    assert db.stat().st_size < before / 2  # the pages went back to the file system


def _keys(root: Path) -> dict[str, tuple[int, int | None]]:
    conn = sqlite3.connect(root / "store.db")
    try:
        return {sid: (arch, at) for sid, arch, at in conn.execute("SELECT id, arch, member_at FROM streams")}
    finally:
        conn.close()


def _block_rows(root: Path) -> list[tuple[int, int | None]]:
    conn = sqlite3.connect(root / "store.db")
    try:
        return [(pos >> 32, refs) for pos, refs in conn.execute("SELECT pos, refs FROM blocks")]
    finally:
        conn.close()


async def test_a_chats_short_answers_share_one_block_freed_with_its_last_answer(store_factory: Any) -> None:
    store = await archived_store(store_factory, archive_delay_s=0.5)
    answers = {
        f"chat/{c}/{k}": [f" w{c}.{k}.{i}".encode() for i in range(10 + 3 * k)]
        for c in range(3)
        for k in range(4)
    }
    streams = {sid: await store.create(sid) for sid in answers}
    for sid, chunks in answers.items():
        await streams[sid].append(chunks)
    # closed side by side: due together, archived in one batch, packed by chat
    await asyncio.gather(*(s.close("done") for s in streams.values()))
    await until(lambda: store.counters["archived"] == 12)
    keys = _keys(store.root)
    for c in range(3):
        members = [keys[f"chat/{c}/{k}"] for k in range(4)]
        assert len({arch for arch, _ in members}) == 1, members  # one key, one block, for the chat
        assert [at or 0 for _, at in members] == [0, 10, 23, 39]  # each answer's first chunk in it
    assert sorted(refs for _, refs in _block_rows(store.root)) == [4, 4, 4]
    for sid, chunks in answers.items():
        s = store.get(sid)
        assert read_all(s) == chunks  # exactly its own chunks, never the next answer's
        assert s.read(len(chunks) - 1, 100) == chunks[-1:]
        assert s.read(len(chunks)) == []
    before = store.catalog.archived_bytes
    for k in range(3):  # deleting answers of the chat frees nothing while one still uses the block
        await store.delete(f"chat/0/{k}")
        assert store.catalog.archived_bytes == before
        assert read_all(store.get("chat/0/3")) == answers["chat/0/3"]
    assert sorted(refs or 1 for _, refs in _block_rows(store.root)) == [1, 4, 4]
    await store.delete("chat/0/3")  # the last one frees it
    assert store.catalog.archived_bytes < before and len(_block_rows(store.root)) == 2
    await store.stop()
    again = await store_factory(root=store.root)
    for sid, chunks in answers.items():
        if not sid.startswith("chat/0/"):
            assert read_all(again.get(sid)) == chunks


def test_pack_groups_short_answers_by_chat_up_to_the_pack_size() -> None:
    from storage import CloseInfo, StreamMeta
    from storage.file import archive
    from storage.file.catalog import ArchivedAnswer

    def item(sid: str, chunks: list[bytes]) -> archive.Loaded:
        a = ArchivedAnswer(StreamMeta(id=sid, created=0.0, epoch="e"), len(chunks), sum(map(len, chunks)),
                           CloseInfo("done"), {}, {})  # fmt: skip
        return archive.Loaded(a, chunks, [])

    big = [b"x" * 1000] * 20  # 20 KB: two of them do not fit one pack
    items = [item("c/1/a", [b"a", b"b"]), item("c/2/a", big), item("c/1/b", [b"c"]), item("c/2/b", big)]
    packs, samples = archive.pack(items, archive.compressor(None), None)
    assert [[(a.meta.id, a.member_at) for a in p.answers] for p in packs] == [
        [("c/2/a", 0)],
        [("c/1/a", 0), ("c/1/b", 2)],
        [("c/2/b", 0)],
    ]
    assert len(samples) == 4
    _, body = codec.decode(0, packs[1].blocks[0][1], codec.MAX_BARE, {})
    assert body.slice(0, 10) == [b"a", b"b", b"c"]


def _loaded(sid: str, chunks: list[bytes]) -> Any:
    from storage import CloseInfo, StreamMeta
    from storage.file import archive
    from storage.file.catalog import ArchivedAnswer

    a = ArchivedAnswer(StreamMeta(id=sid, created=0.0, epoch="0123456789abcdef"), len(chunks),
                       sum(map(len, chunks)), CloseInfo("done"), {}, {})  # fmt: skip
    return archive.Loaded(a, chunks, [])


def test_pack_grows_a_chats_last_pack_while_it_has_room_and_the_store_has_no_dictionary() -> None:
    from storage.file import archive

    cctx = archive.compressor(None)
    old = codec.encode(0, [b"a", b"b", b"c"], cctx, None)
    seen: list[str] = []

    def joinable(chat: str) -> tuple[int, bytes, int] | None:
        seen.append(chat)
        return (7, old, 3) if chat == "c/1" else None

    items = [_loaded("c/1/x", [b"d", b"e"]), _loaded("c/2/x", [b"f"]), _loaded("c/1/y", [b"g"])]
    packs, _ = archive.pack(items, cctx, None, joinable)
    assert seen == ["c/1", "c/2"]  # once per chat and batch
    grown = [p for p in packs if p.chat == "c/1"][0]
    assert grown.joins == (7, old) and grown.raw == 6
    assert [(a.meta.id, a.member_at) for a in grown.answers] == [("c/1/x", 3), ("c/1/y", 5)]
    _, body = codec.decode(0, grown.blocks[0][1], codec.MAX_BARE, {})
    assert body.slice(0, 10) == [b"a", b"b", b"c", b"d", b"e", b"g"]  # the old chunks first, unmoved
    fresh = [p for p in packs if p.chat == "c/2"][0]
    assert fresh.joins is None and fresh.answers[0].member_at == 0
    # no room left in the chat's pack: a pack of its own
    full = (7, old, archive.PACK_BYTES - 1)
    packs, _ = archive.pack([_loaded("c/1/z", [b"hh"])], cctx, None, lambda chat: full)
    assert packs[0].joins is None and packs[0].answers[0].member_at == 0
    # a store with a dictionary never grows packs (never even looks)
    packs, _ = archive.pack([_loaded("c/1/z", [b"hh"])], cctx, 1, lambda chat: pytest.fail("asked"))
    assert packs[0].joins is None
    # a damaged old pack is left alone (it answers corrupt_data when read): a pack of its own
    bad = old[:-1] + bytes([old[-1] ^ 1])
    packs, _ = archive.pack([_loaded("c/1/z", [b"hh"])], cctx, None, lambda chat: (7, bad, 3))
    assert packs[0].joins is None


def test_a_pack_is_grown_or_recoded_only_if_its_block_is_still_the_one_read(tmp_path: Path) -> None:
    from storage.file import archive
    from storage.file.catalog import Catalog

    cat = Catalog(tmp_path / "store.db")
    cctx = archive.compressor(None)

    def pack(sid: str, chunks: list[bytes], joinable: Any = None) -> Any:
        item = _loaded(sid, chunks)
        cat.add(item.answer.meta)
        packs, _ = archive.pack([item], cctx, None, joinable or cat.joinable)
        return packs

    def chunks_of(key: int) -> list[bytes]:
        got = cat.block_at(key, 0)
        assert got is not None
        return codec.decode(0, got[1], codec.MAX_BARE, {})[1].slice(0, 100)

    try:
        assert cat.archive(pack("c/1/a", [b"one", b"two"])) == ["c/1/a"]
        got = cat.joinable("c/1")
        assert got is not None
        key, blob, raw = got
        assert raw == 6 and cat.joinable("c/2") is None
        grow = pack("c/1/b", [b"three"])
        assert grow[0].joins == (key, blob)
        recoded_before = [(key, 0, codec.encode(0, [b"one", b"two"], cctx, None), blob)]
        assert cat.archive(grow) == ["c/1/b"]
        assert cat.get("c/1/b").arch == key and cat.get("c/1/b").member_at == 2  # type: ignore[union-attr]
        # a recoding read before the pack grew leaves the grown block as it is
        cat.replace_blocks(recoded_before)
        assert chunks_of(key) == [b"one", b"two", b"three"]
        # a grow prepared from the block before that one is refused: the answer stays in its files,
        # and the chat's pack is forgotten, so the next try starts a pack of its own
        stale = pack("c/1/c", [b"four"], lambda chat: (key, blob, raw))
        assert stale[0].joins == (key, blob) and cat.archive(stale) == []
        assert cat.get("c/1/c").arch is None and cat.joinable("c/1") is None  # type: ignore[union-attr]
        again = archive.pack([_loaded("c/1/c", [b"four"])], cctx, None, cat.joinable)[0]
        assert again[0].joins is None and cat.archive(again) == ["c/1/c"]
        assert cat.get("c/1/c").arch != key  # type: ignore[union-attr]
        assert chunks_of(key) == [b"one", b"two", b"three"]
        refs = dict(cat._r.execute("SELECT pos >> 32, refs FROM blocks"))
        assert refs[key] == 2
        total = cat._r.execute("SELECT sum(length(data)) FROM blocks").fetchone()[0]
        assert cat.archived_bytes == total
    finally:
        cat.close()


def test_a_pack_recoded_with_a_dictionary_is_not_grown_without_one(tmp_path: Path) -> None:
    """A batch packed before the first dictionary that reads a block the recoding pass has coded
    with it since: growing it would code the pack again without the dictionary, behind the pass."""
    import zstandard

    from storage.file import archive
    from storage.file.catalog import Catalog

    cat = Catalog(tmp_path / "store.db")
    plain = archive.compressor(None)
    zdict = zstandard.ZstdCompressionDict(b"one two three four five six seven " * 64)
    try:
        first = _loaded("c/1/a", [b"one", b"two"])
        cat.add(first.answer.meta)
        assert cat.archive(archive.pack([first], plain, None, cat.joinable)[0]) == ["c/1/a"]
        got = cat.joinable("c/1")
        assert got is not None
        key, blob, _ = got
        recoded = codec.encode(0, [b"one", b"two"], archive.compressor(zdict), 1)
        cat.replace_blocks([(key, 0, recoded, blob)])
        later = _loaded("c/1/b", [b"three"])
        cat.add(later.answer.meta)
        grow = archive.pack([later], plain, None, cat.joinable, {1: zdict})[0]
        assert grow[0].joins is not None  # it read the recoded block and would grow it
        assert cat.archive(grow) == []  # refused: the answer stays in its files for the next batch
        stored = cat.block_at(key, 0)
        assert stored is not None and stored[1] == recoded
    finally:
        cat.close()


async def test_a_chats_answers_archived_apart_share_one_pack(store_factory: Any) -> None:
    from test_archive_crash import check_database

    store = await archived_store(store_factory)
    answers = {f"chat/0/{k}": [f" w{k}.{i}".encode() for i in range(6 + 5 * k)] for k in range(4)}
    for n, (sid, chunks) in enumerate(answers.items()):  # one at a time: a batch each
        await finish(store, sid, chunks)
        await until(lambda: store.counters["archived"] == n + 1)  # noqa: B023
    keys = _keys(store.root)
    assert len({keys[sid][0] for sid in answers}) == 1, keys  # one key, one block, for the chat
    assert [keys[sid][1] or 0 for sid in answers] == [0, 6, 17, 33]
    assert _block_rows(store.root) == [(keys["chat/0/0"][0], 4)]
    for sid, chunks in answers.items():
        s = store.get(sid)
        assert read_all(s) == chunks and s.read(len(chunks) - 2, 100) == chunks[-2:]
        assert s.read(len(chunks)) == []
    await store.stop()
    check_database(store.root / "store.db")
    again = await archived_store(store_factory, root=store.root)
    for sid, chunks in answers.items():
        assert read_all(again.get(sid)) == chunks
    await again.delete("chat/0/0")
    await again.delete("chat/0/2")
    assert read_all(again.get("chat/0/3")) == answers["chat/0/3"]
    await finish(again, "chat/0/4", [b" after", b" a restart"])  # a pack of its own: none is known
    await until(lambda: again.counters["archived"] == 1)
    assert _keys(again.root)["chat/0/4"][0] != keys["chat/0/0"][0]
    for sid in ("chat/0/1", "chat/0/3", "chat/0/4"):
        await again.delete(sid)
    assert again.catalog.archived_bytes == 0 and _block_rows(again.root) == []
    await again.stop()
    check_database(again.root / "store.db")


async def test_a_clean_stop_gives_the_free_pages_back(store_factory: Any) -> None:
    import random

    store = await archived_store(store_factory, fsync="never", retention_every=3600)
    big = [random.Random(k).randbytes(4000) for k in range(40)]  # 160 KB: overflow pages
    for i in range(2):
        await finish(store, f"a/{i}", [c + f"/{i}".encode() for c in big], per=8)
        await until(lambda: store.counters["archived"] == i + 1)  # noqa: B023
    await store.delete("a/0")  # its pages go to the free list, not yet to the file system
    used, free = store.catalog.page_bytes()
    assert free >= 100_000
    await store.stop()
    db = store.root / "store.db"
    assert not db.with_name("store.db-wal").exists()  # checkpointed and deleted
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
        size = (
            conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        )
    finally:
        conn.close()
    assert size <= used and db.stat().st_size == size
    again = await archived_store(store_factory, root=store.root)
    assert read_all(again.get("a/1"))[0] == big[0] + b"/1" and again.list() == ["a/1"]


async def test_a_schema_1_catalog_is_migrated_and_its_answers_read_back(
    store_factory: Any, tmp_path: Path
) -> None:
    root = tmp_path / "v1"
    shutil.copytree(Path(__file__).with_name("fixtures") / "catalog-v1", root)
    store = await store_factory(root=root, log=SMALL, seal_delay_s=0.0, archive_delay_s=0.0)
    conn = sqlite3.connect(root / "store.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
    assert store.list() == ["chat/1/0", "chat/1/1", "chat/1/2", "chat/2/long", "chat/3/open"]
    for k in range(3):
        s = store.get(f"chat/1/{k}")
        assert isinstance(s.log, ArchivedLog) and s.meta.labels == {"role": "assistant"}
        assert read_all(s) == [c for i in range(20 + k) for c in (f" word{i}".encode(), b",")]
        assert s.read(5, 2) == [b",", b" word3"]
        retry = await s.append([f" word{19 + k}".encode(), b","], "p1", 20 + k)
        assert retry.duplicate
    assert read_all(store.get("chat/2/long")) == [f"long answer token {i};".encode() for i in range(300)]
    # schema-1 rows are deleted as before (one row per key); new answers are packed beside them
    before = store.catalog.archived_bytes
    await store.delete("chat/1/0")
    assert store.catalog.archived_bytes < before
    await finish(store, "chat/4/a", [b" new", b" one"])
    await until(lambda: store.counters["archived"] >= 1)
    assert read_all(store.get("chat/4/a")) == [b" new", b" one"]
    assert read_all(store.get("chat/3/open")) == [b"still ", b"open"]


async def test_stats_report_allocated_bytes_beside_logical_ones(store_factory: Any) -> None:
    store = await archived_store(store_factory)
    for i in range(5):
        await finish(store, f"chat/1/{i}", [f" token {i}.{k}".encode() for k in range(50)])
    live = await store.create("chat/2/live")
    await live.append([b"x" * 5000])
    await until(lambda: store.counters["archived"] == 5)
    st = store.stats()
    for key in ("catalog_allocated_bytes", "catalog_wal_allocated_bytes", "catalog_free_bytes",
                "archive_allocated_bytes", "streams_allocated_bytes", "allocated_bytes", "archived_bytes"):  # fmt: skip
        assert isinstance(st[key], int), key
    fp = await store.footprint()
    st = store.stats()
    assert st["footprint_age_s"] >= 0 and fp["archive"] == st["archive_allocated_bytes"]
    # the archive's pages hold every archived byte; the live stream's files take whole fs blocks
    assert st["archive_allocated_bytes"] >= st["archived_bytes"] > 0
    assert st["streams_allocated_bytes"] >= 5000
    assert st["catalog_allocated_bytes"] >= st["archive_allocated_bytes"]
    assert st["allocated_bytes"] == st["catalog_allocated_bytes"] + st["streams_allocated_bytes"]
