"""The Makefile's promises: `make test` installs every npm fixture the suite loads by itself (so a fresh
clone needs only .ci/run's system packages), `make run ARGS=...` passes flags to the hub, and `make clean`
never deletes the data dir."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

from .procs import ROOT, HubProcess, clean_env


def fresh_copy(dest: Path) -> Path:
    """The Makefile and every npm manifest, as a fresh clone has them (no node_modules, no venv)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if f in ("Makefile", "pyproject.toml") or Path(f).name in ("package.json", "package-lock.json"):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    return dest


def npm_fixture_dirs(root: Path) -> set[str]:
    return {
        str(p.parent.relative_to(root))
        for pattern in ("tests/**/package-lock.json", "bench/**/package-lock.json")
        for p in root.glob(pattern)
        if "node_modules" not in p.parts
    }


def test_make_test_installs_every_npm_fixture_first(tmp_path: Path) -> None:
    root = fresh_copy(tmp_path / "clone")
    fixtures = npm_fixture_dirs(root)
    assert fixtures >= {"tests/browser/react-fixture", "tests/conformance", "bench/peers_node"}
    plan = subprocess.run(["make", "-n", "test"], cwd=root, capture_output=True, text=True, check=True).stdout
    pytest_at = plan.index("-m pytest")
    for d in fixtures:
        assert f"cd {d} && npm ci" in plan[:pytest_at], f"`make test` does not install {d}:\n{plan}"


def test_make_fixtures_installs_what_the_tests_load(tmp_path: Path) -> None:
    root = fresh_copy(tmp_path / "clone")
    r = subprocess.run(["make", "fixtures"], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # What tests/browser/test_browser_react.py and tests/integration/test_durable_conformance.py load.
    assert (root / "tests/browser/react-fixture/node_modules/react/umd/react.development.js").is_file()
    assert (root / "tests/conformance/node_modules/@durable-streams/client").is_dir()
    assert (root / "tests/conformance/node_modules/@durable-streams/server-conformance-tests").is_dir()
    # What tests/bench/test_peers.py runs: bench.peers' Node harness.
    assert (root / "bench/peers_node/node_modules/@durable-streams/server").is_dir()
    assert (root / "bench/peers_node/node_modules/resumable-stream").is_dir()
    # Installed once: a second `make test` does not reinstall them.
    again = subprocess.run(["make", "-n", "fixtures"], cwd=root, capture_output=True, text=True, check=True)
    assert "npm ci" not in again.stdout


def test_make_clean_keeps_the_data_dir(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    root.mkdir()
    shutil.copy2(ROOT / "Makefile", root / "Makefile")
    chunk = root / "data" / "streams" / "ab" / "0.log"
    chunk.parent.mkdir(parents=True)
    chunk.write_bytes(b"acknowledged")
    for junk in (".venv/bin", ".pytest_cache", ".mypy_cache", "tests/conformance/node_modules/x"):
        (root / junk).mkdir(parents=True)
    r = subprocess.run(["make", "clean"], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert chunk.read_bytes() == b"acknowledged"
    assert not (root / ".venv").exists() and not (root / ".pytest_cache").exists()
    assert not (root / "tests/conformance/node_modules").exists()


def test_make_run_passes_args_to_the_hub(tmp_path: Path) -> None:
    data = tmp_path / "run-data"
    hub = HubProcess(
        [],
        env=clean_env(),
        command=["make", "-s", "-C", str(ROOT), "run", f"ARGS=--port 0 --data-dir {data} --fsync always"],
    )
    try:
        assert any("fsync=always" in line for line in hub.out.lines), hub.out.text()
        with urllib.request.urlopen(f"{hub.http}/", timeout=10) as r:  # make run turns the demo on
            assert r.status == 200 and b"<html" in r.read().lower()
        assert data.is_dir()
    finally:
        hub.stop()
