"""Print a stream as it is written, surviving disconnects (the README's subscriber snippet).

    python examples/subscriber.py --stream chat/42/answer-1           # from the start
    python examples/subscriber.py --stream chat/42/answer-1 --from 12 # resume: chunks 0..11 already seen
    python examples/subscriber.py --stream chat/42/answer-2 --wait 60 # start before the producer does

It reconnects with jittered backoff and resumes from the last offset it printed, so nothing is shown
twice or skipped; it ends with the stream's final status (``done``, ``error`` or ``cancelled``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from hub.client import Subscriber


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    ap.add_argument("--stream", required=True)
    ap.add_argument("--from", dest="from_", type=int, default=0, help="chunks already seen")
    ap.add_argument("--token", default=os.environ.get("RHUB_TOKEN"), help="a JWT when auth is on")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to wait for the stream to be created")
    args = ap.parse_args()

    sub = Subscriber(args.url, args.stream, from_=args.from_, token=args.token, wait_s=args.wait)
    async for chunk in sub:
        print(chunk.data, end="", flush=True)
    print(f"\n[{sub.status}{': ' + sub.error if sub.error else ''} at offset {sub.offset}]", flush=True)
    return 0 if sub.status == "done" else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
