"""Fixtures for hub tests: the real aiohttp app on 127.0.0.1 (ephemeral port) over a tmp data dir."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from aiohttp.test_utils import TestServer

from hub.app import make_app
from hub.core.config import Config
from hub.core.service import HUB, Hub


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.root`` tests (a real tmpfs mount) need root: elsewhere they are skipped, with
    the reason in the report, instead of failing on a permission error."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (mounts a tmpfs); run as root, as CI does")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)


@dataclass
class Running:
    server: TestServer
    hub: Hub
    config: Config

    @property
    def http(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return self.http.replace("http://", "ws://") + "/ws"

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.admin_token}"}


@pytest.fixture
async def start_hub(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Running]]]:
    servers: list[TestServer] = []

    async def start(**cfg: Any) -> Running:
        cfg.setdefault("data_dir", tmp_path / f"data{len(servers)}")
        cfg.setdefault("admin_token", "admin-secret")
        config = Config(**cfg)
        app = make_app(config)
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        servers.append(server)
        return Running(server, app[HUB], config)

    yield start
    for s in servers:
        await s.close()


@pytest.fixture
async def hub(start_hub: Callable[..., Awaitable[Running]]) -> Running:
    return await start_hub()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class WS:
    """A raw protocol-level client: send dicts, receive dicts, with deadlines instead of sleeps."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, **msg: Any) -> None:
        await self.ws.send_str(msgspec.json.encode(msg).decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        m = await self.ws.receive(timeout=timeout)
        assert m.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {m.type} {m.data!r}"
        out: dict[str, Any] = msgspec.json.decode(m.data)
        return out

    async def recv_op(self, op: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            f = await self.recv(max(0.01, deadline - time.monotonic()))
            if f["op"] == op:
                return f

    async def collect(
        self, stream: str, timeout: float = 20.0
    ) -> tuple[list[tuple[int, str]], dict[str, Any]]:
        """Every (offset, chunk) of ``stream`` until its end frame; asserts order with no gap."""
        got: list[tuple[int, str]] = []
        deadline = time.monotonic() + timeout
        while True:
            f = await self.recv(max(0.01, deadline - time.monotonic()))
            if f.get("stream") != stream:
                continue
            if f["op"] == "chunks":
                if got:
                    assert f["offset"] == got[-1][0] + 1, (
                        f"gap or duplicate at {f['offset']} after {got[-1][0]}"
                    )
                got += [(f["offset"] + i, d) for i, d in enumerate(f["data"])]
            elif f["op"] == "end":
                return got, f
            elif f["op"] == "error":
                raise AssertionError(f"error frame: {f}")


@pytest.fixture
async def connect(session: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Awaitable[WS]]]:
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def open_(url: str, **kw: Any) -> WS:
        ws = await session.ws_connect(url, **kw)
        opened.append(ws)
        return WS(ws)

    yield open_
    for ws in opened:
        await ws.close()


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)
