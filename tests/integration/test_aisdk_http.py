"""The AI SDK's HTTP transport against the real hub: send, resume (replay then live), stop, errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from hub.client import Producer
from tests.integration import aisdk_gens
from tests.integration.conftest import Running

GEN = "tests.integration.aisdk_gens:"


def user(text: str, mid: str = "u1") -> dict[str, Any]:
    return {"id": mid, "role": "user", "parts": [{"type": "text", "text": text}]}


async def events(r: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any] | str]:
    """The SSE body as UI chunks, ``"[DONE]"`` and comments (``": ..."``), in order."""
    async for raw in r.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield line
        elif line.startswith("data: "):
            data = line[6:]
            yield data if data == "[DONE]" else json.loads(data)


async def chunks(r: aiohttp.ClientResponse) -> list[Any]:
    return [e async for e in events(r) if not (isinstance(e, str) and e.startswith(":"))]


def text_of(evs: list[Any]) -> str:
    return "".join(e["delta"] for e in evs if isinstance(e, dict) and e["type"] == "text-delta")


async def send(session: aiohttp.ClientSession, hub: Running, chat: str, text: str, **body: Any) -> Any:
    return session.post(
        f"{hub.http}/api/chat",
        json={"id": chat, "messages": [user(text)], "trigger": "submit-message", **body},
    )


async def test_send_streams_ui_chunks_with_the_headers_and_saves_the_answer(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "paced")
    async with await send(session, hub, "c1", "hi", n=5) as r:
        assert r.status == 200
        assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert r.headers["content-type"].startswith("text/event-stream")
        evs = await chunks(r)
    types = [e if isinstance(e, str) else e["type"] for e in evs]
    assert types == ["start"] + ["reasoning-start", "reasoning-delta", "reasoning-end"] + ["text-start"] + [
        "text-delta"
    ] * 5 + ["text-end", "finish", "[DONE]"]
    assert evs[0]["messageId"].startswith("msg-")
    assert text_of(evs) == "w0 w1 w2 w3 w4 "
    async with session.get(f"{hub.http}/api/chat/c1/stream") as r:
        assert r.status == 204  # ended: nothing to resume ...
    async with session.get(f"{hub.http}/api/chat/c1/messages") as r:
        body = await r.json()  # ... and already saved: one durable close
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["messages"][1]["parts"][-1]["text"] == "w0 w1 w2 w3 w4 "
    assert body["messages"][1]["parts"][0] == {"type": "reasoning", "text": "thinking", "state": "done"}
    assert body["messages"][1]["id"] == evs[0]["messageId"]


async def test_resume_mid_answer_replays_from_the_first_chunk_then_goes_live(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "paced")
    async with await send(session, hub, "c2", "go", n=60, delay=0.01) as first:
        seen = []
        async for e in events(first):
            seen.append(e)
            if isinstance(e, dict) and e["type"] == "text-delta" and e["delta"] == "w10 ":
                break  # the page reloads here
    async with session.get(f"{hub.http}/api/chat/c2/stream") as r:
        assert r.status == 200 and r.headers["x-vercel-ai-ui-message-stream"] == "v1"
        evs = await chunks(r)
    assert evs[0]["type"] == "start" and evs[-1] == "[DONE]" and evs[-2]["type"] == "finish"
    assert text_of(evs) == "".join(f"w{i} " for i in range(60))  # each word exactly once
    seen = [e for e in seen if not (isinstance(e, str) and e.startswith(":"))]
    assert evs[: len(seen)] == seen  # the replay starts with what the first response showed


async def test_stop_keeps_the_partial_and_resume_then_answers_204(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "paced")
    async with await send(session, hub, "c3", "go", n=100_000, delay=0.005) as r:
        async for e in events(r):
            if isinstance(e, dict) and e.get("delta") == "w5 ":
                break
        async with session.post(f"{hub.http}/api/chat/c3/stop") as s:
            assert s.status == 200
            body = await s.json()
        assert body["status"] == "cancelled"  # the stop returns once the partial is saved
        assert body["stream"] in aisdk_gens.CANCELLED  # the generator got its CancelledError
        rest = await chunks(r)
    assert rest[-2] == {"type": "finish", "finishReason": "stop"} and rest[-1] == "[DONE]"
    async with session.get(f"{hub.http}/api/chat/c3/stream") as r:
        assert r.status == 204
    async with session.post(f"{hub.http}/api/chat/c3/stop") as r:
        assert r.status == 204
    async with session.get(f"{hub.http}/api/chat/c3/messages") as r:
        text = (await r.json())["messages"][1]["parts"][-1]["text"]
    assert text.startswith("w0 w1 w2 w3 w4 w5 ") and len(text.split()) < 100_000


async def test_generator_failures_end_with_a_safe_message(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "failing")
    async with await send(session, hub, "c4", "x") as r:
        evs = await chunks(r)
    assert text_of(evs) == "partial "
    assert evs[-2] == {"type": "error", "errorText": "the model failed"} and evs[-1] == "[DONE]"
    assert "hunter2" not in json.dumps(evs)
    async with await send(session, hub, "c4", "y", safe=True) as r:
        evs = await chunks(r)
    assert evs[-2] == {"type": "error", "errorText": "quota exceeded, try later"}


async def test_the_generator_gets_the_conversation_from_the_hubs_chat(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "echo_history")
    async with await send(session, hub, "c5", "first") as r:
        assert text_of(await chunks(r)) == "user:first"
    async with await send(session, hub, "c5", "second") as r:
        assert text_of(await chunks(r)) == "user:first | assistant:user:first | user:second"


async def test_a_plain_text_answer_is_wrapped_and_resumable(hub: Running, session) -> None:
    async with Producer(hub.ws_url, "chat/c6/0001") as p:
        for t in ["Hel", "lo"]:
            await p.append(t)
        await p.flush()
        async with session.get(f"{hub.http}/api/chat/c6/stream") as r:
            assert r.status == 200
            head = []
            async for e in events(r):
                if isinstance(e, dict):
                    head.append(e)
                if len(head) == 4:
                    break
            await p.append("!")
    assert head == [
        {"type": "start", "messageId": "msg-0001"},
        {"type": "text-start", "id": "text-0"},
        {"type": "text-delta", "id": "text-0", "delta": "Hel"},
        {"type": "text-delta", "id": "text-0", "delta": "lo"},
    ]
    async with session.get(f"{hub.http}/api/chat/c6/stream", params={"after": ""}) as r:
        evs = await chunks(r)  # the newest answer, ended: a full replay, no race with its end
    assert text_of(evs) == "Hello!" and evs[-3:] == [
        {"type": "text-end", "id": "text-0"},
        {"type": "finish", "finishReason": "stop"},
        "[DONE]",
    ]


async def test_keep_alive_comments_while_the_answer_is_idle(start_hub, session) -> None:
    hub = await start_hub(aisdk_keepalive_s=0.05)
    async with Producer(hub.ws_url, "chat/c7/0001") as p:
        await (await p.append("a"))
        async with session.get(f"{hub.http}/api/chat/c7/stream") as r:
            got = []
            async for e in events(r):
                got.append(e)
                if e == ": keep-alive":
                    break
    assert got[0] == ": stream-open" and {"type": "text-delta", "id": "text-0", "delta": "a"} in got


async def test_bad_requests_get_stable_codes(start_hub, session) -> None:
    hub = await start_hub()
    async with session.post(f"{hub.http}/api/chat", json={"id": "c8", "messages": []}) as r:
        assert r.status == 404 and (await r.json())["error"]["code"] == "no_generator"
    hub = await start_hub(generator=GEN + "paced")
    for body in [{"id": "c8"}, {"id": "bad id!", "messages": [user("x")]}, {"id": "c8", "messages": []}]:
        async with session.post(f"{hub.http}/api/chat", json=body) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "bad_request"
    async with session.get(f"{hub.http}/api/chat/bad!id/stream") as r:
        assert r.status == 400


async def test_auth_by_bearer_and_by_cookie(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "paced", jwt_secret="k" * 32, aisdk_cookie="rhub")
    tok = hub.hub.auth.mint(read=["chat/c9/*"], write=["chat/c9/*"])
    async with await send(session, hub, "c9", "x", n=1) as r:
        assert r.status == 401
    async with session.post(
        f"{hub.http}/api/chat",
        json={"id": "c9", "messages": [user("x")], "n": 1},
        headers={"Authorization": f"Bearer {tok}"},
    ) as r:
        assert r.status == 200 and text_of(await chunks(r)) == "w0 "
    async with session.get(f"{hub.http}/api/chat/c9/messages", headers={"Cookie": f"rhub={tok}"}) as r:
        assert r.status == 200 and len((await r.json())["messages"]) == 2
    async with session.get(f"{hub.http}/api/chat/other/messages", headers={"Cookie": f"rhub={tok}"}) as r:
        assert r.status == 200 and (await r.json())["messages"] == []  # only streams it may read
    await asyncio.sleep(0)


async def test_a_page_on_another_origin_may_call_the_endpoints(start_hub, session) -> None:
    hub = await start_hub(generator=GEN + "paced", aisdk_prefix="/ai")
    origin = {"Origin": "http://localhost:5173"}  # a Vite dev server
    pre = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    async with session.options(f"{hub.http}/ai", headers=pre) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == origin["Origin"]
        assert "Content-Type" in r.headers["Access-Control-Allow-Headers"]
    async with session.get(f"{hub.http}/ai/x/stream", headers=origin) as r:
        assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == origin["Origin"]
    async with session.get(f"{hub.http}/ai/x/stream", headers={"Origin": "https://evil.example"}) as r:
        assert r.status == 403  # an origin not allowed is refused before anything runs
    async with session.get(f"{hub.http}/api/chat/x/stream") as r:
        assert r.status == 404  # the prefix moved
