"""How an archived block is framed and coded. Pure functions on bytes, no I/O.

An archived block is one SQLite blob, addressed by (archive key, first offset)::

    u32 crc32 | u8 flags | [uvarint dictionary id] | uvarint count | payload

The checksum covers the first offset (from the row's key, as u64) and everything after itself, so a
flipped bit, or a blob under the wrong key, answers ``corrupt_data``; the length is the blob's own.

``flags``:

* ``ZSTD``: the payload is one zstd frame (with ``DICT``, against the trained dictionary named next).
* ``PREDICTED``: after decompression the payload is ``uvarint text length | text | length column``,
  where each chunk's length is coded against the pre-token boundary of the text at that point (the
  shape of a BPE pre-tokenizer: a word with its leading space, a number, one punctuation mark, a run
  of whitespace): ``0`` when the chunk ends exactly there, else ``length + 1``. Token streams cut at
  those boundaries code ~90% of their lengths as ``0``, which zstd then all but removes (the plain
  column was a quarter of the stored bytes of a short answer).
* neither: the payload is ``record.encode_body``'s layout (lengths first, then the chunk bytes),
  compressed (``ZSTD``) or not: big sealed blocks are copied as they were sealed, never recompressed.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from itertools import accumulate

import zstandard

from ..errors import CorruptData
from . import record

ZSTD = 0x01
DICT = 0x02
PREDICTED = 0x04

_HEAD = struct.Struct("<IB")
_FIRST = struct.Struct("<Q")
PRETOKEN = re.compile(rb" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\s+")


def _crc(first: int, rest: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(rest, zlib.crc32(_FIRST.pack(first)))


def _uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_uvarint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise CorruptData("archived block: truncated number")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def frame(first: int, count: int, flags: int, payload: bytes, dict_id: int | None = None) -> bytes:
    rest = bytearray([flags])
    if flags & DICT:
        assert dict_id is not None
        _uvarint(rest, dict_id)
    _uvarint(rest, count)
    rest += payload
    return struct.pack("<I", _crc(first, rest)) + bytes(rest)


def predicted_body(chunks: Sequence[bytes]) -> bytes:
    text = b"".join(chunks)
    out = bytearray()
    _uvarint(out, len(text))
    out += text
    pos = 0
    match = PRETOKEN.match
    for c in chunks:
        n = len(c)
        m = match(text, pos)
        out.append(0) if m is not None and m.end() - pos == n else _uvarint(out, n + 1)
        pos += n
    return bytes(out)


def _predicted_chunks(body: bytes, count: int) -> record.Body:
    size, pos = _read_uvarint(body, 0)
    text = body[pos : pos + size]
    if len(text) != size:
        raise CorruptData("archived block: text is truncated")
    pos += size
    lengths = []
    at = 0
    match = PRETOKEN.match
    for _ in range(count):
        v, pos = _read_uvarint(body, pos)
        if v == 0:
            m = match(text, at)
            if m is None:
                raise CorruptData("archived block: a predicted length past the text")
            n = m.end() - at
        else:
            n = v - 1
        lengths.append(n)
        at += n
    if at != size or pos != len(body):
        raise CorruptData("archived block: chunk lengths do not add up")
    out = record.Body.__new__(record.Body)
    out.data, out.starts = text, list(accumulate(lengths, initial=0))
    return out


def encode(first: int, chunks: Sequence[bytes], cctx: zstandard.ZstdCompressor, dict_id: int | None) -> bytes:
    """A small block, coded with predicted lengths and the current dictionary (if any)."""
    payload = cctx.compress(predicted_body(chunks))
    flags = ZSTD | PREDICTED | (DICT if dict_id is not None else 0)
    return frame(first, len(chunks), flags, payload, dict_id)


def from_record(rec: bytes) -> tuple[int, bytes]:
    """A sealed segment's record, reframed as it is (its compressed body is not touched)."""
    h = record.parse_header(rec)
    assert h is not None
    _, body = record.split_payload(h, memoryview(rec)[record.HEADER_SIZE :])
    flags = ZSTD if h.flags & record.COMPRESSED else 0
    return h.first_offset, frame(h.first_offset, h.count, flags, bytes(body))


def decode(
    first: int, blob: bytes, max_raw: int, dicts: dict[int, zstandard.ZstdCompressionDict]
) -> tuple[int, record.Body]:
    """(count, chunks) of an archived block; ``CorruptData`` if anything does not check out."""
    if len(blob) < _HEAD.size + 1:
        raise CorruptData(f"archived block at offset {first} is truncated")
    crc, flags = _HEAD.unpack_from(blob)
    if _crc(first, memoryview(blob)[4:]) != crc:
        raise CorruptData(f"archived block at offset {first} failed its checksum")
    pos = _HEAD.size
    dctx = zstandard.ZstdDecompressor()
    if flags & DICT:
        dict_id, pos = _read_uvarint(blob, pos)
        d = dicts.get(dict_id)
        if d is None:
            raise CorruptData(f"archived block at offset {first} needs dictionary {dict_id}, which is gone")
        dctx = zstandard.ZstdDecompressor(dict_data=d)
    count, pos = _read_uvarint(blob, pos)
    if count == 0 or count > record.MAX_COUNT:
        raise CorruptData(f"archived block at offset {first} holds {count} chunks")
    body: bytes = blob[pos:]
    if flags & ZSTD:
        declared = zstandard.frame_content_size(body)
        if declared < 0 or declared > max_raw:
            raise CorruptData(f"archived block declares {declared} bytes (limit {max_raw})")
        try:
            body = dctx.decompress(body, max_output_size=max_raw)
        except zstandard.ZstdError as e:
            raise CorruptData(f"archived block does not decompress: {e}") from None
    if flags & PREDICTED:
        return count, _predicted_chunks(body, count)
    return count, record.Body(body, count)
