"""A model API on 127.0.0.1 that speaks the streaming HTTP of OpenAI's chat completions and
Anthropic's messages, so the real ``openai`` / ``anthropic`` SDKs can be tested: only the model is
simulated. It streams reasoning, ``n`` words ``delay`` seconds apart and one tool call, and records
each request's messages and whether the client went away before the end (a cancelled upstream)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class FakeLLM:
    n: int = 5
    delay: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    dropped: asyncio.Event = field(default_factory=asyncio.Event)  # a client left mid-stream
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    async def start(self) -> FakeLLM:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.openai)
        app.router.add_post("/v1/messages", self.anthropic)
        self.server = TestServer(app, host="127.0.0.1", port=0)
        await self.server.start_server()
        return self

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def _stream(self, request: web.Request, events: list[str]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for i, e in enumerate(events):
                await resp.write(e.encode())
                if self.delay and i > 2:
                    await asyncio.sleep(self.delay)
        except (ConnectionError, asyncio.CancelledError):
            self.dropped.set()
            raise
        return resp

    async def openai(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        assert body["stream"] is True

        def ev(delta: dict[str, Any], finish: str | None = None) -> str:
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": body["model"],
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(chunk)}\n\n"

        events = [ev({"role": "assistant", "content": ""}), ev({"reasoning_content": "let me think"})]
        events += [ev({"content": f"w{i} "}) for i in range(self.n)]
        call = {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": ""},
        }
        events.append(ev({"tool_calls": [call]}))
        for part in ['{"city":', ' "Paris"}']:
            events.append(ev({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}))
        events += [ev({}, "tool_calls"), "data: [DONE]\n\n"]
        return await self._stream(request, events)

    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)

        def ev(kind: str, data: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

        usage = {"input_tokens": 1, "output_tokens": 1}
        msg = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": []}
        msg |= {"stop_reason": None, "stop_sequence": None, "usage": usage}
        events = [ev("message_start", {"message": msg})]
        events.append(
            ev(
                "content_block_start",
                {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
            )
        )
        events.append(
            ev(
                "content_block_delta",
                {"index": 0, "delta": {"type": "thinking_delta", "thinking": "let me think"}},
            )
        )
        events.append(ev("content_block_stop", {"index": 0}))
        events.append(ev("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}))
        events += [
            ev("content_block_delta", {"index": 1, "delta": {"type": "text_delta", "text": f"w{i} "}})
            for i in range(self.n)
        ]
        events.append(ev("content_block_stop", {"index": 1}))
        tool = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
        events.append(ev("content_block_start", {"index": 2, "content_block": tool}))
        for part in ['{"city":', ' "Paris"}']:
            events.append(
                ev(
                    "content_block_delta",
                    {"index": 2, "delta": {"type": "input_json_delta", "partial_json": part}},
                )
            )
        events.append(ev("content_block_stop", {"index": 2}))
        events.append(
            ev(
                "message_delta",
                {"delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 9}},
            )
        )
        events.append(ev("message_stop", {}))
        return await self._stream(request, events)
