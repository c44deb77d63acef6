"""The storage engine interface: what the hub may know of storage, whatever keeps the bytes.

Two engines implement it: the embedded file engine (``storage.file``, the default: one segment log
per stream on local disk) and the Redis Streams engine (``storage.redis``, for hubs side by side).
The hub holds an ``Engine`` and ``StreamHandle``s and nothing else: no engine's internals, no
``isinstance`` on engines. One contract test suite (tests/storage/test_engine_contract.py) runs
against every engine.

Invariants every engine keeps (the contract tests check each):

* Offsets are dense chunk numbers 0, 1, 2, ... per stream, assigned in arrival order and never reused.
* ``append`` returns only once its chunks are durable under the engine's policy; only durable chunks
  are readable, waited for, or handed to listeners, so no reader sees a chunk a crash takes back.
* A producer id + epoch + seq makes an append idempotent (Kafka's idempotent producer). For a
  producer the stream knows, in the same epoch: seq = last + 1 appends; a seq among its last
  ``PRODUCER_WINDOW`` appends is a retry, answered with that append's original offset and count,
  ``duplicate=True``, writing nothing; an older seq is ``sequence_error``; seq > last + 1 is
  ``sequence_gap``. An older epoch is ``sequence_error`` (fenced); a newer epoch, or a producer the
  stream does not know, starts at any seq. Every decision, errors included, is answered only once
  the state it was made from is durable (a crash must not undo what a refusal implied).
* The close (status ``done``, ``error`` or ``cancelled``) is itself durable; afterwards appends are
  refused with ``stream_closed`` and every reader learns the status.
* A deleted or expired id answers ``stream_gone`` (not ``stream_not_found``) while its tombstone lives,
  to ``create`` and ``fork`` too: an id is never reused while a reader may still hold offsets of the
  old stream. ``create(replace_gone=True)`` (the Durable Streams PUT, whose protocol lets a deleted
  id be created again at once) is the one exception.
* A stream's ``epoch`` changes whenever the engine may have lost chunks that were already delivered
  (recovery truncated them, Redis lost writes): a reader holding an offset of an older epoch must
  start again (``reset``), never continue silently across a gap.
* Listeners of one stream see its durable chunks in offset order, each exactly once, then its end.

Methods that may need a round trip (a network engine) are ``async``; the cheap properties of a
handle (``next_offset``, ``status``, ...) are the engine's freshest knowledge, kept current by the
engine as appends and closes become durable, through whichever hub they came.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

CloseStatus = Literal["done", "error", "cancelled"]
Status = Literal["open", "done", "error", "cancelled"]
CLOSE_STATUSES: tuple[CloseStatus, ...] = ("done", "error", "cancelled")
PRODUCER_WINDOW = 5  # retries answered as duplicates: a producer's last appends, as in Kafka


class StreamMeta(msgspec.Struct):
    """What a stream is, fixed at creation (labels are the one mutable part)."""

    id: str
    created: float
    epoch: str
    ttl: float | None = None  # seconds to keep the stream after it closes
    expires_at: float | None = None  # absolute expiry (unix time), open or closed
    content_type: str | None = None
    labels: dict[str, str] = {}
    # seconds without a read or write after which the stream expires, open or closed (the Durable
    # Streams ``Stream-TTL``: a sliding window, unlike ``ttl`` which counts from the close)
    idle_ttl: float | None = None


class CloseInfo(msgspec.Struct, frozen=True):
    status: str
    error: str | None = None
    at: float = 0.0


@dataclass(slots=True)
class ProducerState:
    """The last append a producer made to a stream: what a retry is compared with."""

    epoch: int
    seq: int
    first_offset: int
    count: int


@dataclass(slots=True)  # one per append: not frozen, built 4x faster (not a NamedTuple: ``count``)
class AppendResult:
    offset: int  # first offset of the appended chunks
    count: int
    duplicate: bool = False  # a retry of an append that already landed: nothing was written


class StreamInfo(msgspec.Struct):
    id: str
    epoch: str
    status: str
    error: str | None
    chunks: int
    raw_bytes: int
    stored_bytes: int
    segments: int
    created: float
    closed: float | None
    last_append: float | None
    repairs: int
    repair_notes: list[str]
    labels: dict[str, str]
    shared_segments: int = 0  # sealed segments shared with the stream this one was forked from


class Listener(Protocol):
    """Gets one stream's durable chunks in order, then its end (or its deletion, or a reset)."""

    def on_chunks(self, stream: StreamHandle, offset: int, chunks: list[bytes]) -> None: ...
    def on_end(self, stream: StreamHandle, info: CloseInfo) -> None: ...
    def on_gone(self, stream: StreamHandle) -> None: ...
    def on_reset(self, stream: StreamHandle, epoch: str) -> None:
        """The stream's epoch changed while listened to (the engine may have lost chunks already
        delivered: Redis restarted without ``appendfsync always``): offsets of the old epoch mean
        nothing now; chunks from offset 0 of ``epoch`` follow (``stream.next_offset`` of them exist)."""
        ...


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


