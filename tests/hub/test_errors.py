"""The one error table's rules: statuses from the table, headers, the one storage mapping, each
protocol's dialect, and the close codes (the table against docs/protocol.md: test_error_table.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.core.errors import FATAL_CLOSE, STATUS, CloseCode, DSError, HubError, for_dialect, storage_errors
from storage.errors import StorageError, StreamClosed, StreamGone

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()


def test_every_storage_code_has_a_status() -> None:
    import storage.errors as se

    codes = {c.code for c in vars(se).values() if isinstance(c, type) and issubclass(c, StorageError)}
    assert codes <= set(STATUS), codes - set(STATUS)


def test_close_codes_are_documented() -> None:
    for code in (CloseCode.GOING_AWAY, CloseCode.UNAUTHORIZED, CloseCode.SLOW):
        assert str(int(code)) in DOC
    assert {4401} == FATAL_CLOSE


def test_status_comes_from_the_table() -> None:
    assert HubError("stream_closed", "m").status == 409
    assert HubError("unauthorized", "m").headers == {"WWW-Authenticate": "Bearer"}
    assert HubError("no_such_code", "m").status == 500
    e = DSError("producer_seq_gap", "m", {"Producer-Expected-Seq": "3"})
    assert e.status == 409 and e.headers == {"Producer-Expected-Seq": "3"}
    assert DSError("stream_gone", "soft-deleted", status=409).status == 409


def test_storage_errors_map_in_one_place() -> None:
    with pytest.raises(HubError) as e, storage_errors("s"):
        raise StreamClosed("closed")
    assert (e.value.code, e.value.status, e.value.stream, e.value.message) == (
        "stream_closed",
        409,
        "s",
        "closed",
    )


def test_dialects() -> None:
    gone = HubError("stream_gone", "deleted")
    assert for_dialect(gone).status == 410
    ds = for_dialect(gone, "durable")
    assert (ds.code, ds.status) == ("stream_not_found", 404)
    assert for_dialect(StreamGone("x"), "durable").code == "stream_not_found"
    soft = DSError("stream_gone", "forks remain", status=409)  # the protocol's own answer stays
    assert for_dialect(soft, "durable") is soft
