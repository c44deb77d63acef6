"""Traffic for the dashboard's browser test and its screenshot: demo answers, and one open stream whose
reader leaves and comes back (a resume with chunks missed) while a producer keeps appending."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .demo_page import prompt_for

ADMIN = {"Authorization": "Bearer admin-secret"}
LIVE = "live/answer"


@dataclass
class Traffic:
    http: str
    session: aiohttp.ClientSession
    appended: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def post(self, path: str, **json: Any) -> Any:
        async with self.session.post(f"{self.http}{path}", json=json) as r:
            assert r.status in (200, 201), await r.text()
            return await r.json()

    async def append(self, n: int) -> None:
        await self.post(f"/streams/{LIVE}", data=[f"tok{self.appended + i} " for i in range(n)])
        self.appended += n

    async def subscribers(self) -> int:
        async with self.session.get(f"{self.http}/admin/live", headers=ADMIN) as r:
            rows = {row["stream"]: row for row in (await r.json())["streams"]}
        return int(rows[LIVE]["subscribers"]) if LIVE in rows else -1

    async def until(self, pred: Any, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not await pred():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def start(self) -> None:
        # two simulated answers, streamed by the demo's own model over the hub's WebSocket
        for i, q in enumerate(["What is a resumable stream?", "How does a reload resume?"]):
            await self.post("/demo/ask", chat=f"dash{i}", prompt=prompt_for(q, range(120, 200)), rate=60)
        async with self.session.put(
            f"{self.http}/streams/{LIVE}", json={"labels": {"tenant": "acme", "model": "demo"}}
        ) as r:
            assert r.status == 201
        ws_url = self.http.replace("http://", "ws://") + "/ws"
        ws = await self.session.ws_connect(ws_url)
        await ws.send_json({"op": "subscribe", "stream": LIVE})
        await self.append(5)
        got = 0
        while got < 5:
            m = await ws.receive_json(timeout=10)
            got += len(m.get("data", [])) if m["op"] == "chunks" else 0
        await ws.close()  # the reader goes away...
        await self.until(lambda: self._no_subscribers(), "the reader to be seen leaving")
        await self.append(7)  # ...misses these...
        ws = await self.session.ws_connect(ws_url)
        await ws.send_json({"op": "subscribe", "stream": LIVE, "from": 5})  # ...and resumes
        await self.until(lambda: self._subscribed(), "the resume")
        self.tasks.append(asyncio.create_task(self._keep_appending()))
        self.tasks.append(asyncio.create_task(self._drain(ws)))

    async def _no_subscribers(self) -> bool:
        return await self.subscribers() == 0

    async def _subscribed(self) -> bool:
        return await self.subscribers() == 1

    async def _keep_appending(self) -> None:
        for _ in range(600):  # bounded: at most 2 minutes
            await self.append(3)
            await asyncio.sleep(0.2)

    async def _drain(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for _ in ws:
            pass

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
