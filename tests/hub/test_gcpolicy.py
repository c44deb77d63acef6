"""The collector policy (hub/core/gcpolicy.py): survivors of a middle-generation collection are frozen,
so a full collection no longer reaches them (the pause it saves), and enough endings thaw them so that
garbage cycles among them are collected after all. Process-wide state: each test uninstalls."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from hub.core.gcpolicy import GcPolicy


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def policy() -> Iterator[tuple[GcPolicy, list[int]]]:
    ended = [0]
    p = GcPolicy(ended=lambda: ended[0], alive=lambda: 20, min_ended=10, ratio=0.25, max_age_s=3600)
    p.install()
    try:
        yield p, ended
    finally:
        p.uninstall()
        gc.collect()


def frozen_garbage() -> weakref.ref[Node]:
    """A cycle that survives a generation-1 collection (so it is frozen), then becomes garbage."""
    n = Node()
    ref = weakref.ref(n)
    gc.collect(1)
    assert gc.get_freeze_count() > 0
    del n
    return ref


def test_a_frozen_cycle_outlives_full_collections_until_enough_endings(
    policy: tuple[GcPolicy, list[int]],
) -> None:
    p, ended = policy
    ref = frozen_garbage()
    gc.collect()  # a full collection does not scan what is frozen
    assert ref() is not None
    ended[0] = 9  # below min_ended: no thaw yet
    assert not p.check()
    assert ref() is not None
    ended[0] = 10
    assert p.check()
    assert ref() is None, "the thaw collects the garbage that waited in the frozen set"
    assert p.thaws == 1 and p.last_full_ms > 0
    assert p.stats()["gc_thaws"] == 1
    assert not p.check(), "nothing ended since the last full collection"


def test_the_thaw_counts_endings_against_the_living(policy: tuple[GcPolicy, list[int]]) -> None:
    p, ended = policy
    p.alive = lambda: 1000
    p._full()  # the baseline: 1,000 alive, so a quarter is 250 endings
    ended[0] = 249
    assert not p.check()
    ended[0] = 250
    assert p.check()


def test_young_garbage_is_still_collected_at_once(policy: tuple[GcPolicy, list[int]]) -> None:
    n = Node()
    ref = weakref.ref(n)
    del n
    gc.collect(0)  # never survived a middle collection: never frozen
    assert ref() is None


def test_uninstall_restores_the_default_collector() -> None:
    ended = [0]
    p = GcPolicy(ended=lambda: ended[0], alive=lambda: 0)
    p.install()
    ref = frozen_garbage()
    p.uninstall()
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert ref() is None
