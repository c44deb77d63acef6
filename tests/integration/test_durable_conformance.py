"""The official Durable Streams suites, run against the real hub.

* the conformance suite (tests/conformance/run.py): every test that is not skipped must pass;
* the official TypeScript client reads a stream that our Python producer writes over WebSocket,
  across a hub restart, and sees every chunk exactly once.

Both need node + npm and the pinned packages (``npm ci`` in tests/conformance; run.py installs them
if they are missing).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web

from hub.app import make_app
from hub.client import Producer
from hub.core.config import Config

CONFORMANCE = Path(__file__).resolve().parent.parent / "conformance"
ROOT = CONFORMANCE.parent.parent


def _need_node() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are required for the Durable Streams suites (see tests/conformance)")
    if not (CONFORMANCE / "node_modules" / "@durable-streams" / "client").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CONFORMANCE, check=True)


@pytest.mark.parametrize("store", ["file", "redis"])
def test_official_conformance_suite_passes(store: str) -> None:
    """On the file store, and on the Redis engine (run.py starts its own redis-server)."""
    _need_node()
    proc = subprocess.run(
        [sys.executable, str(CONFORMANCE / "run.py"), *(["--store", "redis"] if store == "redis" else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = proc.stdout + proc.stderr
    counts = {k: int(v) for k, v in re.findall(r"^conformance_(\w+): (\d+)$", out, re.M)}
    tail = "\n".join(out.splitlines()[-40:])
    assert proc.returncode == 0, f"conformance run failed (exit {proc.returncode}):\n{tail}"
    assert counts.get("failed") == 0 and counts.get("passed", 0) > 300, tail


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _start(data_dir: Path, port: int) -> web.AppRunner:
    app = make_app(Config(host="127.0.0.1", port=port, data_dir=data_dir, admin_token="admin"))
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_typescript_client_reads_python_producer_across_restart(tmp_path: Path, live: str) -> None:
    _need_node()
    port = _free_port()
    data = tmp_path / "data"
    sid = f"interop/{live}/answer"
    trace = tmp_path / "reader-trace.txt"  # every response the reader got, for a failure's report
    runner = await _start(data, port)
    ws = f"ws://127.0.0.1:{port}/ws"
    tokens = [f"<tok {i:03d} ü>" for i in range(120)]
    producer = Producer(ws, sid, backoff=(0.02, 0.2), max_attempts=200)
    await producer.__aenter__()  # creates the stream (no content type: served as text/plain)
    reader = await asyncio.create_subprocess_exec(
        "node",
        str(CONFORMANCE / "interop_reader.mjs"),
        f"http://127.0.0.1:{port}/v1/stream/{sid}",
        live,
        cwd=CONFORMANCE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_NO_WARNINGS": "1", "DS_READER_TRACE": str(trace)},
    )
    try:
        for t in tokens[:60]:
            await producer.append(t)
        await asyncio.sleep(0.3)  # the reader is caught up and waiting live
        appending = asyncio.create_task(_append_all(producer, tokens[60:]))
        await asyncio.sleep(0.05)
        await runner.cleanup()  # restart while appends are in flight
        runner = await _start(data, port)
        await asyncio.wait_for(appending, 60)
        await producer.close("done")
        out, err = await asyncio.wait_for(reader.communicate(), 60)
    finally:
        await producer.aclose()
        if reader.returncode is None:
            reader.kill()
            await reader.wait()
        await runner.cleanup()
    lines = out.decode().splitlines()
    assert lines and lines[-1] == "END", f"reader did not finish: {lines[-3:]} {err.decode()[-2000:]}"
    got = "".join(json.loads(line)["text"] for line in lines[:-1])
    assert got == "".join(tokens), f"the reader saw a chunk twice, lost one, or out of order (see {trace})"
    offsets = [json.loads(line)["offset"] for line in lines[:-1]]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


async def _append_all(producer: Producer, tokens: list[str]) -> None:
    for t in tokens:
        await producer.append(t)
        await asyncio.sleep(0.002)


@pytest.mark.parametrize("live", ["long-poll", "sse"])
async def test_typescript_client_reads_a_closed_stream_to_its_last_chunk(tmp_path: Path, live: str) -> None:
    """The deterministic form of the restart race above: a reader that starts after the close gets
    the chunks and Stream-Closed in one response, and the official client settles ``closed`` while
    its subscriber still reads that response's body; the reader must end on the chunk that says
    streamClosed, never on ``closed``, or it drops the last response unprinted."""
    _need_node()
    port = _free_port()
    sid = f"interop/{live}/closed"
    runner = await _start(tmp_path / "data", port)
    tokens = [f"<tok {i:03d} ü>" for i in range(40)]
    try:
        async with Producer(f"ws://127.0.0.1:{port}/ws", sid) as producer:
            for t in tokens:
                await producer.append(t)
            await producer.close("done")
        reader = await asyncio.create_subprocess_exec(
            "node",
            str(CONFORMANCE / "interop_reader.mjs"),
            f"http://127.0.0.1:{port}/v1/stream/{sid}",
            live,
            cwd=CONFORMANCE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_NO_WARNINGS": "1"},
        )
        out, err = await asyncio.wait_for(reader.communicate(), 60)
    finally:
        await runner.cleanup()
    lines = out.decode().splitlines()
    assert lines and lines[-1] == "END", f"reader did not finish: {lines[-3:]} {err.decode()[-2000:]}"
    assert "".join(json.loads(line)["text"] for line in lines[:-1]) == "".join(tokens)
