"""bench.peers end to end in its smallest mode: every peer really started (the hub twice, redis-server,
the Durable Streams reference server and resumable-stream through the Node harness), every workload
run, the key lines printed last as positive numbers, the plots written as PNG files."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

from bench.common import ROOT

KEYS = (
    "e2e_p99_vs_ds_ref",
    "resume_p99_vs_ds_ref",
    "resume_p99_vs_redis",
    "append_vs_redis_always",
    "append_vs_redis_everysec",
    "bytes_per_answer_vs_ds_ref",
    "e2e_p99_vs_resumable_stream",
)


def test_peers_smoke_prints_every_key_and_draws_the_plots(tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    r = subprocess.run(
        [sys.executable, "-m", "bench.peers", "--smoke", "--plots", str(plots)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    last = lines[-len(KEYS) :]
    assert [line.split(":")[0] for line in last] == list(KEYS), r.stdout[-2000:]
    values = {line.split(":")[0]: float(line.split(":")[1]) for line in last}
    for k, v in values.items():
        assert math.isfinite(v), (k, v)
        # a handful of answers can fit in database pages the baseline already had: 0 bytes is a
        # measurement there, every other ratio is of two positive figures
        assert v > 0 or (k == "bytes_per_answer_vs_ds_ref" and v == 0), (k, v)
    out = r.stdout
    for table in ("live,", "resume:", "appends/s:", "bytes per finished short answer"):
        assert table in out, table
    for peer in ("hub (file)", "hub (Redis)", "Redis Streams", "DS reference", "resumable-stream"):
        assert peer in out, peer
    assert "n/a (resumeExistingStream answers null once the stream is DONE)" in out
    for name in ("peers_latency.png", "peers_throughput.png", "peers_bytes.png"):
        png = (plots / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
