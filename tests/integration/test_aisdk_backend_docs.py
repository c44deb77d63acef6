"""docs/python-backend.md as written: its app.py and answers.py, its hub and app commands and its curl
commands, with the real openai SDK against the local model API (fake_llm.py) standing in for Ollama."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from bench.common import ServerProcess, free_port
from tests.integration.fake_llm import FakeLLM

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "python-backend.md"
OLLAMA = "http://127.0.0.1:11434/v1"


def files() -> dict[str, str]:
    return dict(re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", DOC.read_text(), re.S))


def sh_blocks() -> list[list[str]]:
    return [
        [ln for ln in b.splitlines() if ln.strip()]
        for b in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    ]


def split_env(line: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(line)
    env = {}
    while "=" in words[0] and not words[0].startswith("-"):
        k, _, v = words.pop(0).partition("=")
        env[k] = v
    return env, words


async def curl(cmd: str, ports: dict[str, str]) -> None:
    line, _, expect = cmd.partition("  # expect: ")
    for old, new in ports.items():
        line = line.replace(old, new)
    out = await asyncio.to_thread(
        subprocess.run, ["bash", "-c", line], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, (line, out.stderr)
    assert expect in out.stdout, (line, out.stdout[-500:])


async def test_the_guide_runs_as_written(tmp_path: Path) -> None:
    for name, code in files().items():
        (tmp_path / name).write_text(code)
    assert set(files()) == {"app.py", "answers.py"}
    llm = await FakeLLM(n=30).start()
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}", "OPENAI_API_KEY": "test"}
    procs: list[ServerProcess] = []
    try:
        first, second = sh_blocks()
        # section 1: the hub, the app, then curl
        hub_port, app_port = free_port(), free_port()
        _, hub_argv = split_env(first[0])
        hub_argv[hub_argv.index("--port") + 1] = str(hub_port)
        hub_argv[hub_argv.index("--data-dir") + 1] = str(tmp_path / "h1")
        hub = ServerProcess([sys.executable, *hub_argv[1:]], hub_port, env=env, log=tmp_path / "hub.log")
        procs.append(hub)
        await hub.start()
        app_env, app_argv = split_env(first[1])
        assert app_argv == ["python", "app.py"] and app_env["LLM_BASE_URL"] == OLLAMA
        app_env |= {
            "LLM_BASE_URL": llm.url + "/v1",
            "PORT": str(app_port),
            "HUB_WS": f"ws://127.0.0.1:{hub_port}/ws",
        }
        app = ServerProcess(
            [sys.executable, str(tmp_path / "app.py")],
            app_port,
            env={**env, **app_env},
            log=tmp_path / "app.log",
        )
        procs.append(app)
        await start_app(app)
        ports = {"8000": str(app_port), "8765": str(hub_port)}
        for cmd in first[2:]:
            await curl(cmd, ports)
        assert llm.requests[-1]["model"] == "llama3.2"

        # section 2: the hub runs answers.py
        gen_port = free_port()
        gen_env, gen_argv = split_env(second[0])
        gen_env["LLM_BASE_URL"] = llm.url + "/v1"
        gen_argv[gen_argv.index("--port") + 1] = str(gen_port)
        gen_argv[gen_argv.index("--data-dir") + 1] = str(tmp_path / "h2")
        gen = ServerProcess(
            [sys.executable, *gen_argv[1:]], gen_port, env={**env, **gen_env}, log=tmp_path / "gen.log"
        )
        procs.append(gen)
        await gen.start()
        for cmd in second[1:]:
            await curl(cmd, {"8766": str(gen_port)})
        assert llm.requests[-1]["messages"] == [{"role": "user", "content": "hi"}]
    finally:
        for p in procs:
            await p.stop()
        await llm.close()


async def start_app(app: ServerProcess) -> None:
    """The guide's app has no /healthz: it is ready once /ask answers at all (405 to a GET)."""
    assert app.log is not None
    with open(app.log, "ab") as log:  # the child keeps its own copy of the descriptor
        app.proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; we poll below
            app.argv, cwd=ROOT, env=app.env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(f"{app.url}/ask") as r:
                    if r.status == 405:
                        return
            assert app.proc.poll() is None, app.log.read_text()[-2000:]
            await asyncio.sleep(0.02)
    raise AssertionError("the guide's app did not start")
