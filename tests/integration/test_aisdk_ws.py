"""The server of the AI SDK's WebSocketChatTransport: send, resume{lastSequence}, abort, no-active."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.integration import aisdk_gens
from tests.integration.conftest import Running
from tests.integration.test_aisdk_http import user

GEN = "tests.integration.aisdk_gens:"


def send_frame(rid: str, chat: str, **body: Any) -> dict[str, Any]:
    return {
        "type": "send",
        "requestId": rid,
        "id": chat,
        "trigger": "submit-message",
        "messages": [user("hi")],
        "headers": {},
        "body": body,
    }


async def frames(ws: aiohttp.ClientWebSocketResponse, rid: str, until: str = "end") -> list[dict[str, Any]]:
    out = []
    async for m in ws:
        f = json.loads(m.data)
        if f["requestId"] == rid:
            out.append(f)
            if f["type"] in (until, "error", "no-active"):
                break
    return out


def check_sequences(fs: list[dict[str, Any]], first: int = 0) -> None:
    seqs = [f["sequence"] for f in fs if f["type"] == "chunk"]
    assert seqs == list(range(first, first + len(seqs)))  # contiguous: the client's gap rule holds


async def test_send_then_resume_from_last_sequence(start_hub: Any, session: aiohttp.ClientSession) -> None:
    hub: Running = await start_hub(generator=GEN + "paced")
    url = f"{hub.http}/api/chat/ws"
    async with session.ws_connect(url) as ws:
        await ws.send_json(send_frame("r1", "w1", n=200, delay=0.005))
        got = []
        async for m in ws:
            got.append(json.loads(m.data))
            if len(got) == 12:
                break
    assert got[0] == {"type": "start", "requestId": "r1"}
    check_sequences(got[1:])
    last = got[-1]["sequence"]
    async with session.ws_connect(url) as ws:  # a new socket, as after going offline
        await ws.send_json(
            {"type": "resume", "requestId": "r2", "id": "w1", "lastSequence": last, "headers": {}, "body": {}}
        )
        rest = await frames(ws, "r2")
    assert rest[0]["type"] == "start" and rest[-1] == {"type": "end", "requestId": "r2"}
    check_sequences(rest[1:-1], last + 1)
    chunks = [f["chunk"] for f in got[1:] + rest[1:-1]]
    text = "".join(c["delta"] for c in chunks if c["type"] == "text-delta")
    assert text == "".join(f"w{i} " for i in range(200))
    assert chunks[-1] == {"type": "finish", "finishReason": "stop"}
    async with session.ws_connect(url) as ws:
        await ws.send_json({"type": "resume", "requestId": "r3", "id": "w1", "headers": {}, "body": {}})
        assert await frames(ws, "r3") == [{"type": "no-active", "requestId": "r3"}]


async def test_abort_reaches_the_generator_and_keeps_the_partial(
    start_hub: Any, session: aiohttp.ClientSession
) -> None:
    hub: Running = await start_hub(generator=GEN + "paced")
    async with session.ws_connect(f"{hub.http}/api/chat/ws") as ws:
        await ws.send_json(send_frame("a1", "w2", n=100_000, delay=0.005))
        n = 0
        async for _ in ws:
            n += 1
            if n == 10:
                break
        await ws.send_json({"type": "abort", "requestId": "a1"})
        # the same socket keeps serving: a resume of another chat answers at once
        await ws.send_json({"type": "resume", "requestId": "a2", "id": "none", "headers": {}, "body": {}})
        assert (await frames(ws, "a2"))[-1]["type"] == "no-active"
    sid = hub.hub.store.list("chat/w2/")[0]
    s = hub.hub.store.get(sid)
    deadline = time.monotonic() + 10
    while not s.ended and time.monotonic() < deadline:  # the abort is one-way: poll for its effect
        await asyncio.sleep(0.01)
    assert s.status == "cancelled" and sid in aisdk_gens.CANCELLED
    assert 5 <= s.next_offset < 100_000


async def test_bad_frames_and_auth_by_subprotocol(start_hub: Any, session: aiohttp.ClientSession) -> None:
    hub: Running = await start_hub(generator=GEN + "paced", jwt_secret="k" * 32)
    tok = hub.hub.auth.mint(read=["chat/w3/*"], write=["chat/w3/*"])
    url = f"{hub.http}/api/chat/ws"
    async with session.ws_connect(url) as ws:  # no token: every request is refused, the socket stays
        await ws.send_json(send_frame("b1", "w3", n=1))
        f = (await frames(ws, "b1"))[-1]
        assert f["type"] == "error" and "token" in f["errorText"]
        await ws.send_json({"type": "resume", "requestId": "b2", "id": "w3"})  # headers/body optional
        assert (await frames(ws, "b2"))[-1]["type"] == "error"
        await ws.send_json({"type": "send", "requestId": "b3", "id": "w3"})  # no messages
        assert (await frames(ws, "b3"))[-1]["type"] == "error"
    async with session.ws_connect(url, protocols=(f"bearer.{tok}",)) as ws:
        assert ws.protocol == f"bearer.{tok}"
        await ws.send_json(send_frame("b4", "w3", n=2))
        got = await frames(ws, "b4")
        assert got[-1] == {"type": "end", "requestId": "b4"}
        await ws.send_json(send_frame("b5", "other", n=2))
        assert (await frames(ws, "b5"))[-1]["type"] == "error"  # forbidden beyond its grant
    async with session.ws_connect(url, params={"token": tok}) as ws:
        await ws.send_json({"type": "resume", "requestId": "b6", "id": "w3", "headers": {}, "body": {}})
        assert (await frames(ws, "b6"))[-1]["type"] == "no-active"