class Promise(Protocol):
    """What an engine's ``append_nowait`` hands back to be told of durability: the part of an
    asyncio future the hub uses (an asyncio future is one)."""

    def done(self) -> bool: ...
    def cancelled(self) -> bool: ...
    def exception(self) -> BaseException | None: ...
    def add_done_callback(self, fn: Callable[[Any], object], /) -> None: ...


@runtime_checkable
class Engine(Protocol):
    """Many streams. Errors are ``storage.errors.StorageError`` subclasses with stable codes.

    Optional, outside the protocol: ``append_nowait(stream_id, chunks, producer_id, seq)``, a plain
    append's synchronous part for callers that would rather not run a task per append: it returns
    ``(stream, result, future)`` with the offset assigned and a future that resolves once durable
    (None: already), or None when only ``StreamHandle.append`` can answer. The "future" needs only
    ``done``, ``cancelled``, ``exception`` and ``add_done_callback``: the file store's is a
    ``Durable``, whose callbacks run inside the commit that settles it."""

    # Events the hub listens to: a stream was created (or forked), its end became durable, it was
    # deleted or expired. Callbacks run on the event loop and must not block.
    on_create: list[Callable[[StreamHandle], None]]
    on_end: list[Callable[[StreamHandle], None]]
    on_delete: list[Callable[[str], None]]
    # A Stop asked through another hub sharing this engine (``request_cancel`` there): the hub
    # tells the stream's producer if it is connected here. An unshared engine never fires it.
    on_cancel: list[Callable[[str], object]]

    @property
    def shared(self) -> bool:
        """Several hubs use this engine at once (Redis): a hub then locks no data dir, and producer
        leases live in the engine (``lease``) rather than in one hub's memory."""
        ...

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
        replace_gone: bool = False,
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

    async def request_cancel(self, stream_id: str) -> None:
        """Tell every other hub on this engine that ``stream_id``'s producer was asked to stop."""
        ...

    # Producer leases kept in a shared engine, so that whichever hub a producer is connected to
    # keeps its answer alive, and any hub ends it once no hub does (an unshared engine leaves
    # leases to its one hub's memory, hub/core/lease.py, and implements these as no-ops).
    async def lease(self, stream_ids: Sequence[str], seconds: float, *, new: bool = False) -> None:
        """Their producers are alive: the streams' leases lapse ``seconds`` from now unless renewed
        (``new``: only streams without a lease get one)."""
        ...

    async def lapse_leases(self, now: float | None = None) -> list[str]:
        """End every open stream whose lease ran out as ``error``/``producer_lost``, exactly once
        across hubs; the ids this call ended."""
        ...

    def stats(self) -> dict[str, Any]: ...


def open_engine(url: str, **options: Any) -> Engine:
    """The engine a ``--store`` value names: a directory path or ``file:PATH`` for the embedded file
    engine (``options`` are ``storage.file.StoreOptions`` fields), ``redis://host:port/db`` for Redis."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            from .redis import RedisEngine
        except ImportError as e:  # pragma: no cover - until the Redis engine lands
            raise ValueError(f"the Redis engine is not available: {e}") from None
        engine: Engine = RedisEngine(url, **options)
        return engine
    from .file import Store, StoreOptions

    path = url.removeprefix("file:")
    return Store(path, StoreOptions(**options))
