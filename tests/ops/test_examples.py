"""examples/ runs as the README says, against a real hub: the producer streams an answer, a subscriber
prints all of it exactly once with its final status, and one resuming ``--from N`` prints only the rest."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

from .procs import ROOT, HubProcess, clean_env

EXAMPLES = ROOT / "examples"
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
    hub = hub_process()
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
