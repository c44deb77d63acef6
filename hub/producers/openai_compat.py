"""The built-in generator: any OpenAI-compatible chat completions API (OpenAI, vLLM, Ollama,
llama.cpp server), streamed. ``serve --llm-base-url URL --llm-model NAME``; the key, if the API
wants one, from ``RHUB_LLM_API_KEY`` (or ``OPENAI_API_KEY``), never a flag.

It POSTs ``{base_url}/chat/completions`` with ``stream: true`` and the conversation from the hub's
chat, reads the SSE ``data:`` lines and yields text (``delta.content``) and reasoning
(``delta.reasoning_content`` / ``delta.reasoning``, as vLLM, DeepSeek and Ollama send it). A Stop
cancels the task, which closes the HTTP response: the upstream generation is dropped, not drained.
An HTTP error ends the answer ``error`` with the status only (no upstream body is shown to users).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec

from hub.core.config import Config
from hub.producers.generator import ChatRequest, Generator, GeneratorError


def api_key() -> str | None:
    return os.environ.get("RHUB_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")


def generator(base_url: str, model: str, key: str | None = None, timeout_s: float = 300.0) -> Generator:
    url = base_url.rstrip("/") + "/chat/completions"

    async def answer(request: ChatRequest) -> AsyncIterator[str | dict[str, Any]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {
            "model": model,
            "stream": True,
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        }
        reasoning_open = False
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_read=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as s,
            s.post(url, json=body, headers=headers) as r,
        ):
            if r.status != 200:
                raise GeneratorError(f"the model API answered HTTP {r.status}")
            async for raw in r.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                try:
                    ev = msgspec.json.decode(data)
                    delta = (ev.get("choices") or [{}])[0].get("delta") or {}
                except (msgspec.DecodeError, AttributeError, IndexError):
                    continue
                think = delta.get("reasoning_content") or delta.get("reasoning")
                if isinstance(think, str) and think:
                    if not reasoning_open:
                        reasoning_open = True
                        yield {"type": "reasoning-start", "id": "reasoning-1"}
                    yield {"type": "reasoning-delta", "id": "reasoning-1", "delta": think}
                text = delta.get("content")
                if isinstance(text, str) and text:
                    if reasoning_open:
                        reasoning_open = False
                        yield {"type": "reasoning-end", "id": "reasoning-1"}
                    yield text
        if reasoning_open:
            yield {"type": "reasoning-end", "id": "reasoning-1"}

    return answer


def from_config(config: Config) -> Generator:
    if not config.llm_model:
        raise ValueError("--llm-base-url needs --llm-model")
    assert config.llm_base_url is not None
    return generator(config.llm_base_url, config.llm_model, api_key())
