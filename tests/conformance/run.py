"""Run the official Durable Streams conformance suite against the hub.

    .venv/bin/python tests/conformance/run.py [--store redis] [extra vitest arguments]

Starts the hub in this process on 127.0.0.1 (ephemeral port) over a temporary data dir (the file
store, fsync=interval as in production), runs the pinned suite (tests/conformance/package.json,
installed with ``npm ci``; installed here if node_modules is missing) with ``npx vitest run``
(``--store redis``: the hub on the Redis engine, over a redis-server of its own, AOF everysec), and
ends with three lines read from vitest's JSON report::

    conformance_passed: N
    conformance_failed: N
    conformance_skipped: N

The exit status is 0 only if vitest ran tests and none failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from aiohttp import web  # noqa: E402

from hub.app import make_app  # noqa: E402
from hub.core.config import Config  # noqa: E402
from hub.protocols.durable import DS  # noqa: E402

LONG_POLL_S = 2.0  # the suite's plain tests time out after 5 s; a long-poll must answer before


def ensure_installed() -> None:
    if (HERE / "node_modules" / "@durable-streams" / "server-conformance-tests").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("run.py: npm is not installed (node 20+ and npm are needed for the conformance suite)")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)


async def run(vitest_args: list[str], store: str | None = None) -> int:
    with tempfile.TemporaryDirectory(prefix="rhub-conformance-") as tmp:
        redis = None
        if store == "redis":
            from bench.redisproc import RedisServer

            redis = RedisServer(Path(tmp) / "redis", appendfsync="everysec").start()
            print(f"run.py: redis-server on {redis.url}", flush=True)
        try:
            return await _run(vitest_args, tmp, redis.url if redis else None)
        finally:
            if redis is not None:
                redis.kill()


async def _run(vitest_args: list[str], tmp: str, store: str | None) -> int:
    cfg = Config(host="127.0.0.1", port=0, data_dir=Path(tmp) / "data", fsync="interval", store=store)
    app = make_app(cfg)
    app[DS].config.long_poll_s = LONG_POLL_S
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}"
    report = Path(tmp) / "report.json"
    print(f"run.py: hub on {url}, data in {tmp}/data", flush=True)
    t0 = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            "npx",
            "--no-install",
            "vitest",
            "run",
            "--reporter=default",
            "--reporter=json",
            f"--outputFile.json={report}",
            *vitest_args,
            cwd=HERE,
            env={**os.environ, "CONFORMANCE_TEST_URL": url, "FORCE_COLOR": "0"},
        )
        code = await proc.wait()
    finally:
        await runner.cleanup()
    elapsed = time.monotonic() - t0
    if not report.exists():
        print(f"run.py: vitest wrote no report (exit {code})")
        print("conformance_passed: 0\nconformance_failed: 0\nconformance_skipped: 0")
        return 1
    return summarize(json.loads(report.read_text()), elapsed)


def summarize(data: dict, elapsed: float) -> int:
    passed = int(data.get("numPassedTests", 0))
    failed = int(data.get("numFailedTests", 0))
    skipped = int(data.get("numPendingTests", 0)) + int(data.get("numTodoTests", 0))
    for suite in data.get("testResults", []):
        for t in suite.get("assertionResults", []):
            if t.get("status") == "failed":
                print(f"FAILED: {t.get('fullName')}")
                for msg in t.get("failureMessages", [])[:1]:
                    print("   " + msg.splitlines()[0][:300] if msg else "")
    print(f"run.py: {passed + failed + skipped} tests in {elapsed:.1f}s")
    print(f"conformance_passed: {passed}")
    print(f"conformance_failed: {failed}")
    print(f"conformance_skipped: {skipped}")
    return 0 if failed == 0 and passed > 0 and data.get("success", True) is not False else 1


def main() -> None:
    ensure_installed()
    args = sys.argv[1:]
    store = None
    if args[:1] == ["--store"] and len(args) > 1:
        store, args = args[1], args[2:]
        if store != "redis":
            sys.exit(f"run.py: --store redis is the one alternative store, not {store!r}")
    sys.exit(asyncio.run(run(args, store)))


if __name__ == "__main__":
    main()
