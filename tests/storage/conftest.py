"""Fixtures for the storage tests: small log options so rolls and seals happen, helpers, and the
engine fixtures of the contract suite (one parameter per engine kind).

Storage tests drive ``Log`` directly (no event loop) wherever they can; ``Store`` tests are async and
get a ``store_factory`` that stops every store it made, so no task or file handle outlives a test.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.redisproc import RedisServer
from storage import Engine, Log, LogOptions, Store, StoreOptions, StreamMeta, open_engine
from storage.file import journal

# Tiny segments and blocks: a few dozen chunks roll a segment, a handful of them fill a zstd block.
SMALL = LogOptions(segment_bytes=4096, block_bytes=1024, seal_level=3)


def new_meta(stream_id: str = "s") -> StreamMeta:
    return StreamMeta(id=stream_id, created=time.time(), epoch="e0")


def read_all(log: Any, start: int = 0, max_chunks: int = 7) -> list[bytes]:
    """Read from ``start`` to the durable end in small steps, so reads cross records and segments."""
    out: list[bytes] = []
    offset = start
    while True:
        got = log.read(offset, max_chunks=max_chunks)
        if not got:
            return out
        out += got
        offset += len(got)


def drop_unsynced(data: Path) -> None:
    """Do to a data dir's segment files what an OS crash may do to bytes the store never fsynced,
    for every byte the journal holds (the worst case for replay): each journaled range of a segment
    file is zeroed, and a file whose every byte is journaled loses its directory entry. Only the
    journal was fsynced before those appends were acknowledged; replay must bring each one back.
    (Bytes past the journal, of a commit cut short, are left as they are: those were never
    acknowledged, and losing them is the ordinary torn tail that recovery already handles.)"""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for p in sorted((data / "journal").glob("*.wal")):
        frames, _ = journal.scan(p.read_bytes())
        for _, e in frames:
            ranges.setdefault(e.name, []).append((e.position, e.position + len(e.data)))
    for name, rs in ranges.items():
        seg = data / "streams" / name
        try:
            size = seg.stat().st_size
        except FileNotFoundError:
            continue
        if min(a for a, _ in rs) == 0 and max(b for _, b in rs) >= size:
            seg.unlink()
            continue
        with open(seg, "r+b") as f:
            for a, b in rs:
                b = min(b, size)
                if a < b:
                    f.seek(a)
                    f.write(bytes(b - a))


def files_under(root: Path) -> list[Path]:
    return [Path(d) / f for d, _, fs in os.walk(root) for f in fs]


def seg_files(path: Path, ext: str = "log") -> list[Path]:
    return sorted(path.glob(f"*.{ext}"))


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "stream"


@pytest.fixture
def make_log(log_path: Path) -> Iterator[Callable[..., Log]]:
    """Create a fresh Log at ``log_path`` (small options by default); shut down every Log it made."""
    made: list[Log] = []

    def make(opts: LogOptions = SMALL, stream_id: str = "s") -> Log:
        log = Log.create(log_path, new_meta(stream_id), opts)
        made.append(log)
        return log

    yield make
    for log in made:
        log.shutdown()


@pytest.fixture
async def store_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await store_factory(**StoreOptions fields)`` -> a started Store on ``tmp_path / 'data'``."""
    stores: list[Store] = []

    async def make(root: Path | None = None, **kw: Any) -> Store:
        kw.setdefault("log", SMALL)
        store = Store(root or tmp_path / "data", StoreOptions(**kw))
        await store.start()
        stores.append(store)
        return store

    yield make
    for s in stores:
        if s._started:
            await s.stop()


# --- the engine contract suite (test_engine_contract.py): one parameter per engine kind ----------

ENGINES = ["file", "redis"]
_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (AOF on, appendfsync always), killed at the end; each
    test keeps to its own key prefix (``redis_prefix``)."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_prefix() -> str:
    return f"t{os.getpid()}.{next(_prefixes)}:"


@pytest.fixture(params=ENGINES)
async def make_engine(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], Awaitable[Engine]]]:
    made: list[Engine] = []
    kind = request.param
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        prefix: str = request.getfixturevalue("redis_prefix")

    async def make() -> Engine:
        if kind == "file":
            eng = open_engine(str(tmp_path / "data"), log=SMALL, retention_every=0.05, seal_delay_s=0.0)
        elif kind == "redis":
            eng = open_engine(server.url, prefix=prefix, retention_every=0.05, seal_delay_s=0.0)
        else:  # pragma: no cover
            raise AssertionError(kind)
        await eng.start()
        made.append(eng)
        return eng

    yield make
    for eng in made:
        await eng.stop()  # stopping twice is harmless


@pytest.fixture
async def engine(make_engine: Callable[[], Awaitable[Engine]]) -> Engine:
    return await make_engine()
