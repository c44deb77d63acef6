"""The openai / anthropic adapters with the real SDKs against a local model API (tests/integration/
fake_llm.py), and the built-in OpenAI-compatible generator: text, reasoning, tool calls, Stop."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from hub.client import Producer
from hub.producers.adapters import anthropic_chunks, openai_chunks, pipe
from tests.integration.conftest import Running
from tests.integration.fake_llm import FakeLLM
from tests.integration.test_aisdk_http import chunks, events, text_of, user

EXPECTED_TOOL = {
    "type": "tool-input-available",
    "toolCallId": None,
    "toolName": "weather",
    "input": {"city": "Paris"},
}


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    f = await FakeLLM().start()
    yield f
    await f.close()


def stored(hub: Running, sid: str) -> list[dict[str, Any]]:
    return [json.loads(c) for c in hub.hub.store.get(sid).read(0, 10_000)]


def check(chs: list[dict[str, Any]], n: int, call_id: str) -> None:
    types = [c["type"] for c in chs]
    assert types[:4] == ["reasoning-start", "reasoning-delta", "reasoning-end", "text-start"]
    assert chs[1]["delta"] == "let me think"
    assert text_of(chs) == "".join(f"w{i} " for i in range(n))
    assert "tool-input-start" in types and types.count("tool-input-delta") == 2
    assert chs[-1] == {**EXPECTED_TOOL, "toolCallId": call_id}


async def test_openai_sdk_stream_piped_into_an_answer(hub: Running, llm: FakeLLM) -> None:
    client = openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key="test-key")
    stream = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async with Producer(hub.ws_url, "chat/o1/a", labels={"format": "ui"}) as p:
        assert await pipe(p, openai_chunks(stream), stream) == "done"
    chs = stored(hub, "chat/o1/a")
    assert chs[0] == {"type": "start", "messageId": "msg-a"}
    check(chs[1:], 5, "call_1")
    await client.close()


async def test_anthropic_sdk_stream_piped_into_an_answer(hub: Running, llm: FakeLLM) -> None:
    client = anthropic.AsyncAnthropic(base_url=llm.url, api_key="test-key")
    stream = await client.messages.create(
        model="m", max_tokens=100, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async with Producer(hub.ws_url, "chat/a1/a", labels={"format": "ui"}) as p:
        assert await pipe(p, anthropic_chunks(stream), stream) == "done"
    check(stored(hub, "chat/a1/a")[1:], 5, "toolu_1")
    await client.close()


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
async def test_stop_cancels_the_upstream_call(hub: Running, llm: FakeLLM, session, sdk: str) -> None:
    llm.n, llm.delay = 100_000, 0.002
    if sdk == "openai":
        oc = openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key="k")
        stream: Any = await oc.chat.completions.create(model="m", messages=[], stream=True)
        ui = openai_chunks(stream)
    else:
        ac = anthropic.AsyncAnthropic(base_url=llm.url, api_key="k")
        stream = await ac.messages.create(model="m", max_tokens=9, messages=[], stream=True)
        ui = anthropic_chunks(stream)
    sid = f"chat/s{sdk}/a"

    async def backend() -> str:  # the app's own producer, as it would run beside the hub
        async with Producer(hub.ws_url, sid, labels={"format": "ui"}) as p:
            return await pipe(p, ui, stream)

    piping = asyncio.create_task(backend())
    deadline = time.monotonic() + 10
    while not hub.hub.store.exists(sid) and time.monotonic() < deadline:  # the backend has started
        await asyncio.sleep(0.01)
    async with session.get(f"{hub.http}/api/chat/s{sdk}/stream") as r:
        assert r.status == 200
        async for e in events(r):
            if isinstance(e, dict) and e.get("delta") == "w20 ":
                break
    async with session.post(f"{hub.http}/api/chat/s{sdk}/stop") as r:
        assert (await r.json())["status"] == "cancelled"  # the backend closed it within the wait
    try:
        assert await asyncio.wait_for(piping, 10) == "cancelled"
    finally:
        piping.cancel()
    await asyncio.wait_for(llm.dropped.wait(), 10)  # the model API saw its client go
    s = hub.hub.store.get(sid)
    assert s.status == "cancelled" and 20 < s.next_offset < 100_000


async def test_the_built_in_openai_compatible_generator(start_hub, llm: FakeLLM, session) -> None:
    hub = await start_hub(llm_base_url=llm.url + "/v1", llm_model="tiny")
    async with session.post(
        f"{hub.http}/api/chat", json={"id": "g1", "messages": [user("hello")], "trigger": "submit-message"}
    ) as r:
        evs = await chunks(r)
    assert text_of(evs) == "w0 w1 w2 w3 w4 "
    assert {"type": "reasoning-delta", "id": "reasoning-1", "delta": "let me think"} in evs
    assert llm.requests[-1]["model"] == "tiny"
    assert llm.requests[-1]["messages"] == [{"role": "user", "content": "hello"}]
    async with session.post(
        f"{hub.http}/api/chat", json={"id": "g1", "messages": [user("again")], "trigger": "submit-message"}
    ) as r:
        await chunks(r)
    assert [m["role"] for m in llm.requests[-1]["messages"]] == ["user", "assistant", "user"]
    assert llm.requests[-1]["messages"][1]["content"] == "w0 w1 w2 w3 w4 "


async def test_the_built_in_generator_stop_drops_the_model_call(start_hub, llm: FakeLLM, session) -> None:
    llm.n, llm.delay = 100_000, 0.002
    hub = await start_hub(llm_base_url=llm.url + "/v1", llm_model="tiny")
    body = {"id": "g2", "messages": [user("go")], "trigger": "submit-message"}
    async with session.post(f"{hub.http}/api/chat", json=body) as r:
        async for e in events(r):
            if isinstance(e, dict) and e.get("delta") == "w10 ":
                break
        async with session.post(f"{hub.http}/api/chat/g2/stop") as s:
            assert (await s.json())["status"] == "cancelled"
    await asyncio.wait_for(llm.dropped.wait(), 10)


async def test_an_api_error_ends_the_answer_without_its_body(start_hub, session) -> None:
    hub = await start_hub(llm_base_url="http://127.0.0.1:9/v1", llm_model="tiny")  # nothing listens
    async with session.post(
        f"{hub.http}/api/chat", json={"id": "g3", "messages": [user("x")], "trigger": "submit-message"}
    ) as r:
        evs = await chunks(r)
    assert evs[-2] == {"type": "error", "errorText": "the model failed"}
