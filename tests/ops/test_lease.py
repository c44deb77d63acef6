"""Answers end (issue 12's bars): a stream whose producer vanished ends as ``error`` / ``producer_lost``
within the lease, durably, for every reader; the same when the hub itself restarts mid-answer. Black-box:
the hub and the producer are real processes, killed with SIGKILL."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .procs import ROOT, HubProcess, Output, clean_env

PRODUCER = Path(__file__).with_name("slow_producer.py")


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def start_producer(hub: HubProcess, stream: str) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, str(PRODUCER), f"ws://127.0.0.1:{hub.port}/ws", stream],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=clean_env(PYTHONPATH=str(ROOT)),
    )
    return proc, Output(proc)


def acked(out: Output) -> int:
    return max((int(line.split()[1]) for line in out.lines if line.startswith("acked ")), default=0)


def wait_ended(hub: HubProcess, stream: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = get(f"{hub.http}/streams/{stream}?from=0&limit=10000")
        if body["status"] != "open":
            return body
        assert time.monotonic() < deadline, f"{stream} still open after {timeout} s: {body}"
        time.sleep(0.05)  # polling a process from outside, with a deadline


def test_kill_9_producer_mid_answer_ends_the_stream(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--producer-lease-s", "2")
    proc, out = start_producer(hub, "lease/kill")
    out.wait_for(lambda s: s == "acked 5", 20, "acked 5")
    proc.kill()
    proc.wait(10)
    n = acked(out)
    t0 = time.monotonic()
    body = wait_ended(hub, "lease/kill", 10)
    assert time.monotonic() - t0 >= 1.0, "ended before the producer's lease could run out"
    assert (body["status"], body["error"]) == ("error", "producer_lost")
    assert body["end"] >= n and body["chunks"][:n] == [f"c{i} " for i in range(n)]
    # Durable: a hub restart reports the same end.
    hub.stop()
    again = HubProcess(hub.argv[hub.argv.index("serve") + 1 :])
    try:
        body2 = get(f"{again.http}/streams/lease/kill?from=0&limit=10000")
        assert (body2["status"], body2["error"], body2["end"]) == ("error", "producer_lost", body["end"])
    finally:
        again.stop()


def test_a_live_producer_keeps_its_stream_open_past_the_lease(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--producer-lease-s", "1")
    proc, out = start_producer(hub, "lease/alive")
    try:
        out.wait_for(lambda s: s == "acked 3", 20, "acked 3")
        deadline = time.monotonic() + 2.5  # more than two leases
        while time.monotonic() < deadline:
            assert get(f"{hub.http}/streams/lease/alive")["status"] == "open"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(10)


def test_hub_restart_mid_answer_counts_as_gone(
    hub_process: Callable[..., HubProcess], tmp_path: Path
) -> None:
    hub = hub_process("--producer-lease-s", "2", "--demo")
    req = urllib.request.Request(
        f"{hub.http}/demo/ask",
        data=json.dumps({"chat": "lease", "prompt": "Tell me a long story about logs", "rate": 20}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        stream = json.loads(r.read())["stream"]
    deadline = time.monotonic() + 20
    while get(f"{hub.http}/streams/{stream}")["end"] < 3:  # the in-hub model has started answering
        assert time.monotonic() < deadline
        time.sleep(0.05)
    hub.kill9()  # the answer's producer (the demo model) dies with the hub
    again = HubProcess(hub.argv[hub.argv.index("serve") + 1 :])
    try:
        body = wait_ended(again, stream, 10)
        assert (body["status"], body["error"]) == ("error", "producer_lost")
    finally:
        again.stop()
