"""deploy/systemd/resumable-hub.service: systemd accepts it without a warning, its hardening scores
"OK" in ``systemd-analyze security``, and its ExecStart with its own Environment= serves a real hub
(data where the unit says, a clean exit on SIGTERM, the exit code RestartPreventExitStatus names on a
configuration error). systemd is not PID 1 here, so the unit runs as its command line, not as a service."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

from .procs import ROOT, HubProcess, clean_env, free_port

UNIT = ROOT / "deploy" / "systemd" / "resumable-hub.service"
SHIPPED_BIN = "/opt/resumable-hub/bin/resumable-hub"
VENV_BIN = Path(sys.executable).parent / "resumable-hub"  # the same console script, installed here


def unit_settings() -> list[tuple[str, str]]:
    out = []
    for line in UNIT.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.append((key, value))
    return out


def local_unit(tmp_path: Path) -> Path:
    """The unit with its ExecStart pointing at this venv's console script (nothing else changed)."""
    text = UNIT.read_text()
    assert text.count(f"ExecStart={SHIPPED_BIN} ") == 1
    path = tmp_path / "resumable-hub.service"
    path.write_text(text.replace(SHIPPED_BIN, str(VENV_BIN)))
    return path


def test_systemd_analyze_verify_is_silent(tmp_path: Path) -> None:
    r = subprocess.run(
        ["systemd-analyze", "verify", str(local_unit(tmp_path))], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys but prints a warning: any output at all is a defect in the unit.
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_hardening_scores_ok(tmp_path: Path) -> None:
    # --threshold counts in tenths of the printed 0-10 exposure level.
    r = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout)
    assert r.returncode == 0 and m is not None, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.0


def _exec_start_env(tmp_path: Path, **overrides: str) -> tuple[list[str], dict[str, str]]:
    settings = unit_settings()
    env = clean_env()
    for key, value in settings:
        if key == "Environment":
            name, _, val = value.partition("=")
            env[name] = val
    env.update(overrides)
    (cmd,) = [v for k, v in settings if k == "ExecStart"]
    argv = shlex.split(cmd)
    assert argv[0] == SHIPPED_BIN
    return [str(VENV_BIN), *argv[1:]], env


def test_exec_start_with_the_units_environment_serves(tmp_path: Path) -> None:
    settings = dict(unit_settings())
    assert settings["StateDirectory"] == "resumable-hub"
    argv, env = _exec_start_env(tmp_path)
    # The unit keeps its data in its StateDirectory, on loopback, behind nginx's upstream port.
    assert env["RHUB_DATA_DIR"] == "/var/lib/resumable-hub"
    assert env["RHUB_HOST"] == "127.0.0.1" and env["RHUB_PORT"] == "8765"
    env["RHUB_DATA_DIR"] = str(tmp_path / "state" / "resumable-hub")
    env["RHUB_PORT"] = str(free_port())
    hub = HubProcess([], env=env, command=argv)
    try:
        assert hub.port == int(env["RHUB_PORT"])
        with urllib.request.urlopen(f"{hub.http}/healthz", timeout=10) as r:
            assert r.status == 200
        assert (tmp_path / "state" / "resumable-hub").is_dir()
    finally:
        rc = hub.stop()  # systemd's default KillSignal is SIGTERM
    assert rc == 0, hub.out.text()


def test_a_configuration_error_exits_with_the_no_restart_code(tmp_path: Path) -> None:
    """RestartPreventExitStatus must be the code the hub uses for errors a restart cannot fix."""
    settings = unit_settings()
    (prevent,) = [v for k, v in settings if k == "RestartPreventExitStatus"]
    argv, env = _exec_start_env(tmp_path, RHUB_PORT="not-a-port", RHUB_DATA_DIR=str(tmp_path / "d"))
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == int(prevent), r.stdout + r.stderr
