"""Stream ids -> directory names. A client's id is never used as a path.

Ids are free-form text (``chat/42/answer-3`` is fine) but bounded: 1..512 UTF-8 bytes, no NUL or
other control characters. The directory is derived from a hash of the id, fanned out two levels
(``ab/cd/abcd...``) so millions of streams never sit in one directory; the id itself is kept in the
stream's meta file. ``../../etc/passwd`` therefore becomes an ordinary hex name under the data dir.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import InvalidStreamId

MAX_ID_BYTES = 512


def validate(stream_id: object) -> str:
    if not isinstance(stream_id, str):
        raise InvalidStreamId("stream id must be a string")
    raw = stream_id.encode("utf-8", "surrogatepass")
    if not raw:
        raise InvalidStreamId("stream id must not be empty")
    if len(raw) > MAX_ID_BYTES:
        raise InvalidStreamId(f"stream id is {len(raw)} bytes; the limit is {MAX_ID_BYTES}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in stream_id):
        raise InvalidStreamId("stream id must not contain NUL, control characters or lone surrogates")
    return stream_id


def dir_name(stream_id: str) -> str:
    return hashlib.blake2b(validate(stream_id).encode(), digest_size=16).hexdigest()


def stream_dir(root: Path, stream_id: str) -> Path:
    name = dir_name(stream_id)
    return root / "streams" / name[:2] / name[2:4] / name
