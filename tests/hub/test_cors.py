"""The cross-origin rules without a server (hub/protocols/cors.py)."""

from __future__ import annotations

from hub.protocols.cors import DURABLE, NATIVE, allow_origin, policy_for


def test_which_paths_have_cors() -> None:
    assert policy_for("/streams/a/b") is NATIVE and policy_for("/chats/c") is NATIVE
    assert policy_for("/v1/stream/a") is DURABLE
    for path in ("/admin/stats", "/metrics", "/ws", "/", "/static/resumable.js", "/healthz"):
        assert policy_for(path) is None, path


def test_allow_origin() -> None:
    assert allow_origin(None, []) is None  # not a cross-origin request
    assert allow_origin("https://a.example", []) == "*"  # no allow-list: any origin (bearer tokens only)
    assert allow_origin("https://a.example", ["*"]) == "*"
    assert allow_origin("https://a.example", ["https://a.example"]) == "https://a.example"
    assert allow_origin("https://a.example/", ["https://a.example"]) == "https://a.example/"
    assert allow_origin("https://b.example", ["https://a.example"]) is None
