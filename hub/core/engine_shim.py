"""TEMPORARY (until storage/engine.py lands on main): the current file store given the engine
Protocol's names, so the hub can be written against the Protocol today. Deleted at the merge."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from storage import AppendResult, CloseInfo, Store, Stream, StreamMeta
from storage import StreamInfo as _BaseInfo
from storage.segment import ProducerState

__all__ = [
    "AppendResult",
    "CloseInfo",
    "Engine",
    "Listener",
    "ProducerState",
    "StreamHandle",
    "StreamInfo",
    "StreamMeta",
]


class StreamInfo(_BaseInfo):
    shared_segments: int = 0


CloseStatus = Literal["done", "error", "cancelled"]
CLOSE_STATUSES: tuple[CloseStatus, ...] = ("done", "error", "cancelled")


class Listener(Protocol):
    """Gets one stream's durable chunks in order, then its end (or its deletion)."""

    def on_chunks(self, stream: StreamHandle, offset: int, chunks: list[bytes]) -> None: ...
    def on_end(self, stream: StreamHandle, info: CloseInfo) -> None: ...
    def on_gone(self, stream: StreamHandle) -> None: ...


@runtime_checkable
class StreamHandle(Protocol):
    """One stream as the hub sees it."""

    @property
    def id(self) -> str: ...
    @property
    def meta(self) -> StreamMeta: ...
    @property
    def epoch(self) -> str: ...
    @property
    def next_offset(self) -> int:
        """The durable, visible end: the offset the next chunk will get."""
        ...

    @property
    def status(self) -> str:
        """``open`` until the close is durable, then its status."""
        ...

    @property
    def ended(self) -> bool: ...
    @property
    def close_info(self) -> CloseInfo | None: ...

    async def append(
        self,
        chunks: Sequence[bytes],
        producer_id: str | None = None,
        seq: int | None = None,
        epoch: int = 0,
        *,
        stream_seq: str | None = None,
        close: bool = False,
    ) -> AppendResult:
        """Append durably; ``close`` also closes the stream (``done``) in the same durable step."""
        ...

    async def close(
        self, status: str = "done", error: str | None = None, producer: tuple[str, int, int] | None = None
    ) -> None: ...

    async def read_chunks(
        self, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None
    ) -> list[bytes]:
        """Durable chunks from ``from_offset`` (at most ``max_chunks``/about ``max_bytes``); [] at the end."""
        ...

    async def wait(self, offset: int, timeout: float | None = None) -> bool:
        """Until a chunk at ``offset`` is readable or the stream ended; False on timeout."""
        ...

    async def producer_state(self, producer_id: str) -> ProducerState | None: ...
    def info(self) -> StreamInfo: ...
    def touch(self) -> None:
        """Count an access that reads nothing, for ``meta.idle_ttl``."""
        ...

    def listen(self, listener: Listener) -> None: ...
    def unlisten(self, listener: Listener) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """Many streams. Errors are ``storage.errors.StorageError`` subclasses with stable codes."""

    # Events the hub listens to: a stream was created (or forked), its end became durable, it was
    # deleted or expired. Callbacks run on the event loop and must not block.
    on_create: list[Callable[[StreamHandle], None]]
    on_end: list[Callable[[StreamHandle], None]]
    on_delete: list[Callable[[str], None]]

    async def start(self) -> None: ...
    async def stop(self) -> None:
        """Make everything acknowledged-or-pending durable, then release every resource."""
        ...

    async def create(
        self,
        stream_id: str,
        *,
        ttl: float | None = None,
        expires_at: float | None = None,
        content_type: str | None = None,
        labels: dict[str, str] | None = None,
        exist_ok: bool = False,
        idle_ttl: float | None = None,
    ) -> StreamHandle: ...

    async def get_stream(self, stream_id: str) -> StreamHandle:
        """The stream, or ``stream_not_found`` / ``stream_gone`` / ``invalid_stream_id``."""
        ...

    async def stream_exists(self, stream_id: str) -> bool: ...
    async def list_streams(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """Ids starting with ``prefix``, sorted, at most ``limit``."""
        ...

    async def open_stream_ids(self) -> list[str]:
        """Ids of the streams not closed yet (a restarted hub gives their producers a lease)."""
        ...

    async def fork(
        self, source_id: str, stream_id: str, upto: int | None = None, labels: dict[str, str] | None = None
    ) -> StreamHandle:
        """A new open stream whose first ``upto`` chunks (default all) are the source's."""
        ...

    async def delete(self, stream_id: str, reason: str = "deleted", durable: bool = True) -> None: ...
    async def set_labels(self, stream_id: str, labels: dict[str, str]) -> None: ...
    async def expire(self, now: float | None = None) -> list[str]:
        """Run retention once (it also runs by itself): the ids it deleted."""
        ...

    def stats(self) -> dict[str, Any]: ...


async def _read_chunks(
    self: Stream, from_offset: int, max_chunks: int = 1024, max_bytes: int | None = None
) -> list[bytes]:
    return self.read(from_offset, max_chunks, max_bytes)


async def _producer_state(self: Stream, producer_id: str) -> ProducerState | None:
    return self.log.producers.get(producer_id)


def _listen(self: Stream, listener: Any) -> None:
    self.listeners.add(listener)


def _unlisten(self: Stream, listener: Any) -> None:
    self.listeners.discard(listener)


async def _get_stream(self: Store, stream_id: str) -> Stream:
    return self.get(stream_id)


async def _stream_exists(self: Store, stream_id: str) -> bool:
    return self.exists(stream_id)


async def _list_streams(self: Store, prefix: str = "", limit: int | None = None) -> list[str]:
    ids = self.list(prefix)
    return ids if limit is None else ids[:limit]


for _name, _fn in {
    "read_chunks": _read_chunks,
    "producer_state": _producer_state,
    "listen": _listen,
    "unlisten": _unlisten,
}.items():
    setattr(Stream, _name, _fn)
Stream.meta = property(lambda self: self.log.meta)  # type: ignore[attr-defined]
Stream.epoch = property(lambda self: self.log.meta.epoch)  # type: ignore[attr-defined]
Store.get_stream = _get_stream  # type: ignore[attr-defined]
Store.stream_exists = _stream_exists  # type: ignore[attr-defined]
Store.list_streams = _list_streams  # type: ignore[attr-defined]


_old_info = Stream.info


def _info(self: Stream) -> _BaseInfo:
    i = _old_info(self)
    return StreamInfo(
        **{f: getattr(i, f) for f in i.__struct_fields__},
        shared_segments=sum(1 for seg in self.log.segments if seg.sealed),
    )


Stream.info = _info  # type: ignore[method-assign]
