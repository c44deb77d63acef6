"""Auth matrix: every endpoint x every kind of token; no unauthorised request may succeed."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import jwt
import pytest

SECRET = "s" * 32
STREAM = "tenant/a/answer"  # each case gets a fresh one under it: a deleted id stays gone (410)


def tokens(auth: Any) -> dict[str, str | None]:
    now = int(time.time())
    return {
        "none": None,
        "garbage": "not.a.jwt",
        "expired": auth.mint(read=["tenant/a/*"], write=["tenant/a/*"], ttl=-60),
        "wrong_key": jwt.encode(
            {"read": ["*"], "write": ["*"], "exp": now + 600}, "w" * 32, algorithm="HS256"
        ),
        "alg_none": jwt.encode({"read": ["*"], "write": ["*"], "exp": now + 600}, None, algorithm="none"),
        "no_exp": jwt.encode({"read": ["*"], "write": ["*"]}, SECRET, algorithm="HS256"),
        "wrong_stream": auth.mint(read=["tenant/b/*"], write=["tenant/b/*"]),
        "prefix_lookalike": auth.mint(read=["tenant/a"], write=["tenant/a"]),  # exact id, not a prefix
        "read_only": auth.mint(read=["tenant/a/*"]),
        "cancel_only": auth.mint(cancel=["tenant/a/*"]),
        "admin_token": "admin-secret",  # opens /admin and /metrics, nothing else
        "writer": auth.mint(read=["tenant/a/*"], write=["tenant/a/*"]),
    }


# (name, needs) -> which grant a request needs; "admin" needs the admin token
HTTP = [
    ("PUT", "/streams/{s}", None, "write"),
    ("POST", "/streams/{s}", {"data": "x"}, "write"),
    ("POST", "/streams/{s}/cancel", None, "cancel"),
    ("GET", "/streams/{s}?from=0", None, "read"),
    ("GET", "/streams/{s}/sse?from=0", None, "read"),
    ("POST", "/streams/{s}/close", {"status": "done"}, "write"),
    ("DELETE", "/streams/{s}", None, "write"),
    ("GET", "/admin/stats", None, "admin"),
    ("GET", "/admin/streams/{s}", None, "admin"),
    ("GET", "/metrics", None, "admin"),
]
WS_OPS = [
    ({"op": "subscribe", "stream": STREAM}, "read", "subscribed"),
    ({"op": "append", "stream": STREAM, "data": "y", "id": 1}, "write", "ack"),
    ({"op": "create", "stream": STREAM, "id": 2}, "write", "ack"),
    ({"op": "cancel", "stream": STREAM}, "cancel", None),
    ({"op": "close", "stream": STREAM, "id": 3}, "write", "ack"),
]


def allowed(kind: str, needs: str) -> bool:
    if needs == "admin":
        return kind == "admin_token"  # no stream JWT opens the admin endpoints
    return {"writer": {"read", "write", "cancel"}, "read_only": {"read"}, "cancel_only": {"cancel"}}.get(
        kind, set()
    ).__contains__(needs)


_fresh = iter(range(1 << 30))


async def _reset(session: aiohttp.ClientSession, hub: Any, writer: str) -> str:
    """A fresh open stream with one chunk, for the next case."""
    sid = f"{STREAM}/{next(_fresh)}"
    h = {"Authorization": f"Bearer {writer}"}
    async with session.put(f"{hub.http}/streams/{sid}", headers=h) as r:
        assert r.status == 201
    async with session.post(f"{hub.http}/streams/{sid}", json={"data": "seed"}, headers=h) as r:
        assert r.status == 200
    return sid


@pytest.mark.parametrize("transport", ["http", "ws"])
async def test_auth_matrix_has_no_unauthorised_success(start_hub, session, transport):
    hub = await start_hub(jwt_secret=SECRET, admin_token="admin-secret")
    toks = tokens(hub.hub.auth)
    unauthorised_successes: list[str] = []
    denied = 0
    allowed_ok = 0
    if transport == "http":
        for method, path_t, body, needs in HTTP:
            for kind, tok in toks.items():
                sid = await _reset(session, hub, toks["writer"])  # type: ignore[arg-type]
                path = path_t.format(s=sid)
                headers = {"Authorization": f"Bearer {tok}"} if tok else {}
                async with session.request(method, hub.http + path, json=body, headers=headers) as r:
                    ok = r.status < 400
                    if ok and path.endswith("/sse"):
                        r.close()
                if ok and not allowed(kind, needs):
                    unauthorised_successes.append(f"{method} {path} with {kind} -> {r.status}")
                elif not ok:
                    assert r.status in (401, 403), (method, path, kind, r.status)
                    denied += 1
                else:
                    allowed_ok += 1
    else:
        for msg_t, needs, success_op in WS_OPS:
            for kind, tok in toks.items():
                sid = await _reset(session, hub, toks["writer"])  # type: ignore[arg-type]
                msg = {**msg_t, "stream": sid}
                url = hub.ws_url + (f"?token={tok}" if tok else "")
                async with session.ws_connect(url) as ws:
                    await ws.send_json(msg)
                    await ws.send_json({"op": "ping", "t": 1})
                    got: list[dict[str, Any]] = []
                    while True:  # until the request's own answer (acks follow the pong: they wait for fsync)
                        m = await ws.receive(timeout=10)
                        if m.type != aiohttp.WSMsgType.TEXT:
                            break
                        f = m.json()
                        got.append(f)
                        if f["op"] in ("error", success_op or "pong"):
                            break
                ops = [f["op"] for f in got]
                errors = [f["code"] for f in got if f["op"] == "error"]
                # cancel: success is the cancel flag being set
                ok = sid in hub.hub.cancel_requested if success_op is None else success_op in ops
                if ok and not allowed(kind, needs):
                    unauthorised_successes.append(f"ws {msg['op']} with {kind} -> {got}")
                elif not ok:
                    assert errors and errors[0] in ("unauthorized", "token_expired", "forbidden"), (
                        msg,
                        kind,
                        got,
                    )
                    denied += 1
                else:
                    allowed_ok += 1
    assert unauthorised_successes == []
    assert denied > 50 and allowed_ok >= 3  # the matrix really exercised both sides


async def test_limits_connections_per_ip_and_subscriptions_per_connection(start_hub, session):
    hub = await start_hub(max_connections_per_ip=3, max_subscriptions=2)
    conns = [await session.ws_connect(hub.ws_url) for _ in range(3)]
    with pytest.raises(aiohttp.WSServerHandshakeError) as e:
        await session.ws_connect(hub.ws_url)
    assert e.value.status == 429
    ws = conns[0]
    for i in range(3):
        await ws.send_json({"op": "append", "stream": f"lim/{i}", "data": "x", "id": i, "create": True})
        assert (await ws.receive_json(timeout=10))["op"] == "ack"
    for i in range(3):
        await ws.send_json({"op": "subscribe", "stream": f"lim/{i}"})
    codes = []
    while len(codes) < 3:
        f = await ws.receive_json(timeout=10)
        if f["op"] in ("subscribed", "error"):
            codes.append(f.get("code", f["op"]))
    assert codes == ["subscribed", "subscribed", "too_many_subscriptions"]
    for c in conns:
        await c.close()
    # a closed connection frees its slot
    async with session.ws_connect(hub.ws_url):
        pass
