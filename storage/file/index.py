"""Sparse offset index: a sorted list of (first chunk offset, byte position) seek points.

The index is derived data: it can always be rebuilt from the segment it describes, so it carries
no checksum of its own. On disk it is a flat array of little-endian u64 pairs; ``load`` refuses
anything that is not strictly increasing or points past the segment, and the caller rebuilds.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_right

ENTRY = struct.Struct("<QQ")


class SparseIndex:
    __slots__ = ("offsets", "positions")

    def __init__(self) -> None:
        self.offsets = array("Q")
        self.positions = array("Q")

    def __len__(self) -> int:
        return len(self.offsets)

    def add(self, offset: int, position: int) -> None:
        if self.offsets and (offset <= self.offsets[-1] or position <= self.positions[-1]):
            return
        self.offsets.append(offset)
        self.positions.append(position)

    def lookup(self, offset: int) -> int:
        """Byte position of the last seek point at or before ``offset`` (0 if none)."""
        i = bisect_right(self.offsets, offset) - 1
        return self.positions[i] if i >= 0 else 0

    def truncate_from(self, position: int) -> None:
        while self.positions and self.positions[-1] >= position:
            self.positions.pop()
            self.offsets.pop()

    def to_bytes(self) -> bytes:
        return b"".join(ENTRY.pack(o, p) for o, p in zip(self.offsets, self.positions, strict=True))

    @classmethod
    def from_bytes(cls, data: bytes, segment_size: int) -> SparseIndex | None:
        """Parse an index file, or None if it is torn, unsorted or points outside the segment."""
        if len(data) % ENTRY.size:
            return None
        idx = cls()
        last_o = last_p = -1
        for o, p in ENTRY.iter_unpack(data):
            if o <= last_o or p <= last_p or p >= segment_size:
                return None
            idx.offsets.append(o)
            idx.positions.append(p)
            last_o, last_p = o, p
        return idx
