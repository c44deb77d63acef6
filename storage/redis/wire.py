"""What the Lua scripts publish and store, parsed: no I/O.

Stream channel payloads (ASCII header, then raw bytes):

* ``c <epoch> <first> <len>,<len>,...\\n<data>``: chunks from offset ``first``, their bytes inline;
* ``n <epoch> <first> <count>``: chunks too big to carry; read them with XRANGE;
* ``e <epoch> <next> <close json>``: the stream ended after offset ``next - 1``;
* ``r <epoch> <next>``: the epoch was renewed (Redis may have lost data): offsets restart meaning;
* ``g``: the stream was deleted or expired;
* ``l <meta json>``: the stream's meta (its labels) changed.

A producer window (meta field ``p:<producer>``) is ``epoch|seq,first,count|...``, oldest first.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from ..engine import CloseInfo, ProducerState, StreamMeta


@dataclass(frozen=True, slots=True)
class Chunks:
    epoch: str
    first: int
    chunks: list[bytes] | None  # None: not carried, read them
    count: int


@dataclass(frozen=True, slots=True)
class End:
    epoch: str
    next: int
    info: CloseInfo


@dataclass(frozen=True, slots=True)
class Reset:
    epoch: str
    next: int


@dataclass(frozen=True, slots=True)
class Gone:
    pass


@dataclass(frozen=True, slots=True)
class Meta:
    meta: StreamMeta


Note = Chunks | End | Reset | Gone | Meta


def parse_note(payload: bytes) -> Note:
    kind = payload[:1]
    if kind == b"c":
        head, _, data = payload.partition(b"\n")
        _, epoch, first, lens = head.split(b" ", 3)
        chunks, pos = [], 0
        for n in map(int, lens.split(b",")):
            chunks.append(data[pos : pos + n])
            pos += n
        return Chunks(epoch.decode(), int(first), chunks, len(chunks))
    if kind == b"n":
        _, epoch, first, count = payload.split(b" ")
        return Chunks(epoch.decode(), int(first), None, int(count))
    if kind == b"e":
        _, epoch, nxt, info = payload.split(b" ", 3)
        return End(epoch.decode(), int(nxt), msgspec.json.decode(info, type=CloseInfo))
    if kind == b"r":
        _, epoch, nxt = payload.split(b" ")
        return Reset(epoch.decode(), int(nxt))
    if kind == b"g":
        return Gone()
    if kind == b"l":
        return Meta(msgspec.json.decode(payload[2:], type=StreamMeta))
    raise ValueError(f"unknown notification {payload[:16]!r}")


def parse_event(payload: bytes) -> tuple[str, str, str]:
    """(kind 'c'|'e'|'d'|'x', origin engine, stream id) of an events-channel message (created,
    ended, deleted, cancel requested)."""
    kind, origin, sid = payload.decode("utf-8", "surrogatepass").split(" ", 2)
    return kind, origin, sid


def last_producer_state(window: str) -> ProducerState:
    epoch, *entries = window.split("|")
    seq, first, count = (int(x) for x in entries[-1].split(","))
    return ProducerState(int(epoch), seq, first, count)
