"""The simulated model as a generator (``serve --generator hub.producers.sim_generator:answer``):
the AI SDK endpoints work with no model and no key. ``body.rate`` sets tokens per second (1-1000)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hub.producers.generator import ChatRequest
from hub.producers.llm_sim import stream_tokens


async def answer(request: ChatRequest) -> AsyncIterator[str]:
    rate = min(max(float(request.body.get("rate", 70.0)), 1.0), 1000.0)
    async for tok in stream_tokens(request.messages[-1].content, rate):
        yield tok
