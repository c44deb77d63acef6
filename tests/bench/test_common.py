"""bench/common.py: the one percentile definition, the table layout, the progress bar, the hub process."""

from __future__ import annotations

import io
import random
import statistics
from pathlib import Path

import aiohttp
import pytest

from bench.common import HubProcess, Progress, free_port, pct, table


@pytest.mark.parametrize(
    ("xs", "p", "want"),
    [
        ([1, 2, 3, 4], 0, 1.0),
        ([1, 2, 3, 4], 25, 1.75),  # position 0.75: between 1 and 2
        ([1, 2, 3, 4], 50, 2.5),  # the median of an even count is the mean of the middle two
        ([1, 2, 3, 4], 99, 3.97),  # position 2.97
        ([1, 2, 3, 4], 100, 4.0),
        ([10, 7, 4, 3, 2, 1], 50, 3.5),  # numpy.percentile's documented example
        ([4, 1, 3, 2, 5], 50, 3.0),  # unsorted input, odd count: the middle one
        ([0, 10], 90, 9.0),
        (range(1, 101), 99, 99.01),  # nearest-rank would say 99, the old bench.load 100
    ],
)
def test_pct_is_linear_interpolation_between_closest_ranks(xs, p, want):
    assert pct(xs, p) == pytest.approx(want)


def test_pct_agrees_with_statistics_quantiles_inclusive():
    rng = random.Random(3)
    xs = [rng.expovariate(1.0) for _ in range(1001)]
    cuts = statistics.quantiles(xs, n=100, method="inclusive")
    for p in range(1, 100):
        assert pct(xs, p) == pytest.approx(cuts[p - 1], rel=1e-12)


def test_pct_of_one_sample_is_that_sample():
    for p in (0, 1, 50, 99, 100):
        assert pct([7.5], p) == 7.5


def test_pct_refuses_no_samples_and_out_of_range_percentiles():
    with pytest.raises(ValueError, match="no samples"):
        pct([], 50)
    for p in (-0.1, 100.1):
        with pytest.raises(ValueError, match="outside"):
            pct([1.0], p)


def test_pct_returns_a_float_and_does_not_reorder_its_input():
    xs = [3, 1, 2]
    assert isinstance(pct(xs, 50), float)
    assert xs == [3, 1, 2]


def test_table_layout():
    out = table("t", ["name", "n"], [["a", 1], ["bb", 1000]], ["a note"])
    assert out == "\n".join(
        ["", "## t", "name  n   ", "----  ----", "a        1", "bb    1000", "  * a note"]
    )


def test_table_refuses_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match="2 cells under a header of 3"):
        table("t", ["a", "b", "c"], [[1, 2]])


def test_progress_writes_lines_to_a_file_and_nothing_for_a_short_loop():
    quiet = io.StringIO()
    with Progress("short", 10, every=60, out=quiet) as bar:
        for i in range(10):
            bar.update(i + 1)
    assert quiet.getvalue() == ""

    out = io.StringIO()
    bar = Progress("runs", 4, every=0, out=out)
    bar.update(2, "acked 10")
    bar.close()
    bar.close()  # idempotent
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "runs [############............] 2/4  50%" in lines[0] and lines[0].endswith("acked 10")
    assert "\r" not in out.getvalue()  # not a terminal: plain lines


async def test_hub_process_starts_answers_and_stops(tmp_path: Path):
    hub = HubProcess(tmp_path / "data", log=tmp_path / "hub.log")
    async with hub, aiohttp.ClientSession() as s:
        async with s.get(f"{hub.url}/healthz") as r:
            assert r.status == 200
        stats = await hub.admin_stats(s)
        assert stats["connections"] == 0
    assert hub.returncode is not None  # SIGTERM ended it
    with pytest.raises(RuntimeError, match="exited with"):
        # the same data dir and a flag the hub refuses: start() reports the exit, not a timeout
        await HubProcess(tmp_path / "data", args=["--fsync-interval-ms", "x"], start_timeout=20).start()


def test_free_port_is_bindable():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
