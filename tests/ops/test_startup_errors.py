"""Startup errors an operator can fix (issue 12, item 6): a busy port, a bad environment value, an
unwritable data dir each print one line saying what is wrong and exit 2 (the code the systemd unit's
RestartPreventExitStatus names), never a traceback; ``--port 0`` prints the port it got."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from .procs import HubProcess, clean_env


def serve(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(**env),
    )


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(serve("--port", str(port), "--data-dir", str(tmp_path / "d")))
    assert f"127.0.0.1:{port}" in line and "in use" in line


@pytest.mark.parametrize(
    ("name", "value", "expect"),
    [
        ("RHUB_PORT", "abc", "RHUB_PORT"),
        ("RHUB_FSYNC", "sometimes", "RHUB_FSYNC"),
        ("RHUB_FSYNC_INTERVAL_MS", "fast", "RHUB_FSYNC_INTERVAL_MS"),
        ("RHUB_DEMO", "perhaps", "RHUB_DEMO"),
    ],
)
def test_bad_environment_value(tmp_path: Path, name: str, value: str, expect: str) -> None:
    line = one_line_error(serve("--data-dir", str(tmp_path / "d"), **{name: value}))
    assert expect in line and repr(value) in line


def test_bad_flag_value(tmp_path: Path) -> None:
    r = serve("--port", "abc", "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 2 and "Traceback" not in r.stderr  # argparse's own usage error


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = one_line_error(serve("--data-dir", str(blocker / "data")))
    assert str(blocker / "data") in line


def test_port_0_prints_the_real_port(hub_process: Callable[..., HubProcess]) -> None:
    hub = hub_process("--demo")
    assert hub.port > 0
    with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as r:
        assert r.status == 200
    # Every address the hub prints is the real one, the demo's too.
    urls = re.findall(r"http://[\d.]+:(\d+)", hub.out.text())
    assert urls and set(urls) == {str(hub.port)}, hub.out.text()


def test_the_cli_hub_freezes_long_lived_objects_unless_told_not_to(tmp_path: Path) -> None:
    """``serve`` installs the collector policy (hub/core/gcpolicy.py) and reports it in /admin/stats;
    ``--no-gc-freeze`` leaves CPython's collector as it is."""
    for flag, on in ((), True), (("--no-gc-freeze",), False):
        hub = HubProcess(
            ["--port", "0", "--data-dir", str(tmp_path / str(on)), "--admin-token", "gc-admin", *flag]
        )
        try:
            req = urllib.request.Request(
                f"{hub.http}/admin/stats", headers={"Authorization": "Bearer gc-admin"}
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                stats = json.load(r)
        finally:
            hub.stop()
        if on:
            assert stats["gc_frozen_objects"] > 10_000, stats  # the hub's own modules, at least
            assert stats["gc_thaws"] == 0
        else:
            assert "gc_frozen_objects" not in stats
