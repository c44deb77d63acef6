"""The storage additions the Durable Streams layer relies on, driven on a Log directly: the last
Stream-Seq and producer state come back after recovery from raw segments and from the checkpoint
that sealing writes, and a regressed Stream-Seq is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from storage import Log, LogOptions, SequenceError
from storage.file.log import SEQ_SEP

SMALL = LogOptions(segment_bytes=4096, block_bytes=1024, seal_level=3)  # as make_log's default


def test_stream_seq_and_producers_survive_recovery_and_sealing(
    make_log: Callable[..., Log], log_path: Path
) -> None:
    log = make_log()
    for i in range(200):  # tiny segments: this rolls many times
        log.append([b"x" * 50], "p", i, 0, stream_seq=f"{i:04d}")
    log.append([b"y"], stream_seq="0200")  # a Stream-Seq without a producer
    log.commit()
    assert len(log.segments) > 3
    log.shutdown()

    raw = Log.open(log_path, SMALL)  # recovered from the marks in the raw segments
    assert raw.stream_seq == "0200" and raw.producers["p"].seq == 199
    with pytest.raises(SequenceError):
        raw.append([b"z"], stream_seq="0199")
    res = raw.append([b"z"], "p", 199, 0, stream_seq="0000")  # a producer retry comes first
    assert res.duplicate
    raw.close()
    raw.commit()
    assert raw.seal_all() == len(raw.segments)
    keys = [k for k in raw.checkpoint.producers if k.startswith(SEQ_SEP)]
    assert keys == [SEQ_SEP + "0200"]  # one Stream-Seq entry, the last
    raw.shutdown()

    sealed = Log.open(log_path, SMALL)  # recovered from the checkpoint
    assert sealed.stream_seq == "0200"
    assert (sealed.producers["p"].epoch, sealed.producers["p"].seq) == (0, 199)
    assert "" not in sealed.producers
    sealed.shutdown()


def test_producer_ids_with_nul_are_refused(make_log: Callable[..., Log]) -> None:
    log = make_log()
    with pytest.raises(SequenceError):
        log.append([b"a"], "p\0x", 0)
    with pytest.raises(SequenceError):
        log.append([b"a"], "", 0, stream_seq="1")


def test_close_remembers_the_producer_that_closed(make_log: Callable[..., Log]) -> None:
    log = make_log()
    log.append([b"a"], "p", 0)
    log.close(producer=("p", 0, 1))
    assert log.producers["p"].seq == 1  # its retry is recognised (in memory: see Log.close)
    assert log.append([b"b"], "p", 1).duplicate
