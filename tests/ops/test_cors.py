"""CORS follows the WebSocket's Origin allow-list (issue 12, item 3): with auth off, a page on another
origin must not read, write or delete a local hub's streams and chats. Default list: the hub's own
origin and localhost; ``--allowed-origins`` replaces it. A grant always names the origin, never ``*``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from .procs import HubProcess

EVIL = "https://evil.example"


def request(
    url: str, method: str = "GET", body: object = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    h = {"Content-Type": "application/json"} if data else {}
    req = urllib.request.Request(url, data=data, headers={**h, **(headers or {})}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def seed(hub: HubProcess) -> None:
    status, _, body = request(f"{hub.http}/streams/chat/x/a?create=1", "POST", {"data": "kept"})
    assert status == 200, body


PATHS = [
    ("/chats/x", "DELETE"),
    ("/streams/chat/x/a", "DELETE"),
    ("/streams/chat/x/a", "POST"),
    ("/streams/chat/x/a", "GET"),
    ("/streams/chat/x/a/sse", "GET"),
    ("/v1/stream/chat/x/a", "DELETE"),
    ("/v1/stream/ds/new", "PUT"),
]


@pytest.mark.parametrize(("path", "method"), PATHS)
def test_another_origin_gets_no_grant_and_changes_nothing(
    hub_process: Callable[..., HubProcess], path: str, method: str
) -> None:
    hub = hub_process()
    seed(hub)
    status, headers, _ = request(
        f"{hub.http}{path}", "OPTIONS", headers={"Origin": EVIL, "Access-Control-Request-Method": method}
    )
    assert "Access-Control-Allow-Origin" not in headers, (status, headers)
    body = {"data": "evil"} if method == "POST" else None
    status, headers, _ = request(f"{hub.http}{path}", method, body, headers={"Origin": EVIL})
    assert "Access-Control-Allow-Origin" not in headers
    assert status == 403, status  # the request itself is refused, not only its answer hidden
    status, _, raw = request(f"{hub.http}/streams/chat/x/a?from=0")
    assert status == 200 and json.loads(raw)["chunks"] == ["kept"]
    assert request(f"{hub.http}/v1/stream/ds/new")[0] == 404


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:3000", "OWN"])
def test_localhost_and_the_hubs_own_origin_are_granted_by_name(
    hub_process: Callable[..., HubProcess], origin: str
) -> None:
    hub = hub_process()
    seed(hub)
    origin = hub.http if origin == "OWN" else origin
    status, headers, _ = request(
        f"{hub.http}/chats/x",
        "OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Method": "DELETE"},
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
    status, headers, _ = request(f"{hub.http}/streams/chat/x/a?from=0", headers={"Origin": origin})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
    assert "Origin" in headers.get("Vary", "")
    status, headers, _ = request(f"{hub.http}/v1/stream/chat/x/a", headers={"Origin": origin})
    assert headers.get("Access-Control-Allow-Origin") == origin


def test_allowed_origins_replaces_the_default(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--allowed-origins", "https://app.example,https://admin.example")
    seed(hub)
    for origin in ("https://app.example", "https://admin.example"):
        status, headers, _ = request(f"{hub.http}/streams/chat/x/a?from=0", headers={"Origin": origin})
        assert (status, headers.get("Access-Control-Allow-Origin")) == (200, origin)
    status, headers, _ = request(f"{hub.http}/chats/x", "DELETE", headers={"Origin": "http://localhost:5173"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
    status, _, raw = request(f"{hub.http}/streams/chat/x/a?from=0")
    assert json.loads(raw)["chunks"] == ["kept"]


def test_a_wildcard_list_still_never_answers_star(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--allowed-origins", "*")
    seed(hub)
    status, headers, _ = request(f"{hub.http}/chats/x", "DELETE", headers={"Origin": EVIL})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == EVIL


def test_no_origin_no_cors_and_not_refused(hub_process: Callable[..., HubProcess]) -> None:
    """curl, servers and the Python client send no Origin: nothing to check, nothing to grant."""
    hub = hub_process()
    seed(hub)
    status, headers, _ = request(f"{hub.http}/streams/chat/x/a?from=0")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
