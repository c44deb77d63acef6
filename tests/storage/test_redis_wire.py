"""The Redis engine's I/O-free parts: key names, notification payloads, producer windows, sealed values."""

from __future__ import annotations

import msgspec
import pytest
import zstandard

from storage import CloseInfo, CorruptData, StreamMeta
from storage.redis import keys, wire
from storage.redis.sealed import MAGIC, Sealed, seal, unseal


def test_keys_share_one_hash_tag_and_chats_are_recognised() -> None:
    k = keys.Space("rh:").stream("chat/1/{weird}:id")
    tags = {key[key.index("{") : key.index("}") + 1] for key in (k.meta, k.data, k.sealed, k.tomb, k.channel)}
    assert len(tags) == 1
    assert keys.chat_of("chat/1/a") == "chat/1/"
    assert keys.chat_of("chat/1/") == "" and keys.chat_of("chat//a") == "" and keys.chat_of("chatx/1/a") == ""


def test_notifications_parse() -> None:
    note = wire.parse_note(b"c ep1 7 3,0,2\nabcde")
    assert note == wire.Chunks("ep1", 7, [b"abc", b"", b"de"], 3)
    assert wire.parse_note(b"n ep1 7 9") == wire.Chunks("ep1", 7, None, 9)
    info = CloseInfo("error", "boom", 1.5)
    assert wire.parse_note(b"e ep1 10 " + msgspec.json.encode(info)) == wire.End("ep1", 10, info)
    assert wire.parse_note(b"r ep2 4") == wire.Reset("ep2", 4)
    assert wire.parse_note(b"g") == wire.Gone()
    assert wire.parse_event(b"e origin chat/1/a b") == ("e", "origin", "chat/1/a b")
    with pytest.raises(ValueError):
        wire.parse_note(b"?")


def test_last_producer_state_of_a_window() -> None:
    st = wire.last_producer_state("3|5,10,2|6,12,1")
    assert (st.epoch, st.seq, st.first_offset, st.count) == (3, 6, 12, 1)


def sample() -> Sealed:
    chunks = [b"Hello", b", ", b"world", b"\xff\x00"]
    return Sealed(
        lengths=[len(c) for c in chunks],
        text=b"".join(chunks),
        meta=StreamMeta(id="s", created=1.0, epoch="e", labels={"k": "v"}),
        epoch="e",
        close=CloseInfo("done", None, 2.0),
        raw=14,
        last_append=2.0,
        producers={"p": "0|1,0,4"},
        stream_seq=None,
    )


def test_sealed_round_trip() -> None:
    z = sample()
    back = unseal(seal(z, 3))
    assert back == z and back.chunks() == [b"Hello", b", ", b"world", b"\xff\x00"]


def test_sealed_refuses_bombs_and_garbage() -> None:
    with pytest.raises(CorruptData):
        unseal(b"nope")
    bomb = MAGIC + zstandard.ZstdCompressor().compress(b"\0" * (300 << 20))  # declares 300 MiB
    with pytest.raises(CorruptData):
        unseal(bomb)
    with pytest.raises(CorruptData):
        unseal(MAGIC + zstandard.ZstdCompressor().compress(b"not msgpack of a Sealed"))
