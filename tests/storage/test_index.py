"""Sparse offset index and the segment scan that builds it: no files, no event loop."""

from __future__ import annotations

import os
import time

from hypothesis import given
from hypothesis import strategies as st

from storage import record
from storage.file.index import ENTRY, SparseIndex
from storage.file.segment import _HEADER_LIKE, _next_valid, scan


def make_index(points: list[tuple[int, int]]) -> SparseIndex:
    idx = SparseIndex()
    for o, p in points:
        idx.add(o, p)
    return idx


def test_lookup_finds_the_last_seek_point_at_or_before() -> None:
    idx = make_index([(0, 0), (10, 100), (20, 250)])
    assert [idx.lookup(o) for o in (0, 9, 10, 19, 20, 10**9)] == [0, 0, 100, 100, 250, 250]
    assert SparseIndex().lookup(5) == 0


def test_add_ignores_points_that_do_not_move_forward() -> None:
    idx = make_index([(10, 100), (10, 200), (5, 300), (20, 100), (30, 400)])
    assert list(idx.offsets) == [10, 30] and list(idx.positions) == [100, 400]


def test_truncate_from_drops_points_at_or_after_a_position() -> None:
    idx = make_index([(0, 0), (10, 100), (20, 250)])
    idx.truncate_from(250)
    assert list(idx.positions) == [0, 100]
    idx.truncate_from(0)
    assert len(idx) == 0


def test_bytes_round_trip_and_refusals() -> None:
    idx = make_index([(0, 0), (10, 100), (20, 250)])
    data = idx.to_bytes()
    assert len(data) == 3 * ENTRY.size
    back = SparseIndex.from_bytes(data, segment_size=251)
    assert back is not None and list(back.offsets) == [0, 10, 20] and list(back.positions) == [0, 100, 250]
    assert SparseIndex.from_bytes(data[:-1], 251) is None  # torn
    assert SparseIndex.from_bytes(data, 250) is None  # points past the segment
    swapped = ENTRY.pack(10, 100) + ENTRY.pack(0, 0)
    assert SparseIndex.from_bytes(swapped, 1000) is None  # not increasing
    assert SparseIndex.from_bytes(b"", 0) is not None


@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)), max_size=50), st.integers(0, 10**6 + 5)
)
def test_lookup_matches_a_linear_search(points: list[tuple[int, int]], query: int) -> None:
    idx = make_index(points)
    pairs = list(zip(idx.offsets, idx.positions, strict=True))
    assert all(a < b for a, b in zip(idx.offsets, idx.offsets[1:], strict=False))
    assert all(a < b for a, b in zip(idx.positions, idx.positions[1:], strict=False))
    want = max((p for o, p in pairs if o <= query), default=0)
    assert idx.lookup(query) == want


def segment_image(n_records: int, chunk: bytes = b"x" * 100) -> tuple[bytes, list[int]]:
    buf = bytearray()
    starts = []
    for i in range(n_records):
        starts.append(len(buf))
        buf += record.encode_data(10 + i * 2, [chunk, chunk])
    return bytes(buf), starts


def test_scan_indexes_every_n_bytes_and_finds_the_end() -> None:
    buf, starts = segment_image(40)
    res = scan(buf, 10, index_every=1000)
    assert (res.size, res.end, res.dropped_bytes, res.dropped_records) == (len(buf), 90, 0, 0)
    assert res.raw_bytes == 40 * 200 and res.corrupt == [] and res.close is None
    # every seek point is the start of a record, the first is at 0, and they are >= 1000 bytes apart
    assert list(res.index.positions)[0] == 0
    assert set(res.index.positions) <= set(starts)
    gaps = [b - a for a, b in zip(res.index.positions, res.index.positions[1:], strict=False)]
    assert gaps and all(g >= 1000 for g in gaps)
    for o in range(10, 90):
        pos = res.index.lookup(o)
        h = record.parse_header(buf, pos)
        assert h is not None and h.first_offset <= o


def test_scan_stops_at_a_torn_tail() -> None:
    buf, starts = segment_image(5)
    for cut in range(starts[3] + 1, len(buf)):
        res = scan(buf[:cut], 10)
        want_records = 3 if cut < starts[4] else 4
        assert res.size == starts[want_records]
        assert res.end == 10 + 2 * want_records
        assert res.dropped_bytes == cut - res.size
        assert res.dropped_records == 0


def test_scan_counts_raw_bytes_only_from_count_from() -> None:
    buf, _ = segment_image(5)
    assert scan(buf, 10, count_from=14).raw_bytes == 3 * 200


def test_scan_never_accepts_records_with_unexpected_offsets() -> None:
    buf, starts = segment_image(3)  # offsets 10..16, two per record
    res = scan(buf, 11)  # the segment's name says it starts at 11
    assert res.corrupt == [(11, 12)] and res.end == 16  # record 10..12 is not served
    res = scan(buf, 30)  # offsets that go backwards are a torn tail, never served
    assert (res.size, res.end, res.dropped_records) == (0, 30, 3)


def test_scan_skips_a_damaged_record_and_resumes_after_it() -> None:
    buf, starts = segment_image(6)
    bad = bytearray(buf)
    bad[starts[2] + 2] ^= 0x40  # the length field: the damaged record's own size is unknown
    res = scan(bytes(bad), 10, index_every=1)
    assert res.corrupt == [(14, 16)] and res.end == 22 and res.size == len(buf)
    assert starts[3] in res.index.positions  # a seek point right after the damage
    # zeros where a header should be are a torn tail (what a crash leaves), even if records follow
    zeroed = buf[: starts[2]] + bytes(starts[3] - starts[2]) + buf[starts[3] :]
    res = scan(zeroed, 10)
    assert res.corrupt == [] and res.size == starts[2] and res.dropped_records == 3


def test_scan_ends_at_the_close_record() -> None:
    buf, _ = segment_image(2)
    buf += record.encode(record.CLOSE, 0, 14, 0, b'{"status":"done","error":null,"at":1.0}')
    res = scan(buf, 10)
    assert res.close is not None and res.close.status == "done" and res.size == len(buf)
    tail = record.encode_data(14, [b"after close"])
    res = scan(buf + tail, 10)
    assert res.size == len(buf) and res.dropped_bytes == len(tail)


@given(
    st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    st.integers(0, 2**64 - 1),
    st.booleans(),
    st.binary(max_size=30),
)
def test_resync_prefilter_matches_every_real_header(
    chunks: list[bytes], first: int, close: bool, junk: bytes
) -> None:
    # the scan finds where records resume with a regex; it must never skip a real record
    rec = record.encode(record.CLOSE, 0, first, 0, b"{}") if close else record.encode_data(first, chunks)
    assert _HEADER_LIKE.match(rec) is not None
    found = _next_valid(memoryview(junk + rec), 0)
    assert found is not None and found <= len(junk)  # found, after junk (or inside it, by a fluke)


def test_scanning_a_large_torn_record_is_fast() -> None:
    big = record.encode_data(0, [os.urandom(1 << 20), b"\x01" * (1 << 20), bytes(1 << 20)])
    t = time.perf_counter()
    res = scan(big[: len(big) - 100], 0)
    assert res.size == 0 and res.dropped_bytes == len(big) - 100
    assert time.perf_counter() - t < 2.0  # one parse attempt per byte in Python would take seconds
