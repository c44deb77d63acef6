"""Fuzzing: the message decoder (pure, hypothesis) and the live hub (random frames and requests)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.fuzz import bombs, fuzz
from hub.core.errors import STATUS, HubError
from hub.protocols.native import messages as p

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
op_messages = st.fixed_dictionaries(
    {"op": st.sampled_from(["subscribe", "append", "create", "close", "cancel", "unsubscribe", "ping", "x"])},
    optional={k: json_values for k in ["stream", "from", "data", "id", "producer", "seq", "status", "epoch"]},
)


def _decode_or_typed_error(frame: str | bytes) -> None:
    try:
        msg = p.decode(frame)
    except HubError as e:
        assert e.code in STATUS, e.code
        return
    assert isinstance(msg, p.Subscribe | p.Unsubscribe | p.Create | p.Append | p.Close | p.Cancel | p.Ping)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_typed_errors_on_bytes(frame):
    _decode_or_typed_error(frame)


@settings(max_examples=600, deadline=None)
@given(op_messages)
def test_decoder_on_almost_valid_messages(msg):
    _decode_or_typed_error(json.dumps(msg))


def test_decoder_survives_deep_nesting():
    for depth in (100, 10_000, 1_000_000):
        _decode_or_typed_error("[" * depth + "]" * depth)
        _decode_or_typed_error('{"op":"append","stream":"s","data":' + "[" * depth + "]" * depth + "}")


async def test_live_hub_answers_hostile_input_with_stable_codes(hub):
    t = await fuzz(hub.http, 2500, seed=11)
    assert t.unexpected == []
    assert t.checks >= 5  # a well-behaved client was served correctly all along
    assert sum(t.codes.values()) > 1000


async def test_oversized_and_compressed_bomb_frames_are_refused(hub):
    assert await bombs(hub.http) == []
