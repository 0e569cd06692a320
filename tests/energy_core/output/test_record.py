"""The run record's file: a path another user could have prepared is refused with one message, never
followed or waited on, and training goes on (`energy_core.output.record.RunRecord`, through `EnergyLoop`)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from energy_core import EnergyLoop
from energy_core.notices import Notice
from energy_core.output.record import RunRecord
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
