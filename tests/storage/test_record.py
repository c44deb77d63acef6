"""Record framing: pure functions on bytes, tested without files or an event loop."""

from __future__ import annotations

import struct

import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from storage import CorruptData, record
from storage.file.record import HEADER_SIZE, ProducerMark

chunk = st.binary(min_size=0, max_size=300)  # includes b"" and chunks whose length needs 2 uvarint bytes
chunk_lists = st.lists(chunk, min_size=1, max_size=12)


def payload_of(rec: bytes) -> memoryview:
    return memoryview(rec)[HEADER_SIZE:]


def test_header_layout() -> None:
    rec = record.encode_data(7, [b"ab", b"c"])
    h = record.parse_header(rec)
    assert h is not None
    assert (h.type, h.flags, h.first_offset, h.count, h.end_offset) == (record.DATA, 0, 7, 2, 9)
    assert h.size == len(rec) == HEADER_SIZE + h.length
    assert record.check(rec, 0, h)


@given(chunk_lists, st.integers(0, 1 << 40))
def test_data_round_trip(chunks: list[bytes], first: int) -> None:
    rec = record.encode_data(first, chunks)
    h = record.parse_header(rec)
    assert h is not None and record.check(rec, 0, h)
    assert record.decode_data(h, payload_of(rec), 1 << 20) == chunks


