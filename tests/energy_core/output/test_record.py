"""The run record's file: a path another user could have prepared is refused with one message, never
followed or waited on, and training goes on (`energy_core.output.record.RunRecord`, through `EnergyLoop`)."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from energy_core import EnergyLoop
from energy_core.notices import Notice
from energy_core.output.record import RunRecord, read_runs
from tests.helpers.records import read_record


def run_loop(record_path: Path) -> tuple[list[str], dict[str, float]]:
    """A short loop with this record path (in a thread, so that a hang fails the test instead of
    hanging it); its notices and last metrics."""
    notices: list[Notice] = []
    result: dict[str, float] = {}

    def loop() -> None:
        with EnergyLoop(
            devices=["cpu"], sample_interval_s=0.01, record_path=record_path, log_every_n_steps=2, notify=notices.append
        ) as energy:
            sampler = energy.tracker.meter.sampler
            while sampler is not None and len(sampler.buffer) < 3:  # readings to give the windows figures
                time.sleep(0.01)
            for _ in range(4):
                energy.step(np.zeros((8, 1)))
        result.update(energy.last_metrics)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the loop hung on its record"
    return [n.text for n in notices if "run record" in n.text], result


def test_a_link_at_the_record_path_is_refused_not_followed(tmp_path) -> None:
    # Root appended its record to /root/victim3.conf through record_path -> victim.
    victim = tmp_path / "victim.conf"
    victim.write_text("setting = 1\n")
    link = tmp_path / "shared" / "energy.jsonl"
    link.parent.mkdir()
    link.symlink_to(victim)
    texts, metrics = run_loop(link)
    assert victim.read_text() == "setting = 1\n"
    assert len(texts) == 1 and "it is a symbolic link, which is not followed" in texts[0]
    assert "training continues" in texts[0] and metrics["energy/total_kwh"] >= 0  # the figures go on


@pytest.mark.parametrize("reader", [False, True])
def test_a_fifo_at_the_record_path_is_refused_without_waiting(tmp_path, reader) -> None:
    # A FIFO at record_path hung EnergyLoop.start() for good (with no reader; with one, lines went to it).
    fifo = tmp_path / "energy.jsonl"
    os.mkfifo(fifo)
    held = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK) if reader else None
    try:
        texts, metrics = run_loop(fifo)
        assert len(texts) == 1 and "it is not a regular file (a FIFO" in texts[0]
        assert metrics["energy/total_kwh"] >= 0
        if held is not None:
            assert os.read(held, 4096) == b""  # nothing was written into it
    finally:
        if held is not None:
            os.close(held)


def test_a_regular_file_is_appended_to(tmp_path) -> None:
    path = tmp_path / "energy.jsonl"
    path.write_text('{"type": "header", "run": "earlier", "time": 1.0}\n')
    record = RunRecord(path)
    record.new_run()
    record.write("window", step=1)
    record.close()
    lines = read_record(path)
    assert [line["run"] for line in lines][0] == "earlier" and lines[1]["type"] == "window"
    assert record.take_notice() is None


# ----------------------------------------------------------------------------- reading
def test_damaged_lines_give_a_few_notes_however_many_there_are(tmp_path) -> None:
    # 100,000 lines "x" gave 100,000 notes (18 s and 140 MB in energy-report, an 8 MB page).
    header = json.dumps({"type": "header", "run": "r1", "time": 1.0})
    window = json.dumps({"type": "window", "run": "r1", "time": 2.0, "step": 1})
    stranger = json.dumps({"type": "window", "run": "other", "time": 3.0, "step": 1})
    path = tmp_path / "energy.jsonl"
    path.write_text("\n".join([header, *["x"] * 20_000, *[stranger] * 2, "[1, 2]", window, stranger]) + "\n")
    runs, notes = read_runs(path)
    assert [[line["type"] for line in run] for run in runs] == [["header", "window"]]
    assert notes == [
        "line 2 is not JSON (a crash mid-write?): skipped",
        "line 3 is not JSON (a crash mid-write?): skipped",
        "line 4 is not JSON (a crash mid-write?): skipped",
        "19,997 more lines skipped for the same reason as line 4, the last of them line 20001",
        "line 20002 belongs to a run whose header is not in this file: skipped",
        "line 20003 belongs to a run whose header is not in this file: skipped",
        "line 20006 belongs to a run whose header is not in this file: skipped",
        "line 20004 is not a run-record line: skipped",
    ]


def test_notes_of_a_damaged_file_stay_small_whatever_its_length(tmp_path) -> None:
    path = tmp_path / "energy.jsonl"
    path.write_text(json.dumps({"type": "header", "run": "r1"}) + "\n" + "x\n" * 5_000)
    tracemalloc.start()
    try:
        runs, notes = read_runs(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(runs) == 1 and len(notes) == 4 and notes[-1].startswith("4,997 more lines")
    assert peak < 50_000  # a note of some 100 bytes per line before: 0.5 MB here, 1.3 GB for 2.5 M lines


def test_a_record_that_is_a_link_is_not_read(tmp_path) -> None:
    # energy-report followed shared/energy.jsonl -> a private record and put its text in the report.
    private = tmp_path / "private.jsonl"
    private.write_text(json.dumps({"type": "header", "run": "r1", "argv": ["--api-key=SECRET"]}) + "\n")
    link = tmp_path / "energy.jsonl"
    link.symlink_to(private)
    with pytest.raises(OSError) as refused:
        read_runs(link)
    assert refused.value.strerror == "it is a symbolic link, which is not followed"
    assert refused.value.errno == errno.ELOOP and refused.value.filename == str(link)
