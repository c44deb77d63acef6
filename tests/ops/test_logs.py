"""Logs (issue 12, item 4): no token the hub was given appears in anything it prints, whatever the
access-log mode; the access log is off by default and ``on``/``json`` when asked; the admin token can
come from the environment or a file and is then never printed; ``/healthz`` and ``/readyz`` answer."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
import pytest

from .procs import HubProcess, clean_env

SECRET = "log-test-secret-0123456789abcdef0123"
ADMIN = "admin-token-from-env-0123456789"


def mint(**claims: object) -> str:
    base: dict[str, object] = {"read": ["log/*"], "write": ["log/*"], "exp": int(time.time()) + 600}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


async def exercise(hub: HubProcess, tokens: dict[str, str]) -> None:
    """Every way a token reaches the hub: query string, Authorization header, WebSocket upgrade,
    SSE, a refused token, an expired one, and the admin token."""
    async with aiohttp.ClientSession() as s:
        auth = {"Authorization": f"Bearer {tokens['header']}"}
        async with s.post(f"{hub.http}/streams/log/a?create=1", json={"data": "x"}, headers=auth) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{hub.http}/streams/log/a?token={tokens['query']}", json={"data": "y"}) as r:
            assert r.status == 200, await r.text()
        async with s.post(
            f"{hub.http}/streams/log/a/close?token={tokens['query']}", json={"status": "done"}
        ) as r:
            assert r.status == 200
        async with s.get(f"{hub.http}/streams/log/a/sse?token={tokens['sse']}") as r:
            assert r.status == 200
            await r.read()
        ws = await s.ws_connect(f"ws://127.0.0.1:{hub.port}/ws?token={tokens['ws']}")
        await ws.send_json({"op": "subscribe", "stream": "log/a", "from": 0})
        while (await ws.receive_json(timeout=10))["op"] != "end":
            pass
        await ws.close()
        for bad in ("bad", "expired"):
            async with s.get(f"{hub.http}/streams/log/a?token={tokens[bad]}") as r:
                assert r.status == 401
        async with s.get(f"{hub.http}/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
        async with s.get(f"{hub.http}/admin/stats?token=wrong-admin-token-xyz") as r:
            assert r.status == 401


def given_tokens() -> dict[str, str]:
    return {
        "header": mint(),
        "query": mint(n=1),
        "sse": mint(n=2),
        "ws": mint(n=3),
        "bad": "not.a.valid-token-abcdef",
        "expired": mint(exp=int(time.time()) - 60),
    }


@pytest.mark.parametrize("mode", ["off", "on", "json"])
async def test_no_token_in_any_line_the_hub_prints(hub_process: Callable[..., HubProcess], mode: str) -> None:
    hub = hub_process("--jwt-secret", SECRET, "--access-log", mode, env=clean_env(RHUB_ADMIN_TOKEN=ADMIN))
    tokens = given_tokens()
    await exercise(hub, tokens)
    hub.stop()
    out = hub.out.text()
    for name, tok in {
        **tokens,
        "admin": ADMIN,
        "secret": SECRET,
        "wrong admin": "wrong-admin-token-xyz",
    }.items():
        assert tok not in out, f"the {name} token is in the hub's output:\n{out}"
    access = [line for line in hub.out.lines if "/streams/log/a" in line]
    if mode == "off":
        assert access == [], out
    else:
        assert len(access) >= 5, out  # the requests were logged, without their tokens
        assert any("token=[redacted]" in line for line in access), out
    if mode == "json":
        records = [json.loads(line) for line in access]
        assert {"method", "path", "status", "ms"} <= set(records[0])


def test_admin_token_from_a_file_is_used_and_not_printed(
    hub_process: Callable[..., HubProcess], tmp_path: Path
) -> None:
    f = tmp_path / "admin-token"
    f.write_text(ADMIN + "\n")  # a trailing newline, as editors and `echo` leave it
    hub = hub_process(env=clean_env(RHUB_ADMIN_TOKEN_FILE=str(f)))
    req = urllib.request.Request(f"{hub.http}/metrics", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    assert ADMIN not in hub.out.text()
    assert any(str(f) in line for line in hub.out.lines), hub.out.text()  # says where it came from


def test_log_level_warning_silences_info(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--log-level", "warning", "--access-log", "on")
    with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as r:
        assert r.status == 200
    hub.stop()
    assert not any("/healthz" in line for line in hub.out.lines), hub.out.text()


def test_healthz_and_readyz(hub_process: Callable[..., HubProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    hub = hub_process("--data-dir", str(data))
    with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as r:
        assert json.loads(r.read()) == {"ok": True}
    with urllib.request.urlopen(f"{hub.http}/readyz", timeout=10) as r:
        body = json.loads(r.read())
        assert r.status == 200 and body["ready"] is True and body["checks"]["storage"] == "ok"
    # The data dir is gone from under the hub: it is alive, but not ready to acknowledge anything.
    data.rename(tmp_path / "moved")
    data.write_text("not a directory any more")
    with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as r:
        assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{hub.http}/readyz", timeout=10)
    assert e.value.code == 503
    assert json.loads(e.value.read())["ready"] is False
