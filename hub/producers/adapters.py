"""Pipe an ``openai`` or ``anthropic`` SDK stream into an answer, as AI SDK UI message chunks.

    stream = await openai.AsyncOpenAI().chat.completions.create(model=..., messages=..., stream=True)
    async for chunk in openai_chunks(stream):      # inside a generator (hub.producers.generator)
        yield chunk

    async with Producer(url, "chat/1/a", labels={"format": "ui"}) as p:   # or from your own backend
        await pipe(p, openai_chunks(stream), stream)

Text, reasoning (OpenAI-compatible ``reasoning_content`` / ``reasoning``, Anthropic ``thinking``)
and tool calls (``tool-input-start`` / ``-delta`` / ``-available``) are mapped; both SDKs are
optional extras (``pip install resumable-hub[openai]`` / ``[anthropic]``) and only their stream
objects are touched, never imported here. Stop: ``pipe`` closes the SDK stream as soon as the
producer is cancelled (the HTTP response to the model API is dropped), and the adapters close it
when the consuming generator is cancelled, so the model stops generating either way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from hub.client import Producer
from hub.protocols.aisdk.chunks import message_id

Chunk = dict[str, Any]


def _get(obj: Any, name: str) -> Any:
    v = getattr(obj, name, None)
    if v is None:
        extra = getattr(obj, "model_extra", None) or {}
        v = extra.get(name)
    return v


def _parse(args: str) -> Any:
    try:
        return json.loads(args) if args else {}
    except ValueError:
        return {"_raw": args}


class _Parts:
    """Opens and ends text / reasoning parts so that at most one of each kind is open."""

    def __init__(self) -> None:
        self.open: dict[str, str] = {}  # "text" | "reasoning" -> id
        self.n = 0

    def delta(self, kind: str, text: str) -> list[Chunk]:
        out = []
        other = "reasoning" if kind == "text" else "text"
        out += self.end(other)
        if kind not in self.open:
            self.n += 1
            self.open[kind] = f"{kind}-{self.n}"
            out.append({"type": f"{kind}-start", "id": self.open[kind]})
        out.append({"type": f"{kind}-delta", "id": self.open[kind], "delta": text})
        return out

    def end(self, kind: str | None = None) -> list[Chunk]:
        kinds = [kind] if kind else list(self.open)
        return [{"type": f"{k}-end", "id": self.open.pop(k)} for k in kinds if k in self.open]


async def openai_chunks(stream: Any) -> AsyncIterator[Chunk]:
    """UI chunks from an ``openai`` ``AsyncStream[ChatCompletionChunk]`` (``stream=True``)."""
    parts = _Parts()
    tools: dict[int, dict[str, str]] = {}  # index -> {id, name, args}
    try:
        async for ev in stream:
            for choice in ev.choices or []:
                d = choice.delta
                if d is None:
                    continue
                think = _get(d, "reasoning_content") or _get(d, "reasoning")
                if isinstance(think, str) and think:
                    for c in parts.delta("reasoning", think):
                        yield c
                if d.content:
                    for c in parts.delta("text", d.content):
                        yield c
                for tc in d.tool_calls or []:
                    t = tools.get(tc.index)
                    if t is None:
                        for c in parts.end():
                            yield c
                        name = (tc.function.name if tc.function else None) or "tool"
                        t = tools[tc.index] = {"id": tc.id or f"call-{tc.index}", "name": name, "args": ""}
                        yield {"type": "tool-input-start", "toolCallId": t["id"], "toolName": t["name"]}
                    args = tc.function.arguments if tc.function else None
                    if args:
                        t["args"] += args
                        yield {"type": "tool-input-delta", "toolCallId": t["id"], "inputTextDelta": args}
        for c in parts.end():
            yield c
        for t in tools.values():
            yield {
                "type": "tool-input-available",
                "toolCallId": t["id"],
                "toolName": t["name"],
                "input": _parse(t["args"]),
            }
    finally:
        with contextlib.suppress(Exception):
            await stream.close()  # a cancelled consumer drops the upstream call


async def anthropic_chunks(stream: Any) -> AsyncIterator[Chunk]:
    """UI chunks from an ``anthropic`` ``AsyncStream`` of raw events (``messages.create(stream=True)``)."""
    parts = _Parts()
    tools: dict[int, dict[str, str]] = {}
    try:
        async for ev in stream:
            kind = ev.type
            if kind == "content_block_start":
                block = ev.content_block
                if block.type == "tool_use":
                    for c in parts.end():
                        yield c
                    tools[ev.index] = {"id": block.id, "name": block.name, "args": ""}
                    yield {"type": "tool-input-start", "toolCallId": block.id, "toolName": block.name}
            elif kind == "content_block_delta":
                d = ev.delta
                if d.type == "text_delta":
                    for c in parts.delta("text", d.text):
                        yield c
                elif d.type == "thinking_delta":
                    for c in parts.delta("reasoning", d.thinking):
                        yield c
                elif d.type == "input_json_delta" and ev.index in tools:
                    tools[ev.index]["args"] += d.partial_json
                    yield {
                        "type": "tool-input-delta",
                        "toolCallId": tools[ev.index]["id"],
                        "inputTextDelta": d.partial_json,
                    }
            elif kind == "content_block_stop":
                t = tools.pop(ev.index, None)
                if t is not None:
                    yield {
                        "type": "tool-input-available",
                        "toolCallId": t["id"],
                        "toolName": t["name"],
                        "input": _parse(t["args"]),
                    }
                else:
                    for c in parts.end():
                        yield c
        for c in parts.end():
            yield c
    finally:
        with contextlib.suppress(Exception):
            await stream.close()


async def pipe(producer: Producer, chunks: AsyncIterator[Chunk], upstream: Any | None = None) -> str:
    """Write UI chunks to ``producer``'s answer (create it with ``labels={"format": "ui"}``), starting
    with ``start``; on Stop close ``upstream`` (the SDK stream) at once. Returns "done" or
    "cancelled"; leaving the producer's block then closes the answer with that status."""
    enc = msgspec.json.Encoder()
    await producer.append(enc.encode({"type": "start", "messageId": message_id(producer.stream)}).decode())
    try:
        async for c in chunks:
            if producer.cancelled:
                break
            await producer.append(enc.encode(c).decode())
    finally:
        if producer.cancelled and upstream is not None:
            with contextlib.suppress(Exception):
                await upstream.close()
        with contextlib.suppress(Exception):
            await chunks.aclose()  # type: ignore[attr-defined]
    return "cancelled" if producer.cancelled else "done"
