"""How an archived block is framed and coded. Pure functions on bytes, no I/O.

An archived block is one SQLite blob, addressed by (archive key, first offset)::

    u32 crc32 | u8 flags | [uvarint dictionary id] | uvarint count | payload

The checksum covers the first offset (from the row's key, as u64) and everything after itself, so a
flipped bit, or a blob under the wrong key, answers ``corrupt_data``; the length is the blob's own.

``flags``:

* ``ZSTD``: the payload is one zstd frame (with ``DICT``, against the trained dictionary named next).
  With ``BARE`` the frame has neither the magic number nor the content size (the block's own flags
  and checksum say what it is; decompression is bounded by the caller's limit instead): 5-6 bytes
  less per block, ~2% of a chat-sized answer.
* ``SEPARATED``: after decompression the payload is ``record.separated_body``'s layout (a separator
  byte, then the chunks joined by it). zstd sees the token boundaries in the text, where they are
  nearly free; this is how short answers are coded (and how sealed segments are, so a long
  answer's copied blocks are SEPARATED too).
* ``PREDICTED`` (written by earlier versions, still read): ``uvarint text length | text | length
  column``, each length coded against the pre-token boundary of the text at that point.
* none of the layout flags: ``record.encode_body``'s layout (lengths first, then the chunk bytes).

A short answer's block may be a *pack*: the chunks of several answers of one chat, one after the
other, coded as one block (one frame, one dictionary context, one row): each answer's catalog row
says where its chunks start in it (``member_at``). Big sealed blocks are copied as they were
sealed, never recompressed.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Sequence
from itertools import accumulate

import zstandard

from ..errors import CorruptData
from . import record

ZSTD = 0x01
DICT = 0x02
PREDICTED = 0x04
SEPARATED = 0x08
BARE = 0x10

MAX_BARE = 512 << 10  # decoded bytes of a bare block (a pack or a short answer, separators included)

_HEAD = struct.Struct("<IB")
_local = threading.local()  # decompressors, per thread (they are not thread-safe) and dictionary


def _decompressor(d: zstandard.ZstdCompressionDict | None, bare: bool) -> zstandard.ZstdDecompressor:
    # made once: loading a 110 KiB dictionary into a new decompressor costs ~0.2 ms per read
    cache: dict[tuple[int, bool], tuple[object, zstandard.ZstdDecompressor]] | None
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (id(d), bare)
    got = cache.get(key)
    if got is None or got[0] is not d:
        if len(cache) > 64:
            cache.clear()
        fmt = zstandard.FORMAT_ZSTD1_MAGICLESS if bare else zstandard.FORMAT_ZSTD1
        got = cache[key] = (d, zstandard.ZstdDecompressor(dict_data=d, format=fmt))
    return got[1]


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
    out.data, out.starts, out.parts = text, list(accumulate(lengths, initial=0)), None
    return out


def compressor(level: int, d: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    """What ``encode`` needs: bare frames (no magic, no content size, no checksum: the block has
    its own CRC), no dictionary id (the block names it)."""
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        format=zstandard.FORMAT_ZSTD1_MAGICLESS,
        write_content_size=0,
        write_checksum=0,
        write_dict_id=0,
    )
    return zstandard.ZstdCompressor(dict_data=d, compression_params=params)


def encode(first: int, chunks: Sequence[bytes], cctx: zstandard.ZstdCompressor, dict_id: int | None) -> bytes:
    """A small block (one answer, or a pack of several), coded SEPARATED with the current
    dictionary (if any); ``cctx`` comes from ``compressor``."""
    body = record.separated_body(chunks)
    flags = ZSTD | BARE | (DICT if dict_id is not None else 0)
    if body is None:
        body = record.encode_body(chunks)  # every byte value occurs: binary chunks, column layout
    else:
        flags |= SEPARATED
    if len(body) > MAX_BARE:
        raise ValueError(f"a bare block holds at most {MAX_BARE} bytes, not {len(body)}")
    return frame(first, len(chunks), flags, cctx.compress(body), dict_id)


def sample(chunks: Sequence[bytes]) -> bytes:
    """One answer as a dictionary training sample: coded as ``encode`` codes it."""
    return record.separated_body(chunks) or record.encode_body(chunks)


def from_record(rec: bytes) -> tuple[int, bytes]:
    """A sealed segment's record, reframed as it is (its compressed body is not touched)."""
    h = record.parse_header(rec)
    assert h is not None
    _, body = record.split_payload(h, memoryview(rec)[record.HEADER_SIZE :])
    flags = ZSTD if h.flags & record.COMPRESSED else 0
    if h.flags & record.SEPARATED:
        flags |= SEPARATED
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
    d = None
    if flags & DICT:
        dict_id, pos = _read_uvarint(blob, pos)
        d = dicts.get(dict_id)
        if d is None:
            raise CorruptData(f"archived block at offset {first} needs dictionary {dict_id}, which is gone")
    dctx = _decompressor(d, bool(flags & BARE))
    count, pos = _read_uvarint(blob, pos)
    if count == 0 or count > record.MAX_COUNT:
        raise CorruptData(f"archived block at offset {first} holds {count} chunks")
    body: bytes = blob[pos:]
    if flags & ZSTD:
        if flags & BARE:  # a bare frame declares no size: max_output_size bounds it (and is allocated)
            max_raw = min(max_raw, MAX_BARE)
        else:
            declared = zstandard.frame_content_size(body)
            if declared < 0 or declared > max_raw:
                raise CorruptData(f"archived block declares {declared} bytes (limit {max_raw})")
        try:
            body = dctx.decompress(body, max_output_size=max_raw)
        except zstandard.ZstdError as e:
            raise CorruptData(f"archived block does not decompress: {e}") from None
    if flags & SEPARATED:
        return count, record.Body.separated(body, count)
    if flags & PREDICTED:
        return count, _predicted_chunks(body, count)
    return count, record.Body(body, count)
