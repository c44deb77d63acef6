"""Stream an answer into the hub, the way an app's LLM loop would (the README's producer snippet).

    python examples/producer.py --stream chat/42/answer-1 "How do resumable streams work?"

``llm_tokens`` stands in for a model client: replace it with your provider's streaming call. Every
append returns once the hub has made the chunk durable; a dropped connection is retried with the same
sequence number, so a chunk is never written twice. Leaving the ``async with`` block closes the stream:
``done``, ``cancelled`` if a reader pressed Stop, or ``error`` if the block raised.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

from hub.client import Producer

ANSWER = (
    "A resumable stream keeps every chunk of the answer in a durable log. A reader that reconnects says "
    "which offset it already has and gets exactly the chunks it missed, then the live ones."
)


async def llm_tokens(prompt: str, delay_s: float) -> AsyncIterator[str]:
    for word in ANSWER.split(" "):
        await asyncio.sleep(delay_s)  # a model's pace, not a synchronisation
        yield word + " "


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt")
    ap.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    ap.add_argument("--stream", required=True)
    ap.add_argument("--token", default=os.environ.get("RHUB_TOKEN"), help="a JWT when auth is on")
    ap.add_argument("--delay", type=float, default=0.02, help="seconds between tokens")
    args = ap.parse_args()

    async with Producer(args.url, args.stream, token=args.token) as p:  # closes the stream on exit
        async for token in llm_tokens(args.prompt, args.delay):
            if p.cancelled:  # a reader pressed Stop
                break
            await p.append(token)  # pipelined: leaving the block waits until all are durable
    print(f"{args.stream}: {'cancelled' if p.cancelled else 'done'} after {p.appended} chunks", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
