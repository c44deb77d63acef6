"""Pipe a simulated LLM into a stream through the real producer API: no API key needed.

    python -m hub.producers.simulated --stream demo/1 "How do resumable streams work?"

Then watch it from anywhere, e.g. ``curl -N http://127.0.0.1:8765/streams/demo/1/sse`` or the demo
page; kill the watcher and start it again: it resumes where it stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from hub.client import Producer
from hub.producers.llm_sim import stream_tokens


async def run_answer(
    url: str,
    stream: str,
    prompt: str,
    *,
    token: str | None = None,
    tokens_per_s: float = 70.0,
    labels: dict[str, str] | None = None,
    echo: bool = False,
) -> tuple[str, str]:
    """Stream one simulated answer; stops early if a reader cancels. Returns (status, text)."""
    text: list[str] = []
    async with Producer(url, stream, token=token, labels=labels) as p:
        async for tok in stream_tokens(prompt, tokens_per_s):
            if p.cancelled:
                break
            await p.append(tok)
            text.append(tok)
            if echo:
                sys.stdout.write(tok)
                sys.stdout.flush()
        status = "cancelled" if p.cancelled else "done"
    return status, "".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", nargs="?", default="Explain how resumable streams survive a page reload.")
    ap.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    ap.add_argument("--stream", default="demo/1")
    ap.add_argument("--token")
    ap.add_argument("--rate", type=float, default=70.0, help="tokens per second (default 70)")
    a = ap.parse_args()
    status, _ = asyncio.run(
        run_answer(a.url, a.stream, a.prompt, token=a.token, tokens_per_s=a.rate, echo=True)
    )
    print(f"\n[{a.stream}: {status}]")


if __name__ == "__main__":
    main()
