"""One hub per data dir (issue 12's bar): a second ``serve`` on the same ``--data-dir`` exits at once
with one line naming the dir and the first hub's pid, the first keeps serving, no acknowledged chunk
changes, and only the first writes CLEAN_SHUTDOWN."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .procs import HubProcess, post


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_second_hub_on_the_same_dir_exits_and_changes_nothing(
    hub_process: Callable[..., HubProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = hub_process("--data-dir", str(data), "--fsync", "always")
    assert post(f"{first.http}/streams/one/a?create=1", {"data": ["hello ", "world"]})["offset"] == 0
    before = files(data / "streams")

    t0 = time.monotonic()
    second = hub_process("--data-dir", str(data), wait_ready=False)
    rc = second.exit_code(timeout=5)
    assert rc == 2 and time.monotonic() - t0 < 5
    errors = [line for line in second.out.lines if line.strip()]
    assert len(errors) == 1, second.out.text()  # one line, no traceback
    assert str(data.resolve()) in errors[0] and str(first.proc.pid) in errors[0]
    assert not (data / "CLEAN_SHUTDOWN").exists()  # the second wrote nothing

    # The first is unharmed: serving, same bytes on disk, appends continue at the right offset.
    assert files(data / "streams") == before
    assert post(f"{first.http}/streams/one/a", {"data": "!"})["offset"] == 2
    with urllib.request.urlopen(f"{first.http}/streams/one/a?from=0", timeout=10) as r:
        assert json.loads(r.read())["chunks"] == ["hello ", "world", "!"]
    assert first.stop() == 0
    assert (data / "CLEAN_SHUTDOWN").exists()  # written by the holder, on its way out

    # The lock went with the first hub: a new one starts on the dir.
    third = hub_process("--data-dir", str(data))
    with urllib.request.urlopen(f"{third.http}/streams/one/a?from=0", timeout=10) as r:
        assert json.loads(r.read())["chunks"] == ["hello ", "world", "!"]


def test_a_killed_hub_leaves_no_stale_lock(hub_process: Callable[..., HubProcess], tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = hub_process("--data-dir", str(data))
    first.kill9()
    second = hub_process("--data-dir", str(data))
    with urllib.request.urlopen(f"{second.http}/healthz", timeout=10) as r:
        assert r.status == 200
