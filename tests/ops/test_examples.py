"""examples/ runs as the README says, against a real hub: the producer streams an answer, a subscriber
prints all of it exactly once with its final status, and one resuming ``--from N`` prints only the rest;
a subscriber started before the producer (``--wait``) follows the answer live from its first chunk."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable

from .procs import ROOT, HubProcess, clean_env

EXAMPLES = ROOT / "examples"
ADMIN = "examples-admin-token"
ANSWER_WORDS = 34  # examples/producer.py's ANSWER, one chunk per word


def run(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(PYTHONPATH=str(ROOT)),
    )


def test_producer_then_subscribers(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process(env=clean_env(RHUB_ADMIN_TOKEN=ADMIN))
    url = f"ws://127.0.0.1:{hub.port}/ws"
    sys.path.insert(0, str(EXAMPLES))
    try:
        from producer import ANSWER  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(EXAMPLES))
    words = [w + " " for w in ANSWER.split(" ")]
    assert len(words) == ANSWER_WORDS

    produced = run("producer.py", "--url", url, "--stream", "ex/1", "--delay", "0", "What is it?")
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.strip() == f"ex/1: done after {ANSWER_WORDS} chunks"

    whole = run("subscriber.py", "--url", url, "--stream", "ex/1")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == "".join(words) + f"\n[done at offset {ANSWER_WORDS}]\n"

    rest = run("subscriber.py", "--url", url, "--stream", "ex/1", "--from", "30")
    assert rest.stdout == "".join(words[30:]) + f"\n[done at offset {ANSWER_WORDS}]\n"

    before = errors_counted(hub)
    early = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "subscriber.py"), "--url", url, "--stream", "ex/2", "--wait", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    try:
        # the subscriber is up and has been told "stream_not_found" (an error the hub counts)
        deadline = time.monotonic() + 30
        while errors_counted(hub) <= before:
            assert early.poll() is None and time.monotonic() < deadline, early.communicate()
            time.sleep(0.05)  # polling another process's state, with a deadline
        produced = run("producer.py", "--url", url, "--stream", "ex/2", "--delay", "0.01", "Again?")
        assert produced.returncode == 0, produced.stderr
        out, err = early.communicate(timeout=60)
    finally:
        early.kill()
    assert early.returncode == 0, err
    assert out == "".join(words) + f"\n[done at offset {ANSWER_WORDS}]\n"


def errors_counted(hub: HubProcess) -> int:
    """The hub's error counter (/admin/stats): a refused subscribe counts one."""
    req = urllib.request.Request(f"{hub.http}/admin/stats", headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        n: int = json.loads(r.read())["errors"]
        return n
