"""A simulated LLM: realistic answer text cut into BPE-like tokens (1-8 characters), no API key.

Answers are assembled from a few hundred sentence fragments about software, with markdown
structure (headings, lists, code) the way chat models write, and then cut the way a tokenizer
does: words with their leading space, long words split into pieces, punctuation alone. The
``tokens_per_s`` pacing in ``stream_tokens`` mimics a model streaming at 50-100 tokens/s.
"""

from __future__ import annotations

import asyncio
import random
import re
import zlib
from collections.abc import AsyncIterator, Iterator

_SUBJECTS = [
    "the request handler",
    "this function",
    "the cache layer",
    "your database index",
    "the event loop",
    "a background worker",
    "the retry policy",
    "the connection pool",
    "this query",
    "the parser",
    "the WebSocket server",
    "a message queue",
    "the load balancer",
    "the config file",
    "the test suite",
    "the deployment script",
    "a Python generator",
    "the API gateway",
    "the storage engine",
    "the scheduler",
]
_VERBS = [
    "reads",
    "writes",
    "validates",
    "caches",
    "retries",
    "streams",
    "serialises",
    "compresses",
    "batches",
    "indexes",
    "rejects",
    "forwards",
    "logs",
    "measures",
    "throttles",
    "flushes",
    "replays",
    "acknowledges",
]
_OBJECTS = [
    "every incoming message",
    "the user's session",
    "a small JSON payload",
    "the last known offset",
    "each chunk of the response",
    "the authentication token",
    "stale entries",
    "the whole file at once",
    "only the changed rows",
    "a fixed number of items",
    "the results in order",
    "errors with a clear code",
]
_CLAUSES = [
    "so that a slow client never blocks the others",
    "which keeps latency low under load",
    "because the network can drop at any moment",
    "as long as the offsets stay monotonic",
    "before it acknowledges the write",
    "without copying the data twice",
    "when the buffer is full",
    "unless the timeout expires first",
    "and then it switches to live updates",
    "in a single transaction",
]
_OPENERS = [
    "Great question!",
    "Sure, here is how it works.",
    "Let's break this down step by step.",
    "Short answer: yes, with one caveat.",
    "Here is a practical approach.",
    "There are a few options.",
]
_HEADINGS = ["Overview", "How it works", "Example", "Things to watch out for", "Summary", "Next steps"]
_CODE = [
    "async def handler(request):\n    data = await request.json()\n    return web.json_response(data)\n",
    "for offset, chunk in enumerate(chunks, start=first):\n    send(offset, chunk)\n",
    "def backoff(attempt):\n    return min(30, 0.5 * 2 ** attempt) * random.random()\n",
    "const ws = new WebSocket(url);\nws.onmessage = (e) => render(JSON.parse(e.data));\n",
]
_WORD = re.compile(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]|\s+")


def _sentence(rng: random.Random) -> str:
    s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    if rng.random() < 0.7:
        s += f", {rng.choice(_CLAUSES)}"
    return s[0].upper() + s[1:] + "."


def answer(rng: random.Random, paragraphs: int = 4) -> str:
    """One markdown answer of a few paragraphs, a list and maybe a code block."""
    parts = [rng.choice(_OPENERS)]
    for i in range(paragraphs):
        if i and rng.random() < 0.5:
            parts.append(f"\n\n## {rng.choice(_HEADINGS)}\n")
        parts.append("\n\n" + " ".join(_sentence(rng) for _ in range(rng.randint(2, 4))))
        if rng.random() < 0.3:
            parts.append("\n\n" + "\n".join(f"- {_sentence(rng)}" for _ in range(rng.randint(2, 4))))
        if rng.random() < 0.25:
            parts.append(f"\n\n```python\n{rng.choice(_CODE)}```")
    return "".join(parts)


def tokenize(text: str) -> Iterator[str]:
    """Cut text like a BPE tokenizer would, roughly: pieces of 1-8 characters."""
    for m in _WORD.finditer(text):
        w = m.group()
        while len(w) > 8:
            cut = 4 + (len(w) % 4)
            yield w[:cut]
            w = w[cut:]
        yield w


def tokens(seed: int | None = None, paragraphs: int = 4) -> list[str]:
    return list(tokenize(answer(random.Random(seed), paragraphs)))


def seed_for(prompt: str) -> int:
    """A stable seed (the same in every process, unlike ``hash``): one prompt, one answer."""
    return zlib.crc32(prompt.encode())


def answer_tokens(prompt: str) -> list[str]:
    rng = random.Random(seed_for(prompt))
    return list(tokenize(answer(rng, paragraphs=rng.randint(2, 5))))


async def stream_tokens(
    prompt: str, tokens_per_s: float = 70.0, seed: int | None = None
) -> AsyncIterator[str]:
    """Yield an answer to ``prompt`` token by token at a model-like pace.

    Paced against a clock, not by sleeping after each token, so the time the consumer spends on
    a token (an append waiting for durability) does not slow the model down.
    """
    rng = random.Random(seed if seed is not None else seed_for(prompt))
    loop = asyncio.get_running_loop()
    due = loop.time()
    for tok in tokenize(answer(rng, paragraphs=rng.randint(2, 5))):
        due += rng.uniform(0.5, 1.5) / tokens_per_s
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        yield tok
