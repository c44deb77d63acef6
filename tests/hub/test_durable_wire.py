"""The Durable Streams wire code without sockets: offset tokens, headers, cursors, JSON messages, SSE
framing and idempotent-producer validation (hub/protocols/durable/wire.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.errors import HubError
from hub.core.positions import MAX_OFFSET, parse_uint
from hub.protocols.durable import wire as w
from storage import ProducerState


@given(st.integers(0, MAX_OFFSET))
def test_offset_tokens_round_trip_and_sort_like_offsets(n: int) -> None:
    tok = w.format_offset(n)
    assert len(tok) == 33 and w.parse_offset(tok) == n
    assert (w.format_offset(n) < w.format_offset(n + 1)) is True


@pytest.mark.parametrize("raw", ["", "12", "0000000000000001_0000000000000001", "x" * 33, "-2", "NOW"])
def test_malformed_offsets_are_invalid_offset(raw: str) -> None:
    with pytest.raises(w.DSError) as e:
        w.parse_offset(raw)
    assert (e.value.status, e.value.code) == (400, "invalid_offset")


def test_offset_sentinels_are_returned_as_such() -> None:
    assert w.parse_offset("-1") == "-1"
    assert w.parse_offset("now") == "now"


@pytest.mark.parametrize("raw", ["01", "+1", "-1", " 1", "1.0", "1e3", str(MAX_OFFSET + 1), ""])
def test_parse_uint_is_strict(raw: str) -> None:
    with pytest.raises(HubError) as e:
        parse_uint(raw, "Producer-Seq")
    assert e.value.code == "bad_request" and "Producer-Seq" in e.value.message


def test_parse_uint_accepts_plain_decimals() -> None:
    assert parse_uint("0", "x") == 0
    assert parse_uint(str(MAX_OFFSET), "x") == MAX_OFFSET


def test_expires_round_trip_and_refusals() -> None:
    ts = w.parse_expires("2030-01-02T03:04:05.250Z")
    assert w.format_expires(ts) == "2030-01-02T03:04:05.250Z"
    assert w.parse_expires("2030-01-02T04:04:05+01:00") == w.parse_expires("2030-01-02T03:04:05Z")
    for bad in ("tomorrow", "2030-01-02", "2030-13-02T03:04:05Z"):
        with pytest.raises(w.DSError):
            w.parse_expires(bad)


def test_content_type_essence() -> None:
    assert w.essence(" Application/JSON; charset=utf-8") == "application/json"
    assert w.is_json("application/json;charset=utf-8") and not w.is_json("application/jsonl")
    assert w.is_text("text/markdown") and w.is_text("application/json") and not w.is_text("image/png")


def test_cursor_moves_past_the_clients_so_caches_never_loop() -> None:
    now = w.CURSOR_EPOCH + 100 * w.CURSOR_INTERVAL_S + 1
    assert w.cursor(None, now) == "100"
    assert w.cursor("7", now) == "100"  # an old cursor: the current interval
    ahead = int(w.cursor("100", now))
    assert 100 < ahead <= 100 + 3600 // w.CURSOR_INTERVAL_S
    assert w.cursor("junk", now) == "100"


def test_json_messages_split_one_level_and_keep_exact_bytes() -> None:
    assert w.json_messages(b' [1, {"a": [2,3]} ,"x"] ') == [b"1", b'{"a": [2,3]}', b'"x"']
    assert w.json_messages(b' {"a": 1} ') == [b'{"a": 1}']
    assert w.json_messages(b"[]") == []
    for bad in (b"[1,", b"{", b"nope"):
        with pytest.raises(w.DSError) as e:
            w.json_messages(bad)
        assert e.value.code == "invalid_json"


def test_render_concatenates_or_wraps_json() -> None:
    assert w.render("text/plain", [b"a", b"b"]) == b"ab"
    assert w.render("application/json", [b"1", b"{}"]) == b"[1,{}]"
    assert w.render("application/json", []) == b"[]"


@given(st.text())
def test_sse_data_can_never_end_the_event_early(text: str) -> None:
    ev = w.sse_data("text", [text.encode()])
    assert ev.startswith("event: data\n") and ev.endswith("\n\n")
    body = ev[len("event: data\n") : -1]
    lines = body.split("\n")[:-1]
    assert all(line.startswith("data:") for line in lines)
    # what an SSE parser gets back: one leading space dropped per field, lines joined with LF
    parsed = "\n".join(line[5:][1:] if line[5:6] == " " else line[5:] for line in lines)
    assert parsed == text.replace("\r\n", "\n").replace("\r", "\n")


def test_sse_data_base64_and_json() -> None:
    b64 = base64.b64encode(b"\x00\xff\x01").decode()
    assert w.sse_data("base64", [b"\x00\xff", b"\x01"]) == f"event: data\ndata:{b64}\n\n"
    assert w.sse_data("json", [b"1", b"2"]) == "event: data\ndata:[1,2]\n\n"


def test_sse_control_fields() -> None:
    open_ = w.sse_control(5, "42", True, False)
    assert '"streamNextOffset":"0000000000000005_0000000000000000"' in open_
    assert '"streamCursor":"42"' in open_ and '"upToDate":true' in open_
    closed = w.sse_control(5, "42", True, True)
    assert '"streamClosed":true' in closed and "streamCursor" not in closed


def test_producer_headers_go_together() -> None:
    assert w.producer_headers({}) is None
    assert w.producer_headers({"Producer-Id": "p", "Producer-Epoch": "1", "Producer-Seq": "2"}) == (
        w.ProducerHeaders("p", 1, 2)
    )
    for h in ({"Producer-Id": "p"}, {"Producer-Id": "", "Producer-Epoch": "0", "Producer-Seq": "0"}):
        with pytest.raises(w.DSError) as e:
            w.producer_headers(h)
        assert e.value.status == 400


def test_check_producer_accepts_dedupes_fences_and_refuses_gaps() -> None:
    P = w.ProducerHeaders
    assert w.check_producer(None, P("p", 0, 0)) is None  # a new producer starts at 0
    with pytest.raises(w.DSError) as e:
        w.check_producer(None, P("p", 0, 3))
    assert (e.value.status, e.value.code) == (409, "producer_seq_gap")
    assert e.value.headers == {"Producer-Expected-Seq": "0", "Producer-Received-Seq": "3"}
    st_ = ProducerState(epoch=2, seq=5, first_offset=10, count=1)
    assert w.check_producer(st_, P("p", 2, 6)) is None  # the next seq
    assert w.check_producer(st_, P("p", 2, 5)) == 5  # a retry: the highest accepted seq
    assert w.check_producer(st_, P("p", 2, 1)) == 5
    with pytest.raises(w.DSError) as e:
        w.check_producer(st_, P("p", 2, 8))
    assert e.value.code == "producer_seq_gap" and e.value.headers["Producer-Expected-Seq"] == "6"
    with pytest.raises(w.DSError) as e:
        w.check_producer(st_, P("p", 1, 0))
    assert (e.value.status, e.value.code, e.value.headers) == (
        403,
        "producer_fenced",
        {"Producer-Epoch": "2"},
    )
    assert w.check_producer(st_, P("p", 3, 0)) is None  # a new epoch restarts at 0
    with pytest.raises(w.DSError):
        w.check_producer(st_, P("p", 3, 1))


def test_create_request_parse() -> None:
    r = w.CreateRequest.parse(
        {
            "Content-Type": " application/json ",
            "Stream-TTL": "60",
            "Stream-Forked-From": "/v1/stream/chat/1%2Fa",
            "Stream-Fork-Offset": w.format_offset(3),
            "Stream-Closed": "true",
        }
    )
    assert (r.content_type, r.ttl, r.expires_at, r.closed) == ("application/json", 60.0, None, True)
    assert (r.fork_from, r.fork_offset, r.fork_sub) == ("chat/1/a", 3, 0)
    for bad in (
        {"Stream-TTL": "1", "Stream-Expires-At": "2030-01-01T00:00:00Z"},
        {"Stream-Fork-Offset": "-1"},
        {"Stream-Forked-From": "/elsewhere/x"},
        {"Stream-TTL": "1.5"},
    ):
        with pytest.raises(HubError):
            w.CreateRequest.parse(bad)
