"""resumable-hub storage: engines that keep streams durable. Knows nothing of the hub.

``storage.engine`` is the interface the hub uses (``Engine``, ``StreamHandle`` and their value
types); ``storage.file`` is the embedded file engine (the default); ``storage.errors`` the stable
error codes every engine raises. ``open_engine(url)`` builds the engine a ``--store`` value names.
"""

from .engine import (
    CLOSE_STATUSES,
    PRODUCER_WINDOW,
    AppendResult,
    CloseInfo,
    CloseStatus,
    Engine,
    Listener,
    ProducerState,
    Status,
    StreamHandle,
    StreamInfo,
    StreamMeta,
    open_engine,
)
from .errors import (
    ChunkTooLarge,
    CorruptData,
    InvalidStreamId,
    OffsetOutOfRange,
    SequenceError,
    SequenceGap,
    StorageError,
    StorageUnavailable,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)
from .file import POLICIES, Log, LogOptions, Store, StoreOptions, Stream, record

__all__ = [
    "CLOSE_STATUSES",
    "POLICIES",
    "PRODUCER_WINDOW",
    "AppendResult",
    "ChunkTooLarge",
    "CloseInfo",
    "CloseStatus",
    "CorruptData",
    "Engine",
    "InvalidStreamId",
    "Listener",
    "Log",
    "LogOptions",
    "OffsetOutOfRange",
    "ProducerState",
    "SequenceError",
    "SequenceGap",
    "Status",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "StoreOptions",
    "Stream",
    "StreamClosed",
    "StreamExists",
    "StreamGone",
    "StreamHandle",
    "StreamInfo",
    "StreamMeta",
    "StreamNotFound",
    "open_engine",
    "record",
]
