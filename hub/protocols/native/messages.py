"""The WebSocket wire protocol: typed messages both ways, and their codec. No I/O.

Every frame is one JSON object with an ``op`` tag. ``decode`` validates a client frame against
``ClientMsg`` (ranges included, see ``hub.core.positions``), so a bad frame becomes a precise
``HubError`` with a stable code, never a KeyError deep in a handler; the Python client decodes the
hub's frames against ``ServerMsg`` the same way. docs/protocol.md is the prose twin of this module.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import msgspec

from hub.core.errors import HubError
from hub.core.positions import MAX_OFFSET, Offset
from storage import CloseStatus, Status

# --- client -> hub -------------------------------------------------------------------------------

From = Offset | Literal["now"]


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="op", forbid_unknown_fields=True):
    stream: str
    # ``from`` is a Python keyword, hence the rename
    from_: From = msgspec.field(default=0, name="from")
    epoch: str | None = None  # the epoch the client's offset belongs to; a mismatch gets ``reset``
    coalesce_ms: float = 0.0  # merge live chunks into frames at most this often (0 = as they come)
    coalesce_bytes: int = 16384
    id: int | str | None = None  # echoed in ``subscribed`` and in an error about this request


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="op", forbid_unknown_fields=True):
    stream: str


class Create(msgspec.Struct, tag="create", tag_field="op", forbid_unknown_fields=True):
    stream: str
    id: int | str | None = None
    ttl: float | None = None
    labels: dict[str, str] = {}
    exist_ok: bool = True


class Append(msgspec.Struct, tag="append", tag_field="op", forbid_unknown_fields=True):
    stream: str
    data: str | list[str]
    id: int | str | None = None  # echoed in the ack; the client's correlation id
    producer: str | None = None  # producer id + seq make retries idempotent
    seq: Offset | None = None
    create: bool = False  # create the stream if it does not exist


class Close(msgspec.Struct, tag="close", tag_field="op", forbid_unknown_fields=True):
    stream: str
    status: CloseStatus = "done"
    error: str | None = None
    id: int | str | None = None


class Cancel(msgspec.Struct, tag="cancel", tag_field="op", forbid_unknown_fields=True):
    stream: str
    id: int | str | None = None  # if given, the hub answers with an ``ack`` (or an error) carrying it


class Ping(msgspec.Struct, tag="ping", tag_field="op", forbid_unknown_fields=True):
    t: float | int | None = None


class Watch(msgspec.Struct, tag="watch", tag_field="op", forbid_unknown_fields=True):
    chat: str  # streams named chat/<chat>/...; the hub answers with ``chat``, then ``chat_event``s


class Unwatch(msgspec.Struct, tag="unwatch", tag_field="op", forbid_unknown_fields=True):
    chat: str


ClientMsg = Subscribe | Unsubscribe | Create | Append | Close | Cancel | Ping | Watch | Unwatch

# --- hub -> client -------------------------------------------------------------------------------


class Subscribed(msgspec.Struct, tag="subscribed", tag_field="op", omit_defaults=True):
    stream: str
    offset: int  # where delivery starts
    epoch: str
    next: int  # the stream's durable end at subscribe time
    status: Status
    id: int | str | None = None


class Chunks(msgspec.Struct, tag="chunks", tag_field="op"):
    stream: str
    offset: int
    data: list[str]


class End(msgspec.Struct, tag="end", tag_field="op", omit_defaults=True):
    stream: str
    offset: int
    status: CloseStatus
    error: str | None = None


class Ack(msgspec.Struct, tag="ack", tag_field="op", omit_defaults=True):
    id: int | str | None
    stream: str
    offset: int
    count: int = 0
    duplicate: bool = False
    cancelled: bool = False


class Reset(msgspec.Struct, tag="reset", tag_field="op"):
    stream: str
    epoch: str  # the client's offsets for this stream are void; delivery restarts from 0


class CancelRequested(msgspec.Struct, tag="cancel", tag_field="op"):
    stream: str


class ChatStream(msgspec.Struct, omit_defaults=True):
    stream: str
    status: Status
    next: int
    created: float
    closed: float | None = None
    error: str | None = None
    labels: dict[str, str] = {}


class ChatSnapshot(msgspec.Struct, tag="chat", tag_field="op"):
    chat: str
    streams: list[ChatStream]  # oldest first


class ChatEvent(msgspec.Struct, tag="chat_event", tag_field="op", omit_defaults=True):
    chat: str
    event: Literal["created", "ended", "deleted"]
    stream: str
    status: Status | None = None
    next: int | None = None
    error: str | None = None
    labels: dict[str, str] = {}


class Pong(msgspec.Struct, tag="pong", tag_field="op", omit_defaults=True):
    t: float | int | None = None


class Error(msgspec.Struct, tag="error", tag_field="op", omit_defaults=True):
    code: str
    message: str
    stream: str | None = None
    id: int | str | None = None


class Unsubscribed(msgspec.Struct, tag="unsubscribed", tag_field="op", omit_defaults=True):
    stream: str
    reason: str | None = None


ServerMsg = (
    Subscribed
    | Chunks
    | End
    | Ack
    | Reset
    | CancelRequested
    | ChatSnapshot
    | ChatEvent
    | Pong
    | Error
    | Unsubscribed
)

CLIENT_OPS = frozenset(t.__struct_config__.tag for t in get_args(ClientMsg))

_decoder = msgspec.json.Decoder(ClientMsg)
_encoder = msgspec.json.Encoder()


class _Peek(msgspec.Struct):
    """The few fields that say why a frame did not decode (unknown fields are ignored)."""

    op: Any = None
    stream: Any = None
    from_: Any = msgspec.field(default=msgspec.UNSET, name="from")  # UNSET: absent; None: null
    seq: Any = None
    status: Any = None
    id: Any = None


_peek = msgspec.json.Decoder(_Peek)


def peek(frame: str | bytes) -> tuple[int | str | None, str | None]:
    """The request ``id`` and ``stream`` of a frame that failed to decode, when they can be read,
    so that its error still names the request (None, None if the frame is not even an object)."""
    try:
        m = _peek.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return None, None
    rid = m.id if isinstance(m.id, int | str) and not isinstance(m.id, bool) else None
    return rid, m.stream if isinstance(m.stream, str) else None


def decode(frame: str | bytes) -> ClientMsg:
    """A typed message, or ``HubError``. When two rules apply, the first one here wins: not JSON or
    not an object, or no ``op`` -> ``malformed_frame``; an ``op`` we do not know -> ``unknown_op``;
    ``from`` not an integer in 0..2^53-1 nor "now" -> ``invalid_offset``; ``seq`` out of range or a
    ``close`` status we do not know -> ``bad_request``; any other wrong type or unknown field ->
    ``malformed_frame``; then the value rules of ``check`` -> ``bad_request``."""
    try:
        msg = _decoder.decode(frame)
    except msgspec.ValidationError as e:
        raise _why(frame, e) from None
    except msgspec.DecodeError as e:
        raise HubError("malformed_frame", f"frame is not valid JSON: {e}") from None
    check(msg)
    return msg


NOTHING_TO_APPEND = "data is empty: nothing to append (skip empty deltas before sending)"


def check(msg: ClientMsg) -> None:
    """Value rules beyond the types (the same ones the HTTP API applies)."""
    if isinstance(msg, Subscribe):
        if msg.coalesce_ms < 0 or msg.coalesce_bytes < 1:
            raise HubError("bad_request", "coalesce_ms must be >= 0 and coalesce_bytes >= 1", msg.stream)
    elif isinstance(msg, Append):
        if (msg.seq is None) != (msg.producer is None):
            raise HubError("bad_request", "producer and seq go together: send both or neither", msg.stream)
        if msg.data in ("", []):  # "" and [] alike (and as on HTTP): no chunk, not an empty one
            raise HubError("bad_request", NOTHING_TO_APPEND, msg.stream)
    elif isinstance(msg, Create) and msg.ttl is not None and not msg.ttl >= 0:
        raise HubError("bad_request", "ttl must be a number of seconds >= 0", msg.stream)


def _why(frame: str | bytes, e: msgspec.ValidationError) -> HubError:
    """The error path only: look at the frame again, loosely, to give the precise code."""
    try:
        peek = _peek.decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):  # not even an object
        return HubError("malformed_frame", f"invalid message: {e}")
    stream = peek.stream if isinstance(peek.stream, str) else None
    if isinstance(peek.op, str) and peek.op not in CLIENT_OPS:
        return HubError("unknown_op", f"unknown op {peek.op[:40]!r}")

    def out_of_range(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and not 0 <= v <= MAX_OFFSET

    def offset_like(v: Any) -> bool:
        return v == "now" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_OFFSET)

    if peek.op == "subscribe" and peek.from_ is not msgspec.UNSET and not offset_like(peek.from_):
        # 1.5, "later", -1, 2^53: the offset rule, whatever the JSON type
        return HubError("invalid_offset", f'from must be an integer 0..{MAX_OFFSET} or "now"', stream)
    if peek.op == "append" and out_of_range(peek.seq):
        return HubError("bad_request", f"seq must be between 0 and {MAX_OFFSET}", stream)
    if peek.op == "close" and isinstance(peek.status, str) and peek.status not in get_args(CloseStatus):
        return HubError("bad_request", "status must be done, error or cancelled", stream)
    return HubError("malformed_frame", f"invalid message: {e}")


_server_decoder = msgspec.json.Decoder(ServerMsg)


def decode_server(frame: str | bytes) -> ServerMsg | None:
    """A hub frame, for clients; None for a frame of an op this client does not know (a newer hub)."""
    try:
        return _server_decoder.decode(frame)
    except msgspec.ValidationError:
        peek = _peek.decode(frame)
        if isinstance(peek.op, str) and peek.op not in SERVER_OPS:
            return None
        raise


SERVER_OPS = frozenset(t.__struct_config__.tag for t in get_args(ServerMsg))


def encode(msg: msgspec.Struct) -> str:
    return _encoder.encode(msg).decode()


def error_frame(err: HubError, id: int | str | None = None) -> str:
    return encode(Error(err.code, err.message, err.stream, id))
