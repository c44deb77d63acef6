"""resumable-hub storage: one append-only, segmented, zstd-sealed log per stream. Knows nothing of the hub."""

from .errors import (
    ChunkTooLarge,
    CorruptData,
    InvalidStreamId,
    OffsetOutOfRange,
    SequenceError,
    StorageError,
    StorageUnavailable,
    StreamClosed,
    StreamExists,
    StreamGone,
    StreamNotFound,
)
from .log import AppendResult, Log, LogOptions, StreamInfo, StreamMeta
from .segment import CloseInfo
from .store import POLICIES, Listener, Store, StoreOptions, Stream

__all__ = [
    "POLICIES",
    "AppendResult",
    "ChunkTooLarge",
    "CloseInfo",
    "CorruptData",
    "InvalidStreamId",
    "Listener",
    "Log",
    "LogOptions",
    "OffsetOutOfRange",
    "SequenceError",
    "StorageError",
    "StorageUnavailable",
    "Store",
    "StoreOptions",
    "Stream",
    "StreamClosed",
    "StreamExists",
    "StreamGone",
    "StreamInfo",
    "StreamMeta",
    "StreamNotFound",
]
