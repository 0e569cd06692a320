"""energy-report: summaries of run records (complete, truncated, foreign) and power-limit recovery."""

from __future__ import annotations

import json
import os
import time

from energy_core import EnergyTracker
from energy_core.power import journal_path
from energy_core.report import main
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu


def write_record(path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(200.0)))
    tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="FRA", record_path=path)
    tracker.start_fit(0)
    tracker.add_batch(__import__("torch").ones(16, 4))
    time.sleep(0.5)
    tracker.window(1)
    tracker.end_fit(1)
    tracker.close()


def test_summary_of_a_complete_record(tmp_path, sim_gpus, capsys) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, sim_gpus)
    assert main([str(record)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(record.read_text().splitlines()[-1])
    assert "completed" in out and f"{summary['metrics']['energy/total_kwh']:.6g}" in out
    assert "gpu 100.0%" in out and "France (FRA" in out and f"{summary['j_per_sample']:.4g}" in out


def test_truncated_record_is_reported_as_far_as_it_goes(tmp_path, sim_gpus, capsys) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, sim_gpus)
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # crashed while writing the summary
    assert main([str(record)]) == 0
    out = capsys.readouterr().out
    assert "INCOMPLETE" in out and "is not JSON" in out and "figures are those of its last window" in out


def test_missing_empty_and_foreign_files(tmp_path, capsys) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "foreign.jsonl").write_text('{"hello": 1}\nnot json\n')
    assert main([str(tmp_path / "nope.jsonl"), str(tmp_path / "empty.jsonl"), str(tmp_path / "foreign.jsonl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "no such file" in err[0] and "no run record" in err[1] and "no run record" in err[2]


def test_restore_power_limits_from_the_journal(sim_gpus, capsys) -> None:
    sim = sim_gpus(SimGpu("GPU-1", default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000))
    sim._store_limit(sim.gpus[0], 250_000)  # left behind by a killed run
    journal_path().parent.mkdir(parents=True, exist_ok=True)
    journal_path().write_text(
        json.dumps(
            {"GPU-1": {"previous_mw": 330_000, "set_mw": 250_000, "pid": 2**22 + 9, "host": os.uname().nodename}}
        )
    )
    assert main(["--restore-power-limits"]) == 0
    assert "Restored the power limit of GPU-1 to 330 W" in capsys.readouterr().out
    assert sim.limit_mw(sim.gpus[0]) == 330_000
    assert json.loads(journal_path().read_text()) == {}
