"""Errors a client can switch on: one exception with a stable ``code``, and the HTTP status per code.

Storage errors reuse their own codes (``storage.errors``); the table maps them too.
"""

from __future__ import annotations


class HubError(Exception):
    """An error a client can switch on: ``code`` is stable, ``status`` is the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400, stream: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.stream = stream


# HTTP status per stable code; storage errors reuse their own codes. docs/protocol.md lists the same
# codes for people (tests/hub/test_error_table.py keeps the two equal).
STATUS = {
    "bad_request": 400,
    "malformed_frame": 400,
    "unknown_op": 400,
    "invalid_stream_id": 400,
    "invalid_offset": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "producer_fenced": 403,
    "stream_not_found": 404,
    "stream_gone": 410,
    "stream_exists": 409,
    "stream_closed": 409,
    "sequence_error": 409,
    "sequence_gap": 409,
    "producer_seq_gap": 409,
    "content_type_mismatch": 409,
    "offset_out_of_range": 416,
    "chunk_too_large": 413,
    "body_too_large": 413,
    "frame_too_large": 413,
    "too_many_subscriptions": 429,
    "too_many_connections": 429,
    "too_many_inflight": 429,
    "corrupt_data": 500,
    "storage_unavailable": 503,
    "storage_error": 500,
    "going_away": 503,
}
