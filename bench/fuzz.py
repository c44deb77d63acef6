"""Fuzz the running hub's WebSocket decoder and HTTP handlers with hostile input.

    python -m bench.fuzz --inputs 100000        # the long run (starts its own hub subprocess on 127.0.0.1)
    python -m bench.fuzz --quick                # 5,000 inputs

Inputs: random bytes and text, JSON of the wrong shape, every op with wrong field types, huge and
negative numbers, deeply nested arrays, unknown fields, oversized frames, permessage-deflate bombs, and
HTTP requests with garbage paths, headers, offsets and bodies. The hub must answer every one with a
stable error code (or success), never a 500 or a dropped connection where it could have answered, and
stay alive and correct for a well-behaved client throughout (checked every 500 inputs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import HubProcess, Progress
from hub.core.errors import STATUS

OPS = ["subscribe", "unsubscribe", "create", "append", "close", "cancel", "ping"]
FIELDS = [
    "stream",
    "from",
    "data",
    "id",
    "producer",
    "seq",
    "status",
    "error",
    "epoch",
    "coalesce_ms",
    "ttl",
    "labels",
    "create",
    "exist_ok",
    "coalesce_bytes",
    "t",
]
KNOWN_CODES = set(STATUS)


def _value(rng: random.Random, depth: int = 0) -> Any:
    k = rng.randrange(12 if depth < 3 else 8)
    if k == 0:
        return rng.choice([0, -1, 1, 2**53, 2**64, -(2**63), 10**30])
    if k == 1:
        return rng.choice([0.5, -0.0, 1e308, float("nan")]) if rng.random() < 0.5 else rng.random()
    if k == 2:
        return rng.choice(["", "a", "../../etc/passwd", "x" * 600, "\u0000", "now", "é" * 10, "\ud7ff"])
    if k == 3:
        return rng.choice([True, False, None])
    if k == 4:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
    if k == 5:
        return f"fuzz/{rng.randrange(5)}"
    if k in (6, 7):
        return rng.choice(["done", "error", "cancelled", "weird"])
    if k in (8, 9):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(FIELDS): _value(rng, depth + 1) for _ in range(rng.randrange(4))}


def ws_input(rng: random.Random) -> str | bytes:
    k = rng.randrange(10)
    if k == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
    if k == 1:
        return "".join(chr(rng.randrange(1, 0xD7FF)) for _ in range(rng.randrange(64)))
    if k == 2:
        depth = rng.choice([10, 100, 1000, 100_000])
        return "[" * depth + "]" * depth
    if k == 3:
        return json.dumps(_value(rng))
    msg: dict[str, Any] = {"op": rng.choice(OPS + ["", "SUBSCRIBE", "op"])}
    for _ in range(rng.randrange(5)):
        msg[rng.choice(FIELDS)] = _value(rng)
    if rng.random() < 0.5:
        msg["stream"] = f"fuzz/{rng.randrange(5)}"
    return json.dumps(msg, allow_nan=True)


def http_input(rng: random.Random) -> tuple[str, str, dict[str, str], bytes]:
    sid = rng.choice(["fuzz/0", "fuzz/1", "nope", "a%00b", "..%2F..%2Fetc%2Fpasswd", "x" * 700, "%FF%FE"])
    path = rng.choice(
        [
            f"/streams/{sid}",
            f"/streams/{sid}/sse",
            f"/streams/{sid}/close",
            f"/streams/{sid}/cancel",
            "/streams",
            "/admin/stats",
            f"/admin/streams/{sid}",
            "/metrics",
            "/ws",
            "/nope",
            "//",
            "/streams/",
        ]
    )
    q = rng.choice(
        [
            "",
            "?from=-1",
            "?from=abc",
            "?from=99999999999999999999",
            "?limit=-5",
            "?from=0&limit=1e9",
            "?create=1",
            "?from=1",
        ]
    )
    headers: dict[str, str] = {}
    if rng.random() < 0.4:
        headers["Producer-Id"] = rng.choice(["p", "", "x" * 300])
        headers["Producer-Seq"] = rng.choice(["0", "-1", "abc", "18446744073709551616", "1"])
    if rng.random() < 0.2:
        headers["Last-Event-ID"] = rng.choice(["5", "-1", "zz", "1" * 40])
    if rng.random() < 0.3:
        headers["Authorization"] = rng.choice(["Bearer x", "Basic Zm9v", "Bearer " + "a" * 5000])
    ct = rng.choice(["application/json", "text/plain", "application/octet-stream"])
    headers["Content-Type"] = ct
    body = ws_input(rng)
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    return rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]), path + q, headers, raw


@dataclass
class Tally:
    inputs: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    checks: int = 0


async def _healthy(session: aiohttp.ClientSession, base: str, ws_url: str, n: int) -> None:
    """A well-behaved client still gets exactly what it wrote."""
    sid = f"health/{n}"
    async with session.post(f"{base}/streams/{sid}?create=1", json={"data": ["ok", str(n)]}) as r:
        assert r.status == 200, await r.text()
    async with session.ws_connect(ws_url) as ws:
        await ws.send_json({"op": "subscribe", "stream": sid})
        while True:
            f = await ws.receive_json(timeout=10)
            if f["op"] == "chunks":
                assert f["data"] == ["ok", str(n)], f
                return


async def fuzz(base: str, n: int, seed: int, progress: bool = False) -> Tally:
    rng = random.Random(seed)
    t = Tally()
    ws_url = base.replace("http://", "ws://") + "/ws"
    bar = Progress("fuzz inputs", n) if progress else None
    async with aiohttp.ClientSession() as session:
        for sid in ("fuzz/0", "fuzz/1"):
            async with session.put(f"{base}/streams/{sid}"):
                pass
        ws = await session.ws_connect(ws_url)
        for i in range(n):
            t.inputs += 1
            if rng.random() < 0.6:
                frame = ws_input(rng)
                if ws.closed:
                    ws = await session.ws_connect(ws_url)
                if isinstance(frame, bytes):
                    await ws.send_bytes(frame)
                else:
                    await ws.send_str(frame)
                await ws.send_str('{"op":"ping","t":1}')
                # everything before our pong is a reply to the fuzz frame (or chunks of a subscription)
                while True:
                    m = await ws.receive(timeout=10)
                    if m.type != aiohttp.WSMsgType.TEXT:
                        t.unexpected.append(f"ws closed ({m.type.name} {ws.close_code}) after {frame[:80]!r}")
                        break
                    f = json.loads(m.data)
                    if f["op"] == "pong":
                        break
                    if f["op"] == "error":
                        t.codes[f["code"]] += 1
                        if f["code"] not in KNOWN_CODES:
                            t.unexpected.append(f"unknown code {f['code']}")
            else:
                method, path, headers, body = http_input(rng)
                try:
                    async with session.request(method, base + path, headers=headers, data=body) as r:
                        if r.status >= 500:
                            t.unexpected.append(f"{method} {path} -> {r.status} {(await r.text())[:200]}")
                        elif r.status >= 400 and r.content_type == "application/json" and method != "HEAD":
                            code = (await r.json())["error"]["code"]
                            t.codes[code] += 1
                            if code not in KNOWN_CODES:
                                t.unexpected.append(f"unknown code {code}")
                        else:
                            t.codes[f"http_{r.status}"] += 1
                            if path.endswith("/sse") and r.status == 200:
                                r.close()
                except aiohttp.ClientError as e:
                    t.unexpected.append(f"{method} {path}: {e!r}")
            if i % 500 == 499:
                await _healthy(session, base, ws_url, i)
                t.checks += 1
            if bar is not None:
                bar.update(i + 1)
        await ws.close()
        await _healthy(session, base, ws_url, n)
        t.checks += 1
    if bar is not None:
        bar.close()
    return t


async def bombs(base: str) -> list[str]:
    """Oversized frames and a permessage-deflate bomb: refused with 1009, the hub stays up."""
    problems = []
    ws_url = base.replace("http://", "ws://") + "/ws"
    async with aiohttp.ClientSession() as s:
        for compress in (0, 15):
            ws = await s.ws_connect(ws_url, compress=compress, max_msg_size=0)
            try:
                await ws.send_str('{"op":"append","stream":"fuzz/0","data":"' + "0" * (64 << 20) + '"}')
            except ConnectionError:
                pass  # the hub hung up while we were still sending: refused, as it should be
            else:
                m = await ws.receive(timeout=30)
                if m.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) or ws.close_code != 1009:
                    problems.append(f"64 MiB frame (compress={compress}) got {m.type.name} {ws.close_code}")
            await ws.close()
        await _healthy(s, base, ws_url, -1)
    return problems


async def _main(n: int, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="rhub-fuzz-") as tmp:
        async with HubProcess(Path(tmp) / "data", log=Path(tmp) / "hub.log") as hub:
            t0 = time.perf_counter()
            t = await fuzz(hub.url, n, seed, progress=True)
            problems = await bombs(hub.url)
            if hub.returncode is not None:
                problems.append(f"the hub exited with {hub.returncode}")
    dt = time.perf_counter() - t0
    print(f"{'code':<28}{'count':>8}")
    for code, c in t.codes.most_common():
        print(f"{code:<28}{c:>8}")
    for u in (t.unexpected + problems)[:20]:
        print("  UNEXPECTED", u)
    print(f"fuzz_inputs: {t.inputs}")
    print(f"fuzz_unexpected: {len(t.unexpected) + len(problems)}")
    print(f"fuzz_health_checks: {t.checks}")
    print(f"fuzz_seconds: {dt:.1f}")
    return 1 if t.unexpected or problems else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    sys.exit(asyncio.run(_main(5000 if a.quick else a.inputs, a.seed)))


if __name__ == "__main__":
    main()
