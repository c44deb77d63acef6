"""A finished stream as one value: everything its meta hash and entries held, zstd-compressed. No I/O.

A closed stream is immutable, so its many small Redis entries (a 4 KB listpack node at least, plus
a hash) become one string: chunk lengths first, then the concatenated text (tokens compress about
2.5x better with their lengths in their own column, see docs/storage.md), then the meta fields.
Decoding never trusts a length it reads: the frame's declared size is bounded before allocating.
"""

from __future__ import annotations

import msgspec
import zstandard

from ..engine import CloseInfo, StreamMeta
from ..errors import CorruptData

MAGIC = b"RHZ1"
MAX_SEALED_BYTES = 256 << 20  # a sealed value never expands past this (the append limits keep it far below)


class Sealed(msgspec.Struct, array_like=True):
    lengths: list[int]
    text: bytes
    meta: StreamMeta
    epoch: str
    close: CloseInfo
    raw: int
    last_append: float | None
    producers: dict[str, str]  # producer id -> its window (storage/redis/wire.py)
    stream_seq: str | None

    def chunks(self) -> list[bytes]:
        out, pos = [], 0
        for n in self.lengths:
            out.append(self.text[pos : pos + n])
            pos += n
        return out


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Sealed)


def seal(s: Sealed, level: int = 19) -> bytes:
    return MAGIC + zstandard.ZstdCompressor(level=level).compress(_enc.encode(s))


def unseal(value: bytes) -> Sealed:
    if not value.startswith(MAGIC):
        raise CorruptData("a sealed stream value has no magic")
    frame = value[len(MAGIC) :]
    try:
        size = zstandard.frame_content_size(frame)
        # zstandard ignores max_output_size when the frame declares its size: bound it here
        if size < 0 or size > MAX_SEALED_BYTES:
            raise CorruptData(f"a sealed stream value declares {size} bytes")
        return _dec.decode(zstandard.ZstdDecompressor().decompress(frame, max_output_size=size))
    except (zstandard.ZstdError, msgspec.DecodeError) as e:
        raise CorruptData(f"a sealed stream value does not decode: {e}") from e
