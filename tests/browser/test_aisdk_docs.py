"""docs/ai-sdk.md as written: its hub command starts the hub, its curl commands answer what the doc
says, and its App.tsx, bundled with the pinned ``ai`` / ``@ai-sdk/react`` and served from another
origin, chats with that hub in Chromium (reload mid-answer included). The two Vite scaffolding lines
(``npm create vite``, ``npm install``) are not run: they fetch a new project from the registry; the
bundle step stands in for them, with the same packages pinned by aisdk-fixture's lockfile."""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from bench.common import ServerProcess, free_port
from tests.browser.conftest import Pages

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ai-sdk.md"
FIXTURE = Path(__file__).parent / "aisdk-fixture"
NOT_RUN = {
    "npm create vite@latest my-chat -- --template react-ts",
    "cd my-chat && npm install ai @ai-sdk/react",
}


def sh_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S)
    return [ln for b in blocks for ln in b.splitlines() if ln.strip()]


def app_tsx() -> str:
    m = re.search(r"<!-- file: App.tsx -->\n```tsx\n(.*?)```", DOC.read_text(), re.S)
    assert m, "docs/ai-sdk.md lost its App.tsx block"
    return m.group(1)


async def test_the_guide_runs_as_written(tmp_path: Path, pages: Pages) -> None:
    lines = sh_lines()
    assert set(lines) >= NOT_RUN
    serve = [ln for ln in lines if ln.startswith("python -m hub serve")]
    assert len(serve) == 1
    argv = shlex.split(serve[0])
    port = free_port()
    flags = argv[4:]  # after `python -m hub serve`
    flags[flags.index("--port") + 1] = str(port)
    flags[flags.index("--data-dir") + 1] = str(tmp_path / "data")
    hub = ServerProcess([sys.executable, *argv[1:4], *flags], port, log=tmp_path / "hub.log")
    async with hub:
        for ln in lines:
            if ln in NOT_RUN or ln in serve:
                continue
            cmd, _, expect = ln.partition("  # expect: ")
            out = await asyncio.to_thread(
                subprocess.run,
                ["bash", "-c", cmd.replace("8765", str(port))],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert out.returncode == 0, (cmd, out.stderr)
            assert expect in out.stdout, (cmd, out.stdout[-500:])

        # section 3: the App, bundled (as Vite would) and served from another origin
        src = FIXTURE / "src" / "_doc_app"
        src.mkdir(exist_ok=True)
        (src / "App.tsx").write_text(app_tsx())
        (src / "main.tsx").write_text(
            'import { createRoot } from "react-dom/client";\nimport App from "./App";\n'
            'createRoot(document.getElementById("root")!).render(<App />);\n'
        )
        out = tmp_path / "site"
        built = await asyncio.to_thread(
            subprocess.run,
            [
                str(FIXTURE / "node_modules/.bin/esbuild"),
                "src/_doc_app/main.tsx",
                "--bundle",
                "--format=esm",
                "--jsx=automatic",
                '--define:process.env.NODE_ENV="production"',
                f"--outfile={out / 'main.js'}",
            ],
            cwd=FIXTURE,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert built.returncode == 0, built.stderr
        (out / "index.html").write_text('<div id="root"></div><script type="module" src="main.js"></script>')
        site = web.Application()
        site.router.add_static("/", out)
        server = TestServer(site, host="localhost", port=0)
        await server.start_server()
        try:
            page = await pages.new()
            await page.goto(str(server.make_url("/index.html")) + f"?hub=http://127.0.0.1:{port}")
            await page.fill("#prompt", "How do resumable streams work?")
            await page.click("button[type=submit]")
            await page.wait_for_function(
                "() => (document.querySelector('p.assistant')?.textContent ?? '').length > 20"
            )
            await page.reload()  # mid-answer (70 tokens/s): history, then the resumed answer, once
            chat = await page.evaluate("sessionStorage.chatId")
            api = f"http://127.0.0.1:{port}/api/chat/{chat}"
            async with aiohttp.ClientSession() as http:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:  # until the answer has ended (and so is saved)
                    async with http.get(f"{api}/messages") as r:
                        msgs = (await r.json())["messages"]
                    if len(msgs) == 2:
                        break
                    await asyncio.sleep(0.05)
            want = msgs[1]["parts"][-1]["text"]
            assert len(want) > 200
            await page.wait_for_function(
                "w => document.querySelectorAll('p.assistant').length === 1 && "
                "document.querySelector('p.assistant').textContent === w",
                arg=want,
            )  # the whole answer, once: not doubled by the replay, nothing missing at the seam
            assert await page.locator("p.user").all_inner_texts() == ["How do resumable streams work?"]
        finally:
            await server.close()
