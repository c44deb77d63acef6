"""Durable Streams wire code, no I/O: offset tokens, headers, cursors, JSON messages, SSE events and
idempotent-producer validation. Everything here takes strings or bytes and returns values (or raises
``DSError``), so it is tested without sockets (tests/hub/test_durable_wire.py).

Offsets map one-to-one to chunk offsets: chunk ``n`` is the token ``{n:016d}_0000000000000000``
(fixed width, so tokens sort like offsets; the second field is reserved and always zero).
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import msgspec

from hub.core.errors import DSError
from hub.core.positions import parse_uint
from storage import ProducerState

PREFIX = "/v1/stream/"


# labels this module keeps on streams (the "ds." prefix is reserved for it)
FORKED_FROM = "ds.forked_from"
FORK_OFFSET = "ds.fork_offset"
FORK_SUB = "ds.fork_sub_offset"
SOFT_DELETED = "ds.deleted"  # deleted while forks of it exist: 410 until the last fork goes
PENDING = "ds.pending"  # created, initial content not yet durable: a crash leftover if seen later

UNTYPED = "text/plain"  # how a stream created without a content type (WebSocket, /streams) is served
DEFAULT_TYPE = "application/octet-stream"  # a PUT without Content-Type

CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
CURSOR_INTERVAL_S = 20

EXPOSE = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type"
)
ALLOW_HEADERS = (
    "Content-Type, Authorization, If-None-Match, Stream-TTL, Stream-Expires-At, Stream-Seq, "
    "Stream-Closed, Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, "
    "Producer-Epoch, Producer-Seq"
)


# --- offsets, headers, cursors (pure) ------------------------------------------------------------

_OFFSET = re.compile(r"([0-9]{16})_([0-9]{16})")
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def format_offset(n: int) -> str:
    return f"{n:016d}_{0:016d}"


def parse_offset(raw: str) -> int | str:
    """A token, or the sentinels ``"-1"`` (start) and ``"now"`` (tail), returned as such."""
    if raw in ("-1", "now"):
        return raw
    m = _OFFSET.fullmatch(raw)
    if m is None or int(m.group(2)) != 0:
        raise DSError("invalid_offset", f"malformed offset {raw[:80]!r}")
    return int(m.group(1))


def parse_expires(raw: str) -> float:
    if not _RFC3339.fullmatch(raw.strip()):
        raise DSError("bad_request", f"Stream-Expires-At must be an RFC 3339 timestamp, not {raw[:60]!r}")
    try:
        return datetime.fromisoformat(raw.strip().replace("z", "Z")).timestamp()
    except ValueError:
        raise DSError("bad_request", f"Stream-Expires-At is not a valid time: {raw[:60]!r}") from None


def format_expires(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_ttl(ttl: float) -> str:
    return str(int(ttl)) if float(ttl).is_integer() else repr(ttl)


def essence(content_type: str) -> str:
    """``Application/JSON; charset=utf-8`` -> ``application/json``: what two types must share to match."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json(content_type: str) -> bool:
    return essence(content_type) == "application/json"


def is_text(content_type: str) -> bool:
    return essence(content_type).startswith("text/") or is_json(content_type)


