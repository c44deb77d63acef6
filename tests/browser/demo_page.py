"""Drive the demo chat page (hub/demo/static/index.html) by its DOM, with waits on page conditions."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Page

from hub.producers.llm_sim import answer_tokens

ANSWERS = ".msg.assistant"


def prompt_for(base: str, tokens: range = range(160, 260), invisible: bool = False) -> str:
    """A prompt whose simulated answer has a token count in ``tokens``, so a test knows how long
    the answer streams. The hub runs in this process and its model seeds the answer with
    ``seed_for(prompt)`` (hub/llm_sim.stream_tokens), the same in every process. The variants
    differ by a visible number, or by zero-width spaces (for screenshots)."""
    for i in range(5000):
        prompt = base + "\u200b" * i if invisible else f"{base} ({i})"
        if len(answer_tokens(prompt)) in tokens:
            return prompt
    raise AssertionError(f"no prompt gives an answer of {tokens} tokens: has hub/llm_sim changed?")


class DemoPage:
    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base

    async def open(self, chat: str, **params: Any) -> None:
        query = "&".join(f"{k}={v}" for k, v in {"chat": chat, **params}.items())
        await self.page.goto(f"{self.base}/?{query}")
        await self.page.wait_for_function("['idle', 'streaming'].includes(document.body.dataset.chatStatus)")

    async def ask(self, prompt: str) -> str:
        """Send a prompt; returns the new answer's stream id once the page shows it."""
        before = await self.page.locator(ANSWERS).count()
        await self.page.fill("#prompt", prompt)
        await self.page.click("#send")
        await self.page.wait_for_function(
            "n => document.querySelectorAll('.msg.assistant').length > n", arg=before
        )
        sid = await self.page.locator(ANSWERS).last.get_attribute("data-stream")
        assert sid
        return sid

    def sel(self, stream: str) -> str:
        return f"{ANSWERS}[data-stream={json.dumps(stream)}]"

    async def wait_offset(self, stream: str, n: int) -> None:
        await self.page.wait_for_function(
            "([sel, n]) => Number(document.querySelector(sel)?.dataset.offset) >= n",
            arg=[self.sel(stream), n],
        )

    async def wait_status(self, stream: str, *statuses: str, timeout: float = 30_000) -> None:
        await self.page.wait_for_function(
            "([sel, want]) => want.includes(document.querySelector(sel)?.dataset.status)",
            arg=[self.sel(stream), list(statuses)],
            timeout=timeout,
        )

    async def status(self, stream: str) -> str | None:
        return await self.page.get_attribute(self.sel(stream), "data-status")

    async def offset(self, stream: str) -> int:
        return int(await self.page.get_attribute(self.sel(stream), "data-offset") or 0)

    async def held(self, stream: str) -> int:
        """The client's offset for the stream (the DOM shows it one animation frame later)."""
        n: int = await self.page.evaluate("sid => window.demo.client.getStream(sid)?.offset ?? 0", stream)
        return n

    async def text(self, stream: str) -> str:
        """The answer exactly as rendered (textContent keeps every space and newline)."""
        return await self.page.locator(f"{self.sel(stream)} .msg-text").evaluate("e => e.textContent")

    async def prompt(self, stream: str) -> str:
        turn = self.page.locator(f"article.turn[data-stream={json.dumps(stream)}] .bubble")
        return await turn.evaluate("e => e.textContent")

    async def client_stats(self) -> dict[str, int]:
        stats: dict[str, int] = await self.page.evaluate("() => ({...window.demo.client.stats})")
        return stats

    async def transport(self) -> str:
        t: str = await self.page.evaluate("() => window.demo.client.transport")
        return t
