"""The hub's one error family, its code table and the WebSocket close codes. No I/O.

    HubError(code, message, stream)       every error a client sees; ``code`` is stable
     └── DSError(code, message, headers)  a Durable Streams answer that also carries headers

``STATUS`` gives the HTTP status of every code, for every protocol: the hub's own HTTP API and Durable
Streams answer the same code with the same status. The two places the protocols differ are written
here, not in the handlers: Durable Streams calls a deleted stream ``stream_not_found`` (404) where the
hub's API says ``stream_gone`` (410), and answers a PUT or a fork on a soft-deleted stream with 409.

Storage raises ``storage.errors.StorageError`` subclasses with codes of their own (the table has them);
``storage_errors`` is the one place they become ``HubError``s (around every storage call in
``hub.core``; no transport ever sees a ``StorageError``). docs/protocol.md lists the codes for people.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Literal

from storage.errors import StorageError

STATUS: dict[str, int] = {
    "bad_request": 400,
    "malformed_frame": 400,
    "unknown_op": 400,
    "invalid_stream_id": 400,
    "invalid_offset": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "token_expired": 401,
    "forbidden": 403,
    "producer_fenced": 403,
    "stream_not_found": 404,
    "no_generator": 404,  # the AI SDK send endpoint on a hub without --generator / --llm-base-url
    "stream_gone": 410,
    "stream_exists": 409,
    "stream_closed": 409,
    "sequence_error": 409,
    "sequence_gap": 409,
    "producer_seq_gap": 409,
    "content_type_mismatch": 409,
    "offset_out_of_range": 416,
    "chunk_too_large": 413,
    "frame_too_large": 413,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "too_many_subscriptions": 429,
    "too_many_connections": 429,
    "too_many_inflight": 429,
    "corrupt_data": 500,
    "storage_unavailable": 503,
    "storage_error": 500,
    "going_away": 503,
}

Dialect = Literal["native", "durable"]


class HubError(Exception):
    """An error a client can switch on. ``status`` comes from ``STATUS`` unless the protocol itself
    gives this code another one (see the module docstring)."""

    def __init__(
        self, code: str, message: str, stream: str | None = None, *, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stream = stream
        self.status = status if status is not None else STATUS.get(code, 500)

    @property
    def headers(self) -> dict[str, str]:
        """Extra HTTP response headers."""
        return {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}


class DSError(HubError):
    """A Durable Streams protocol error with the headers the protocol puts on it
    (``Producer-Expected-Seq``, ``Stream-Closed``, ...)."""

    def __init__(
        self, code: str, message: str, headers: dict[str, str] | None = None, *, status: int | None = None
    ) -> None:
        super().__init__(code, message, status=status)
        self.extra = headers or {}

    @property
    def headers(self) -> dict[str, str]:
        return {**super().headers, **self.extra}


def from_storage(e: StorageError, stream: str | None = None) -> HubError:
    return HubError(e.code, str(e), stream)


class storage_errors:  # noqa: N801 - used as a function: ``with storage_errors(sid):``
    """Around every call into storage (``hub.core.service``, the fan-out's replay): the one place a
    storage error becomes the hub's. A class, not a generator context manager: it wraps every
    append, where a ``@contextmanager`` costs a generator per call."""

    __slots__ = ("stream",)

    def __init__(self, stream: str | None = None) -> None:
        self.stream = stream

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if isinstance(exc, StorageError):
            raise from_storage(exc, self.stream) from None


def for_dialect(
    e: HubError | StorageError, dialect: Dialect = "native", stream: str | None = None
) -> HubError:
    """The error as this protocol answers it."""
    err = from_storage(e, stream) if isinstance(e, StorageError) else e
    if dialect == "durable" and err.code == "stream_gone" and not isinstance(err, DSError):
        # deleted or expired: for Durable Streams the stream is simply not there
        return DSError("stream_not_found", err.message)
    return err


class CloseCode(IntEnum):
    """WebSocket close codes the hub sends; the Python client switches on them too."""

    GOING_AWAY = 1001  # the hub is shutting down: resume elsewhere or later
    POLICY = 1008
    UNAUTHORIZED = 4401  # the token was refused: reconnecting with the same token cannot help
    SLOW = 4408  # the client could not keep up with its own control frames: resume from your offset


FATAL_CLOSE = frozenset({CloseCode.UNAUTHORIZED})