@given(chunk_lists, st.text(min_size=0, max_size=40), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_producer_and_compression_round_trip(chunks: list[bytes], pid: str, epoch: int, seq: int) -> None:
    mark = ProducerMark(pid, epoch, seq)
    rec = record.encode_data(3, chunks, mark, zstandard.ZstdCompressor(level=1))
    h = record.parse_header(rec)
    assert h is not None and record.check(rec, 0, h)
    assert h.flags == record.COMPRESSED | record.PRODUCER
    got_mark, _ = record.split_payload(h, payload_of(rec))
    assert got_mark == mark
    assert record.decode_data(h, payload_of(rec), 1 << 20) == chunks


def test_body_keeps_lengths_in_their_own_column() -> None:
    # one byte per length while every chunk is short; uvarints once one is >= 128 bytes
    assert record.encode_body([b"ab", b"", b"c"]) == bytes([2, 0, 1]) + b"abc"
    big = b"x" * 300
    assert record.encode_body([big, b"y"]) == bytes([0xAC, 0x02, 1]) + big + b"y"
    assert record.decode_body(record.encode_body([big, b"y", b""]), 3) == [big, b"y", b""]


@pytest.mark.parametrize(
    ("body", "count"),
    [
        (bytes([3]) + b"ab", 1),  # lengths claim more than the body holds
        (bytes([1]) + b"ab", 1),  # and less
        (bytes([0x80, 0x80]), 1),  # the length column itself is cut
        (bytes([0xFF] * 8), 1),  # a uvarint that never ends
    ],
)
def test_decode_body_refuses_inconsistent_bodies(body: bytes, count: int) -> None:
    with pytest.raises(CorruptData):
        record.decode_body(body, count)


def test_checksum_covers_every_bit() -> None:
    rec = record.encode_data(5, [b"hello", b"x" * 200], ProducerMark("p", 1, 2))
    for i in range(len(rec)):
        for bit in range(8):
            bad = bytearray(rec)
            bad[i] ^= 1 << bit
            h = record.parse_header(bad)
            assert h is None or not record.check(bad, 0, h), (i, bit)


def test_parse_header_refuses_nonsense() -> None:
    assert record.parse_header(b"\0" * (HEADER_SIZE - 1)) is None  # too short
    assert record.parse_header(record.HEADER.pack(1, 0, 9, 0, 0, 1)) is None  # unknown type
    assert record.parse_header(record.HEADER.pack(1, 0, record.DATA, 0, 0, 0)) is None  # DATA without chunks
    too_long = record.HEADER.pack(record.MAX_PAYLOAD + 1, 0, record.DATA, 0, 0, 1)
    assert record.parse_header(too_long) is None  # never an allocation of a length read from disk
    assert record.parse_header(record.HEADER.pack(1, 0, record.DATA, 0, 0, record.MAX_COUNT + 1)) is None
    close = record.encode(record.CLOSE, 0, 4, 0, b"{}")
    h = record.parse_header(close)
    assert h is not None and h.count == 0 and record.check(close, 0, h)


def test_check_refuses_an_incomplete_record() -> None:
    rec = record.encode_data(0, [b"abc"])
    h = record.parse_header(rec)
    assert h is not None
    assert not record.check(rec[:-1], 0, h)


@given(st.lists(chunk_lists, min_size=1, max_size=8), st.data())
def test_iter_records_yields_exactly_the_complete_prefix(
    batches: list[list[bytes]], data: st.DataObject
) -> None:
    buf = bytearray()
    ends = []
    offset = 0
    for chunks in batches:
        buf += record.encode_data(offset, chunks)
        offset += len(chunks)
        ends.append(len(buf))
    cut = data.draw(st.integers(0, len(buf)))
    got = list(record.iter_records(bytes(buf[:cut])))
    assert len(got) == sum(1 for e in ends if e <= cut)
    assert [h.first_offset for _, h in got] == [sum(map(len, batches[:i])) for i in range(len(got))]


def test_decompression_is_bounded_by_max_raw() -> None:
    # a small frame that declares a huge size must be refused before anything is allocated
    bomb = zstandard.ZstdCompressor(level=19).compress(bytes(1) + b"\0" * (8 << 20))
    body = bomb
    rec = record.encode(record.DATA, record.COMPRESSED, 0, 1, body)
    h = record.parse_header(rec)
    assert h is not None and len(rec) < 4096
    with pytest.raises(CorruptData, match="declares"):
        record.decode_data(h, payload_of(rec), 1 << 20)


def test_compressed_frame_without_declared_size_is_refused() -> None:
    cobj = zstandard.ZstdCompressor().compressobj()  # streaming frames do not declare their size
    body = cobj.compress(record.encode_body([b"abc"])) + cobj.flush()
    assert zstandard.frame_content_size(body) == -1
    rec = record.encode(record.DATA, record.COMPRESSED, 0, 1, body)
    h = record.parse_header(rec)
    assert h is not None
    with pytest.raises(CorruptData):
        record.decode_data(h, payload_of(rec), 1 << 20)


def test_garbage_compressed_body_is_corrupt_data_not_a_crash() -> None:
    # a valid frame header declaring 10 bytes, followed by bytes that are not a zstd block
    frame = zstandard.ZstdCompressor().compress(b"0123456789")
    body = frame[:6] + b"\xff" * (len(frame) - 6)
    rec = record.encode(record.DATA, record.COMPRESSED, 0, 1, body)
    h = record.parse_header(rec)
    assert h is not None
    with pytest.raises(CorruptData):
        record.decode_data(h, payload_of(rec), 1 << 20)


def test_truncated_producer_block_is_corrupt() -> None:
    rec = record.encode(record.DATA, record.PRODUCER, 0, 1, struct.pack("<H", 3))
    h = record.parse_header(rec)
    assert h is not None
    with pytest.raises(CorruptData):
        record.split_payload(h, payload_of(rec))


@given(chunk_lists)
def test_separated_bodies_round_trip(chunks: list[bytes]) -> None:
    rec = record.encode_data(7, chunks, None, zstandard.ZstdCompressor(level=1), separate=True)
    h = record.parse_header(rec)
    assert h is not None and record.check(rec, 0, h)
    body = record.decode_block(h, payload_of(rec), 1 << 20)
    assert body.slice(0, len(chunks)) == chunks and len(body) == len(chunks)
    assert body.raw_size == sum(map(len, chunks))


def test_separated_body_picks_a_byte_absent_from_the_chunks_or_keeps_the_column() -> None:
    assert record.separated_body([b" the", b" text", b""]) == b"\xff the\xff text\xff"
    assert record.separated_body([b"\xff\xfe", b"a"])[:1] not in (b"\xff", b"\xfe")
    every = bytes(range(256))
    assert record.separated_body([every, b"x"]) is None
    rec = record.encode_data(0, [every, b"x"], None, None, separate=True)
    h = record.parse_header(rec)
    assert h is not None and not h.flags & record.SEPARATED
    assert record.decode_data(h, payload_of(rec), 1 << 20) == [every, b"x"]


@pytest.mark.parametrize("body", [b"", b"\xffa\xffb"])
def test_a_separated_body_with_the_wrong_count_is_corrupt(body: bytes) -> None:
    with pytest.raises(CorruptData):
        record.Body.separated(body, 3)
