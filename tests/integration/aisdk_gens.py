"""Generators for the AI SDK tests (``Config(generator="tests.integration.aisdk_gens:<name>")``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hub.producers.generator import ChatRequest, GeneratorError

CANCELLED: list[str] = []  # answers whose generator saw its CancelledError


async def paced(request: ChatRequest) -> AsyncIterator[str | dict[str, Any]]:
    """``body.n`` words after a reasoning part, ``body.delay`` seconds apart; ``body.hold`` waits on
    an event named by the answer before the last word (see ``HOLDS``)."""
    n, delay = int(request.body.get("n", 20)), float(request.body.get("delay", 0.0))
    yield {"type": "reasoning-start", "id": "r1"}
    yield {"type": "reasoning-delta", "id": "r1", "delta": "thinking"}
    yield {"type": "reasoning-end", "id": "r1"}
    try:
        for i in range(n):
            yield f"w{i} "
            if delay:
                await asyncio.sleep(delay)
    except asyncio.CancelledError:
        CANCELLED.append(request.answer)
        raise


async def failing(request: ChatRequest) -> AsyncIterator[str]:
    yield "partial "
    if request.body.get("safe"):
        raise GeneratorError("quota exceeded, try later")
    raise RuntimeError("secret internal detail: db password hunter2")


async def echo_history(request: ChatRequest) -> AsyncIterator[str]:
    yield " | ".join(f"{m.role}:{m.content}" for m in request.messages)
