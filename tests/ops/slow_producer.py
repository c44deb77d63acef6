"""A producer process for the lease tests: creates a stream, appends one chunk every ``--every`` seconds
until killed, printing ``acked N`` after each durable append (so the test knows what must survive)."""

from __future__ import annotations

import argparse
import asyncio

from hub.client import Producer


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("stream")
    ap.add_argument("--every", type=float, default=0.05)
    ap.add_argument("--token")
    args = ap.parse_args()
    async with Producer(args.url, args.stream, token=args.token, max_attempts=3) as p:
        n = 0
        while True:
            await (await p.append(f"c{n} "))  # append is pipelined: its future resolves once durable
            n += 1
            print(f"acked {n}", flush=True)
            await asyncio.sleep(args.every)  # a model's pace


if __name__ == "__main__":
    asyncio.run(main())
