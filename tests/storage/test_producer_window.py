"""The file engine keeps each producer's retry window (storage/engine.py's PRODUCER_WINDOW) through
sealing: the window lives in the producer marks of raw segments and in the checkpoint of sealed ones."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import SMALL

from storage import AppendResult, Log, SequenceError, SequenceGap
from storage.engine import PRODUCER_WINDOW


def test_window_survives_sealing_and_reopening(make_log: Callable[..., Log]) -> None:
    log = make_log()
    offsets = {}
    for seq in range(1, 41):  # ~1 KiB chunks: the 4 KiB segments roll every few appends
        offsets[seq] = log.append([bytes([seq]) * 1000], producer_id="p", seq=seq).offset
    log.close("done", producer=None)
    log.commit()
    assert log.seal_all() >= 5
    assert all(s.sealed for s in log.segments)  # every mark now lives in the checkpoint only
    log.shutdown()
    log = Log.open(log.path, SMALL)
    for seq in range(41 - PRODUCER_WINDOW, 41):
        assert log.append([b"x"], producer_id="p", seq=seq) == AppendResult(offsets[seq], 1, duplicate=True)
    with pytest.raises(SequenceError):
        log.append([b"x"], producer_id="p", seq=40 - PRODUCER_WINDOW)
    log.shutdown()


def test_window_spans_a_sealed_segment_and_the_raw_tail(make_log: Callable[..., Log]) -> None:
    log = make_log()
    for seq in range(1, 5):
        log.append([b"a" * 1500], producer_id="p", seq=seq)  # rolls: seqs 1..3 end up sealed
    log.commit()
    log.seal_all()
    log.append([b"b"], producer_id="p", seq=5)
    log.append([b"c"], producer_id="p", seq=6)
    log.commit()
    log.shutdown()
    log = Log.open(log.path, SMALL)
    assert any(s.sealed for s in log.segments) and not log.segments[-1].sealed
    assert [log.append([b"x"], producer_id="p", seq=q).offset for q in range(2, 7)] == [1, 2, 3, 4, 5]
    with pytest.raises(SequenceError):
        log.append([b"x"], producer_id="p", seq=1)
    with pytest.raises(SequenceGap):
        log.append([b"x"], producer_id="p", seq=8)
    assert log.next_offset == 6
    log.shutdown()
