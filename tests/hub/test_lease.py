"""hub's producer leases, driven by a fake clock: who is due, when, and why (no event loop, no sleeps)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hub.core.lease import OPEN_TTL_EXPIRED, PRODUCER_LOST, Leases


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(lease_s: float | None = 30, open_ttl_s: float | None = None) -> tuple[Leases, Clock]:
    c = Clock()
    return Leases(lease_s, open_ttl_s, clock=c), c


def test_a_stream_nobody_holds_lapses_after_the_lease() -> None:
    leases, clock = make()
    leases.track("s")  # e.g. found open at start: a hub restart counts as gone
    clock.t += 29.9
    assert leases.due() == []
    assert leases.next_due() is not None and abs(leases.next_due() - 0.1) < 1e-6  # type: ignore[operator]
    clock.t += 0.1
    assert leases.due() == [("s", PRODUCER_LOST)]
    assert leases.due() == [] and "s" not in leases  # due once


def test_a_held_stream_never_lapses_until_its_holder_goes() -> None:
    leases, clock = make()
    conn = object()
    leases.track("s")
    leases.attach("s", conn)
    clock.t += 3600
    assert leases.due() == []
    leases.detach(conn)
    clock.t += 29
    assert leases.due() == []
    clock.t += 1
    assert leases.due() == [("s", PRODUCER_LOST)]


def test_the_last_of_two_holders_starts_the_lease() -> None:
    leases, clock = make()
    a, b = object(), object()
    leases.track("s")
    leases.attach("s", a)
    leases.attach("s", b)
    leases.detach(a)
    clock.t += 100
    assert leases.due() == []
    leases.detach(b)
    clock.t += 30
    assert leases.due() == [("s", PRODUCER_LOST)]


def test_a_producer_that_comes_back_within_the_lease_keeps_the_stream() -> None:
    leases, clock = make()
    a, b = object(), object()
    leases.track("s")
    leases.attach("s", a)
    leases.detach(a)  # the connection dropped
    clock.t += 20
    leases.attach("s", b)  # the Producer reconnected and resent its append
    clock.t += 1000
    assert leases.due() == []


def test_http_renewals_push_the_deadline_without_growing_the_heap() -> None:
    leases, clock = make()
    leases.track("s")
    for _ in range(10_000):
        clock.t += 1
        leases.renew("s")
        assert leases.due() == []
    assert len(leases._heap) <= 2
    clock.t += 30
    assert leases.due() == [("s", PRODUCER_LOST)]


def test_open_ttl_ends_even_a_held_stream_and_counts_from_creation() -> None:
    leases, clock = make(lease_s=30, open_ttl_s=600)
    leases.track("old", age_s=590)  # found open at start, created 590 s ago
    leases.track("new")
    leases.attach("old", object())
    leases.attach("new", object())
    clock.t += 10
    assert leases.due() == [("old", OPEN_TTL_EXPIRED)]
    clock.t += 590
    assert leases.due() == [("new", OPEN_TTL_EXPIRED)]


def test_forgotten_and_disabled_streams_are_never_due() -> None:
    leases, clock = make()
    leases.track("s")
    leases.forget("s")
    clock.t += 100
    assert leases.due() == [] and leases.next_due() is None
    off, clock = make(lease_s=None, open_ttl_s=None)
    off.track("s")
    clock.t += 1e9
    assert off.due() == [] and len(off) == 0


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["attach", "detach", "renew", "tick", "forget", "track"]),
            st.integers(0, 2),  # which stream
            st.integers(0, 1),  # which holder
            st.floats(0, 40),
        ),
        max_size=60,
    )
)
def test_due_matches_a_simple_model(ops: list[tuple[str, int, int, float]]) -> None:
    """Against a model that recomputes every deadline from scratch: the heap's laziness never makes a
    stream due early, late, twice, or while held."""
    leases, clock = make(lease_s=30)
    holders = [object(), object()]
    model: dict[str, tuple[set[int], float]] = {}  # stream -> (holders, lapses_at if unheld)
    for op, i, h, dt in ops:
        sid = f"s{i}"
        if op == "track" and sid not in model:
            leases.track(sid)
            model[sid] = (set(), clock.t + 30)
        elif op == "attach" and sid in model:
            leases.attach(sid, holders[h])
            model[sid][0].add(h)
        elif op == "detach":
            leases.detach(holders[h])
            for s, (hs, at) in list(model.items()):
                if h in hs:
                    hs.discard(h)
                    model[s] = (hs, clock.t + 30 if not hs else at)
        elif op == "renew" and sid in model and not model[sid][0]:
            leases.renew(sid)
            model[sid] = (set(), clock.t + 30)
        elif op == "forget":
            leases.forget(sid)
            model.pop(sid, None)
        elif op == "tick":
            clock.t += dt
        expected = sorted(s for s, (hs, at) in model.items() if not hs and at <= clock.t)
        got = leases.due()
        assert sorted(s for s, _ in got) == expected
        assert all(reason == PRODUCER_LOST for _, reason in got)
        for s in expected:
            del model[s]
