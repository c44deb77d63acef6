"""The cross-origin rules without a server (hub/protocols/cors.py)."""

from __future__ import annotations

from hub.core.auth import Auth
from hub.protocols.cors import DURABLE, NATIVE, policy_for


def test_which_paths_have_cors() -> None:
    assert policy_for("/streams/a/b") is NATIVE and policy_for("/chats/c") is NATIVE
    assert policy_for("/v1/stream/a") is DURABLE
    for path in ("/admin/stats", "/metrics", "/ws", "/", "/static/resumable.js", "/healthz"):
        assert policy_for(path) is None, path


def test_the_origin_rule_is_the_websockets() -> None:
    """One rule for CORS and the WebSocket (hub.core.auth.Auth.origin_allowed): own origin always,
    then the list (``*`` = any), else localhost; a grant names the origin (never ``*``)."""
    default, listed, star = Auth(None), Auth(None, origins=["https://a.example"]), Auth(None, origins=["*"])
    own = "hub.example:8765"
    assert default.origin_allowed("http://hub.example:8765", own)  # the hub's own page
    assert default.origin_allowed("http://localhost:5173", own) and default.origin_allowed(
        "http://127.0.0.1:3000", own
    )
    assert not default.origin_allowed("https://a.example", own)  # no list: not any origin
    assert listed.origin_allowed("https://a.example", own) and listed.origin_allowed(
        "https://a.example/", own
    )
    assert not listed.origin_allowed("http://localhost:5173", own)  # the list replaces localhost
    assert listed.origin_allowed("http://hub.example:8765", own)  # but never the hub's own origin
    assert star.origin_allowed("https://evil.example", own)
    assert not default.origin_allowed("null", own)  # sandboxed frames, file:// pages