def cursor(client: str | None, now: float) -> str:
    """The interval number since the cursor epoch; always past the client's, so caches never loop."""
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL_S)
    if client is not None and client.isdigit() and int(client) >= current:
        current = int(client) + random.randint(1, 3600 // CURSOR_INTERVAL_S)
    return str(current)


def flag(raw: str | None) -> bool:
    return raw is not None and raw.strip().lower() == "true"


def json_messages(body: bytes) -> list[bytes]:
    """The messages of a JSON-mode body: the elements of a top-level array (one level only), or the
    single value. Each keeps its exact bytes; the body is validated as JSON."""
    try:
        if body.lstrip()[:1] == b"[":
            return [bytes(raw) for raw in msgspec.json.decode(body, type=list[msgspec.Raw])]
        msgspec.json.decode(body, type=msgspec.Raw)
    except msgspec.DecodeError as e:
        raise DSError("invalid_json", f"body is not valid JSON: {e}") from None
    return [body.strip()]


def render(content_type: str, chunks: Sequence[bytes]) -> bytes:
    """A read's body: the chunks' bytes, or in JSON mode a JSON array of the messages."""
    if is_json(content_type):
        return b"[" + b",".join(chunks) + b"]"
    return b"".join(chunks)


_LINES = re.compile(r"\r\n|\r|\n")


def sse_data(mode: str, chunks: Sequence[bytes]) -> str:
    """One ``data`` event. Every line of the payload gets its own ``data:`` field, so a payload can
    never end the event or start another one (CR, LF and CRLF all split); binary is base64."""
    if mode == "base64":
        text = base64.b64encode(b"".join(chunks)).decode()
    else:
        text = render("application/json" if mode == "json" else "text/plain", chunks).decode(
            "utf-8", "replace"
        )
    # a field value loses one leading space when parsed: give lines that start with one a spare
    lines = "".join(f"data:{' ' if line[:1] == ' ' else ''}{line}\n" for line in _LINES.split(text))
    return f"event: data\n{lines}\n"


def sse_control(next_offset: int, cur: str, up_to_date: bool, closed: bool) -> str:
    ctl: dict[str, Any] = {"streamNextOffset": format_offset(next_offset)}
    if closed:
        ctl["streamClosed"] = True  # no cursor: there is nothing left to collapse onto
    else:
        ctl["streamCursor"] = cur
    if up_to_date:
        ctl["upToDate"] = True
    return f"event: control\ndata:{msgspec.json.encode(ctl).decode()}\n\n"


@dataclass(frozen=True)
class ProducerHeaders:
    id: str
    epoch: int
    seq: int


def producer_headers(h: Any) -> ProducerHeaders | None:
    names = ("Producer-Id", "Producer-Epoch", "Producer-Seq")
    present = [n in h for n in names]
    if not any(present):
        return None
    if not all(present):
        raise DSError("bad_request", "Producer-Id, Producer-Epoch and Producer-Seq go together")
    pid = h["Producer-Id"]
    if not pid or "\0" in pid:
        raise DSError("bad_request", "Producer-Id must be a non-empty string")
    return ProducerHeaders(
        pid, parse_uint(h["Producer-Epoch"], "Producer-Epoch"), parse_uint(h["Producer-Seq"], "Producer-Seq")
    )


def check_producer(st: ProducerState | None, p: ProducerHeaders) -> int | None:
    """Validate (epoch, seq) against the producer's durable state. None: accept as new data; an
    int: a duplicate, answered with that highest accepted seq and nothing written."""
    if st is None:
        if p.seq != 0:
            raise DSError(
                "producer_seq_gap",
                f"a new producer starts at seq 0, not {p.seq}",
                {"Producer-Expected-Seq": "0", "Producer-Received-Seq": str(p.seq)},
            )
        return None
    if p.epoch < st.epoch:
        raise DSError(
            "producer_fenced",
            f"epoch {p.epoch} is older than the producer's epoch {st.epoch}",
            {"Producer-Epoch": str(st.epoch)},
        )
    if p.epoch > st.epoch:
        if p.seq != 0:
            raise DSError("bad_request", f"a new epoch starts at seq 0, not {p.seq}")
        return None
    if p.seq <= st.seq:
        return st.seq
    if p.seq != st.seq + 1:
        raise DSError(
            "producer_seq_gap",
            f"expected seq {st.seq + 1}, got {p.seq}",
            {"Producer-Expected-Seq": str(st.seq + 1), "Producer-Received-Seq": str(p.seq)},
        )
    return None


@dataclass
class CreateRequest:
    content_type: str | None
    ttl: float | None
    expires_at: float | None
    closed: bool
    fork_from: str | None
    fork_offset: int | str | None
    fork_sub: int

    @classmethod
    def parse(cls, h: Any) -> CreateRequest:
        ct = h.get("Content-Type")
        ttl_raw, exp_raw = h.get("Stream-TTL"), h.get("Stream-Expires-At")
        if ttl_raw is not None and exp_raw is not None:
            raise DSError("bad_request", "send Stream-TTL or Stream-Expires-At, not both")
        ttl = float(parse_uint(ttl_raw.strip(), "Stream-TTL")) if ttl_raw is not None else None
        exp = parse_expires(exp_raw) if exp_raw is not None else None
        src_raw, off_raw, sub_raw = (
            h.get("Stream-Forked-From"),
            h.get("Stream-Fork-Offset"),
            h.get("Stream-Fork-Sub-Offset"),
        )
        if src_raw is None and (off_raw is not None or sub_raw is not None):
            raise DSError("bad_request", "Stream-Fork-Offset and -Sub-Offset need Stream-Forked-From")
        src = None
        if src_raw is not None:
            path = urlsplit(src_raw.strip()).path
            if not path.startswith(PREFIX) or len(path) == len(PREFIX):
                raise DSError("bad_request", f"Stream-Forked-From must be a {PREFIX}... path")
            src = unquote(path[len(PREFIX) :])
        off = parse_offset(off_raw.strip()) if off_raw is not None else None
        sub = parse_uint(sub_raw.strip(), "Stream-Fork-Sub-Offset") if sub_raw is not None else 0
        return cls(ct.strip() if ct else None, ttl, exp, flag(h.get("Stream-Closed")), src, off, sub)
