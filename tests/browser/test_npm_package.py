"""The browser client as an npm package (hub/static/package.json): ``npm pack`` works, a TypeScript
app that imports it type-checks with ``tsc --strict`` (and a wrong call does not), and the app,
bundled with esbuild and served from another origin, streams an answer from the hub in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from hub.client import Producer
from tests.browser.conftest import DemoHub, Pages

STATIC = Path(__file__).resolve().parents[2] / "hub" / "static"
BIN = Path(__file__).parent / "aisdk-fixture" / "node_modules" / ".bin"

DOC = Path(__file__).resolve().parents[2] / "docs" / "browser.md"
_m = re.search(r"<!-- file: main.ts -->\n```ts\n(.*?)```", DOC.read_text(), re.S)
assert _m, "docs/browser.md lost its main.ts block"
APP = _m.group(1)  # the guide's code, as written
WRONG = """
import { connect } from "resumable-hub-client";
connect(42);
"""


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (BIN / "tsc").exists():
        pytest.fail("run `npm ci` in tests/browser/aisdk-fixture (make test does it)", pytrace=False)
    root = tmp_path_factory.mktemp("npm-app")
    packed = run(["npm", "pack", "--pack-destination", str(root)], STATIC)
    assert packed.returncode == 0, packed.stderr
    tgz = root / packed.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as t:
        names = sorted(n.removeprefix("package/") for n in t.getnames())
    assert names == sorted(
        ["package.json", "resumable.js", "resumable.d.ts", "chat.js", "chat.d.ts", "react.js", "react.d.ts"]
    )
    app = root / "app"
    (app / "src").mkdir(parents=True)
    pkg = {
        "name": "app",
        "private": True,
        "type": "module",
        "dependencies": {"resumable-hub-client": f"file:{tgz}"},
    }
    (app / "package.json").write_text(json.dumps(pkg))
    tsconfig = {
        "compilerOptions": {
            "strict": True,
            "noEmit": True,
            "target": "ES2022",
            "module": "ESNext",
            "moduleResolution": "bundler",
            "lib": ["ES2022", "DOM"],
            "skipLibCheck": False,
        },
        "include": ["src/main.ts"],
    }
    (app / "tsconfig.json").write_text(json.dumps(tsconfig))
    (app / "src" / "main.ts").write_text(APP)
    installed = run(["npm", "install", "--offline", "--no-audit", "--no-fund"], app)
    assert installed.returncode == 0, installed.stderr
    return app


def test_a_typescript_app_type_checks_against_the_package(app_dir: Path) -> None:
    ok = run([str(BIN / "tsc"), "-p", "."], app_dir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = app_dir / "wrong"
    shutil.copytree(app_dir, wrong, ignore=shutil.ignore_patterns("wrong"), symlinks=True)
    (wrong / "src" / "main.ts").write_text(WRONG)
    bad = run([str(BIN / "tsc"), "-p", "."], wrong)
    assert bad.returncode != 0 and "TS2345" in bad.stdout  # the types are real, not `any`


async def test_the_bundled_app_streams_from_a_hub_on_another_origin(
    app_dir: Path, demo_hub: DemoHub, pages: Pages
) -> None:
    out = app_dir / "dist"
    built = run(
        [str(BIN / "esbuild"), "src/main.ts", "--bundle", "--format=esm", f"--outfile={out / 'main.js'}"],
        app_dir,
    )
    assert built.returncode == 0, built.stderr
    (out / "index.html").write_text('<pre id="out"></pre><script type="module" src="main.js"></script>')
    site = web.Application()
    site.router.add_static("/", out)
    server = TestServer(site, host="localhost", port=0)  # another origin than the hub's 127.0.0.1
    await server.start_server()
    try:
        ws = demo_hub.http.replace("http://", "ws://") + "/ws"
        async with Producer(ws, "npm/1") as p:
            for t in ["Hello", ", ", "npm"]:
                await p.append(t)
            page = await pages.new()
            await page.goto(str(server.make_url("/index.html")) + f"?hub={ws}")
            await page.wait_for_function("() => document.getElementById('out').textContent === 'Hello, npm'")
        await page.wait_for_function("() => document.getElementById('out').dataset.status === 'done'")
    finally:
        await server.close()
