"""Record framing: the unit written to a segment file. Pure functions on bytes, no I/O.

A record is a fixed 22-byte header followed by ``length`` payload bytes::

    u32 length | u32 crc32(header[8:] + payload) | u8 type | u8 flags | u64 first_offset | u32 count

``first_offset``/``count`` say which chunk offsets the record holds, so an index entry or a scan
never needs to open the payload. The checksum covers everything after itself, so a torn write, a
bit flip or a stale tail is detected before a single byte of it is served.

A DATA payload is ``[producer] body``. The optional producer block (flag PRODUCER) makes the
idempotency state part of the very record it protects, so it is durable exactly when the data is.
The body keeps chunk lengths in their own column (uvarints) ahead of the concatenated chunk bytes:
interleaving lengths with text halves zstd's ratio on token-sized chunks. A sealed block (flag
SEPARATED) has no length column at all: ``u8 separator | chunk 0 | sep | chunk 1 | ...``, with a
separator byte that occurs in none of its chunks (0xFF, which UTF-8 never uses, for text). zstd then
sees the token boundaries in the text, where they are nearly free (a boundary is nearly always
before a space or a punctuation mark, and repeated phrases repeat their cuts): on English prose the
length column was ~24% of a sealed stream, the separators cost ~7%. ``bytes.split`` decodes it as
fast as the column.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

import zstandard

from ..errors import CorruptData

HEADER = struct.Struct("<IIBBQI")
HEADER_SIZE = HEADER.size  # 22
_CRC_FROM = 8  # the checksum covers the header from byte 8 on, then the payload

DATA = 1
CLOSE = 2
RECORD_TYPES = (DATA, CLOSE)

COMPRESSED = 0x01
PRODUCER = 0x02
SEPARATED = 0x04

# separator candidates, best first: bytes that valid UTF-8 never contains
_SEPARATORS = (0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xC0, 0xC1)

MAX_PAYLOAD = 64 << 20  # any length above this read from disk is corruption, never an allocation
MAX_COUNT = 1 << 24

_PRODUCER_HEAD = struct.Struct("<HQQ")  # id length, epoch, seq


@dataclass(frozen=True, slots=True)
class Header:
    length: int
    crc: int
    type: int
    flags: int
    first_offset: int
    count: int

    @property
    def end_offset(self) -> int:
        return self.first_offset + self.count

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length


@dataclass(frozen=True, slots=True)
class ProducerMark:
    producer_id: str
    epoch: int
    seq: int


def encode(type_: int, flags: int, first_offset: int, count: int, payload: bytes) -> bytes:
    tail = HEADER.pack(len(payload), 0, type_, flags, first_offset, count)[_CRC_FROM:]
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return struct.pack("<II", len(payload), crc) + tail + payload


def parse_header(buf: bytes | memoryview, pos: int = 0) -> Header | None:
    """Parse a header that structurally makes sense, or None (torn or garbage bytes)."""
    if len(buf) - pos < HEADER_SIZE:
        return None
    h = Header(*HEADER.unpack_from(buf, pos))
    if h.type not in RECORD_TYPES or h.length > MAX_PAYLOAD or h.count > MAX_COUNT:
        return None
    if h.type == DATA and h.count == 0:
        return None
    return h


def check(buf: bytes | memoryview, pos: int, h: Header) -> bool:
    """True if the record at ``pos`` is complete and its checksum matches."""
    end = pos + h.size
    if end > len(buf):
        return False
    mv = memoryview(buf)
    return (
        zlib.crc32(mv[pos + HEADER_SIZE : end], zlib.crc32(mv[pos + _CRC_FROM : pos + HEADER_SIZE])) == h.crc
    )


def iter_records(buf: bytes | memoryview, pos: int = 0) -> Iterator[tuple[int, Header]]:
    """Yield (position, header) of each valid record from ``pos``; stop at the first invalid one."""
    while True:
        h = parse_header(buf, pos)
        if h is None or not check(buf, pos, h):
            return
        yield pos, h
        pos += h.size


# --- uvarints -------------------------------------------------------------------------------------


def _put_uvarint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_uvarints(buf: bytes | memoryview, pos: int, count: int) -> tuple[list[int], int]:
    vals = []
    for _ in range(count):
        n = shift = 0
        while True:
            if pos >= len(buf) or shift > 35:
                raise CorruptData("chunk length column is truncated")
            b = buf[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
        vals.append(n)
    return vals, pos


# --- DATA payloads ------------------------------------------------------------------------------


def encode_body(chunks: Sequence[bytes]) -> bytes:
    if len(chunks) == 1 and len(chunks[0]) < 0x80:  # one token: the most common append
        return bytes((len(chunks[0]),)) + chunks[0]
    out = bytearray()
    if all(len(c) < 0x80 for c in chunks):
        out += bytes(len(c) for c in chunks)
    else:
        for c in chunks:
            _put_uvarint(out, len(c))
    out += b"".join(chunks)
    return bytes(out)


def separated_body(chunks: Sequence[bytes]) -> bytes | None:
    """The SEPARATED layout of ``chunks``, or None if every byte value occurs in them (binary data:
    the caller keeps the column layout)."""
    text = b"".join(chunks)
    sep = next((c for c in _SEPARATORS if c not in text), None)
    if sep is None:
        free = set(range(256)).difference(text)
        if not free:
            return None
        sep = min(free)
    s = bytes([sep])
    return s + s.join(chunks)


class Body:
    """A DATA body's chunks, sliced on demand.

    A sealed block holds ~60k token-sized chunks; a seek wants a few of them. The chunk start
    positions are computed once (in C when every length fits one byte, the common case for tokens),
    and ``slice`` copies out only the chunks asked for. A SEPARATED body is split into its chunks
    once (``bytes.split``, in C) and sliced as a list.
    """

    __slots__ = ("data", "starts", "parts")
    data: bytes
    starts: list[int]
    parts: list[bytes] | None  # a SEPARATED body's chunks (data and starts are then unused)

    @classmethod
    def from_parts(cls, parts: list[bytes]) -> Body:
        out = cls.__new__(cls)
        out.data, out.starts, out.parts = b"", [], parts
        return out

    @classmethod
    def separated(cls, body: bytes | memoryview, count: int) -> Body:
        data = bytes(body)
        if not data:
            raise CorruptData("separated body is empty")
        parts = data[1:].split(data[:1])
        if len(parts) != count:
            raise CorruptData(f"separated body holds {len(parts)} chunks, its header says {count}")
        return cls.from_parts(parts)

    @property
    def raw_size(self) -> int:
        """Bytes of its chunks."""
        if self.parts is not None:
            return sum(map(len, self.parts))
        return len(self.data) - self.starts[0]

    def __init__(self, body: bytes | memoryview, count: int) -> None:
        data = bytes(body)
        head = data[:count]
        if len(head) == count and (not head or max(head) < 0x80):
            # ``count`` bytes below 0x80 are ``count`` complete one-byte uvarints
            starts = list(accumulate(head, initial=count))
        else:
            lengths, pos = _get_uvarints(data, 0, count)
            starts = list(accumulate(lengths, initial=pos))
        if starts[-1] != len(data):
            raise CorruptData("chunk lengths do not add up to the record body")
        self.data, self.starts, self.parts = data, starts, None

    def __len__(self) -> int:
        if self.parts is not None:
            return len(self.parts)
        return len(self.starts) - 1

    def slice(self, a: int, b: int) -> list[bytes]:
        if self.parts is not None:
            return self.parts[max(a, 0) : b]
        d, st = self.data, self.starts
        return [d[st[i] : st[i + 1]] for i in range(max(a, 0), min(b, len(st) - 1))]


def decode_body(body: bytes | memoryview, count: int) -> list[bytes]:
    return Body(body, count).slice(0, count)


def encode_data(
    first_offset: int,
    chunks: Sequence[bytes],
    producer: ProducerMark | None = None,
    compressor: zstandard.ZstdCompressor | None = None,
    separate: bool = False,
) -> bytes:
    """A DATA record; ``separate`` (sealing) asks for the SEPARATED layout where it applies."""
    body = separated_body(chunks) if separate else None
    flags = 0
    if body is None:
        body = encode_body(chunks)
    else:
        flags |= SEPARATED
    if compressor is not None:
        body = compressor.compress(body)
        flags |= COMPRESSED
    if producer is not None:
        pid = producer.producer_id.encode()
        body = _PRODUCER_HEAD.pack(len(pid), producer.epoch, producer.seq) + pid + body
        flags |= PRODUCER
    return encode(DATA, flags, first_offset, len(chunks), body)


def split_payload(h: Header, payload: bytes | memoryview) -> tuple[ProducerMark | None, memoryview]:
    mv = memoryview(payload)
    if not h.flags & PRODUCER:
        return None, mv
    if len(mv) < _PRODUCER_HEAD.size:
        raise CorruptData("producer block is truncated")
    n, epoch, seq = _PRODUCER_HEAD.unpack_from(mv)
    start = _PRODUCER_HEAD.size
    pid = bytes(mv[start : start + n]).decode("utf-8", "replace")
    return ProducerMark(pid, epoch, seq), mv[start + n :]


def decode_data(h: Header, payload: bytes | memoryview, max_raw: int) -> list[bytes]:
    """All chunks of a DATA record whose checksum was already verified."""
    return decode_block(h, payload, max_raw).slice(0, h.count)


def decode_block(h: Header, payload: bytes | memoryview, max_raw: int) -> Body:
    """The body of a DATA record whose checksum was already verified.

    ``max_raw`` bounds decompression: a frame that declares (or produces) more is corruption,
    never a giant allocation (zstandard ignores max_output_size when the frame declares a size).
    """
    _, body = split_payload(h, payload)
    if h.flags & COMPRESSED:
        declared = zstandard.frame_content_size(body)
        if declared < 0 or declared > max_raw:
            raise CorruptData(f"compressed block declares {declared} bytes (limit {max_raw})")
        try:
            body = memoryview(zstandard.ZstdDecompressor().decompress(body, max_output_size=max_raw))
        except zstandard.ZstdError as e:
            raise CorruptData(f"compressed block does not decompress: {e}") from None
    if h.flags & SEPARATED:
        return Body.separated(body, h.count)
    return Body(body, h.count)
