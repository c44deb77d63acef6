"""Fixtures for the operator's-eye tests: the hub CLI and nginx as real processes, stopped after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from .procs import HubProcess, Nginx


@pytest.fixture
def hub_process(tmp_path: Path) -> Iterator[Callable[..., HubProcess]]:
    """``hub_process("--fsync", "always", ...)`` -> a running hub on a free port over ``tmp_path/data``
    unless the args name a ``--data-dir``."""
    started: list[HubProcess] = []

    def start(*args: str, **kw: Any) -> HubProcess:
        argv = list(args)
        if "--data-dir" not in argv:
            argv += ["--data-dir", str(tmp_path / "data")]
        if "--port" not in argv:
            argv += ["--port", "0"]
        p = HubProcess(argv, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Callable[[Sequence[str]], Nginx]]:
    started: list[Nginx] = []

    def start(upstreams: Sequence[str]) -> Nginx:
        n = Nginx(tmp_path / f"nginx{len(started)}", upstreams)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()
