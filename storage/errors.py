"""Storage errors: one small hierarchy, each with a stable ``code`` that the hub forwards to clients."""

from __future__ import annotations


class StorageError(Exception):
    """Base class. ``code`` is stable and documented in docs/protocol.md; the message is for people."""

    code = "storage_error"


class InvalidStreamId(StorageError):
    code = "invalid_stream_id"


class StreamNotFound(StorageError):
    code = "stream_not_found"


class StreamGone(StorageError):
    """The stream existed and was deleted or expired; distinct from never having existed."""

    code = "stream_gone"


class StreamExists(StorageError):
    code = "stream_exists"


class StreamClosed(StorageError):
    code = "stream_closed"


class OffsetOutOfRange(StorageError):
    code = "offset_out_of_range"


class ChunkTooLarge(StorageError):
    code = "chunk_too_large"


class SequenceError(StorageError):
    """A producer sequence number that is neither the next one nor a remembered retry."""

    code = "sequence_error"


class SequenceGap(SequenceError):
    """A producer seq past the next one: appends in between were lost on the way (resend them)."""

    code = "sequence_gap"


class CorruptData(StorageError):
    """A record failed its checksum. Its chunks are never served; the rest of the stream still is."""

    code = "corrupt_data"


class StorageUnavailable(StorageError):
    """Writing failed (disk full, I/O error, failed fsync). Nothing was acknowledged by the failed call."""

    code = "storage_unavailable"
