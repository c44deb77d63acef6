"""Where a stream lives in Redis: key and channel names, no I/O.

Every key of one stream shares a hash tag (``{<16 hex>}``, a hash of the id), so on a Redis Cluster
a stream's entries, its meta hash, its sealed value, its tombstone and its channel sit in one slot,
and a client's id never becomes part of a key's structure (braces or colons in ids are harmless).
Ids under ``chat/<chat>/`` are listed from that chat's own sorted set; every other id from one set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def tag(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def chat_of(stream_id: str) -> str:
    """``chat/<chat>/`` for an id inside a chat, else ''."""
    if not stream_id.startswith("chat/"):
        return ""
    chat, sep, rest = stream_id[5:].partition("/")
    return f"chat/{chat}/" if chat and sep and rest else ""


@dataclass(frozen=True, slots=True)
class Space:
    """The keys of one engine namespace (``prefix``): several hubs share one when they share streams."""

    prefix: str

    @property
    def ids(self) -> str:  # sorted set (score 0, lexicographic): ids outside any chat
        return self.prefix + "ids"

    @property
    def chats(self) -> str:  # sorted set: the ``chat/<chat>/`` prefixes that have streams
        return self.prefix + "chats"

    @property
    def open(self) -> str:  # sorted set: ids not closed yet
        return self.prefix + "open"

    @property
    def count(self) -> str:  # integer: how many streams exist (for the stats)
        return self.prefix + "count"

    @property
    def leases(self) -> str:  # sorted set: id -> unix time its producer lease lapses (hub/core/lease.py)
        return self.prefix + "leases"

    @property
    def deadlines(self) -> str:  # sorted set: id -> unix time it expires
        return self.prefix + "dl"

    @property
    def events(self) -> str:  # channel: "c|e|d <origin> <id>" (created, ended, deleted)
        return self.prefix + "ev"

    def chat_index(self, chat: str) -> str:
        return f"{self.prefix}x{{{tag(chat)}}}"

    def index_for(self, stream_id: str) -> tuple[str, str]:
        """(the sorted set listing this id, its chat prefix or '')."""
        chat = chat_of(stream_id)
        return (self.chat_index(chat) if chat else self.ids), chat

    def stream(self, stream_id: str) -> StreamKeys:
        base = f"{self.prefix}{{{tag(stream_id)}}}:"
        return StreamKeys(base + "m", base + "d", base + "z", base + "t", base + "c")


@dataclass(frozen=True, slots=True)
class StreamKeys:
    meta: str  # hash: id, meta json, ep(och), n(ext offset), raw, la, acc, cl(ose json), cat, ss, rid, p:<producer>
    data: str  # stream: one entry per chunk, id 0-<offset+1>, field c
    sealed: str  # string: the finished stream as one zstd value (replaces meta and data)
    tomb: str  # string: the tombstone of a deleted or expired id
    channel: str  # pub/sub: live notifications of this stream
