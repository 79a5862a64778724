"""consumer/timings.py: the per-batch stage breakdown the latency benchmark reports."""

from __future__ import annotations

import gc
import json
from array import array
from pathlib import Path

import pytest

from consumer.timings import BatchTiming, TimingRecorder, percentile, summarise


def _batch(t0: float, epochs: list[float], *, wait: float = 0.0, commit: float = 0.002) -> BatchTiming:
    """A batch polled at t0 whose stages take fixed times: house 1 ms, prepare 3 ms, load 1.5 ms,
    `wait`, queue 0.5 ms, pre 2 ms, copy 4 ms, `commit`."""
    submitted = t0 + 0.001 + 0.003 + 0.0015 + wait
    write_start = submitted + 0.0005
    return BatchTiming(
        polled=t0,
        poll_s=0.0001,
        house_s=0.001,
        prepare_s=0.003,
        load_s=0.0015,
        wait_s=wait,
        submitted=submitted,
        write_start=write_start,
        pre_s=0.002,
        copy_s=0.004,
        commit_s=commit,
        stored_at=write_start + 0.002 + 0.004 + commit,
        epochs=array("d", epochs),
    )


def test_stages_add_up_to_the_latency_at_commit() -> None:
    b = _batch(100.0, [99.99, 99.995])
    doc = summarise([b], [])
    mid = doc["middle"]
    parts = sum(
        mid[f"{s}_ms"]
        for s in ("at_poll", "house", "prepare", "load", "wait", "queue", "pre", "copy", "commit")
    )
    assert parts == pytest.approx(mid["latency_ms"], abs=0.02)
    assert doc["messages"] == 2 and doc["batches"] == 1


def test_the_tail_names_the_stage_that_made_it_slow() -> None:
    # 99 quick batches of one message, one batch whose COMMIT took 50 ms and that waited 20 ms.
    batches = [_batch(100.0 + i, [100.0 + i - 0.005]) for i in range(99)]
    batches.append(_batch(200.0, [199.995], wait=0.020, commit=0.050))
    doc = summarise(batches, [(200.0005, 0.007, 2), (150.0, 0.001, 0)])
    tail, middle = doc["tail"], doc["middle"]
    assert tail["messages"] == 1
    assert tail["commit_ms"] == pytest.approx(50.0) and middle["commit_ms"] == pytest.approx(2.0)
    assert tail["wait_ms"] == pytest.approx(20.0) and middle["wait_ms"] == 0.0
    assert tail["load_ms"] == middle["load_ms"] == pytest.approx(1.5)
    # Only the pause inside the slow batch's life (poll to commit) counts for it.
    assert tail["gc_ms"] == pytest.approx(7.0) and middle["gc_ms"] == 0.0
    assert doc["gc"]["2"] == {"count": 1, "total_ms": 7.0, "max_ms": 7.0}
    assert doc["latency_at_commit"]["max_ms"] == pytest.approx(
        5 + 1 + 3 + 1.5 + 20 + 0.5 + 2 + 4 + 50, abs=0.01
    )


def test_recorder_is_bounded_and_writes_json(tmp_path: Path) -> None:
    rec = TimingRecorder(max_messages=3)
    rec.stored(_batch(1.0, [0.99, 0.98]))
    rec.stored(_batch(2.0, [1.99, 1.98]))  # would make 4: dropped, and the file says so
    rec.stored(_batch(3.0, [2.99]))
    path = tmp_path / "t.json"
    rec.write(path)
    doc = json.loads(path.read_text())
    assert doc["truncated"] is True and doc["messages"] == 2


def test_recorder_times_collections() -> None:
    rec = TimingRecorder()
    rec.watch_gc()
    try:
        gc.collect()
    finally:
        rec.unwatch_gc()
    assert [g for _, _, g in rec.gc_pauses] == [2]
    assert rec._on_gc not in gc.callbacks


def test_percentile_interpolates() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
