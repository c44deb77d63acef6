"""Short CI version of the chaos checker: kill -9 the real hub under load; nothing acknowledged is lost."""

from __future__ import annotations

import pytest

from bench.chaos import chaos


@pytest.mark.parametrize("fsync", ["always", "interval"])
async def test_kill9_under_load_loses_nothing_acknowledged(fsync):
    v, h, kills = await chaos(
        runs=4, streams=16, subscribers=8, rate=25.0, fsync=fsync, seed=7, progress=False
    )
    assert kills == 4
    assert v.acked_total > 100, "the workload did not run"
    assert (v.acked_lost, v.duplicates, v.reorders) == (0, 0, 0), v.notes[:10]
    assert v.subscriber_mismatch == 0 and v.status_wrong == 0 and v.partial_gone == 0, v.notes[:10]
    assert h.errors == []
