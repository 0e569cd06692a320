"""TimeShift in real Lightning Trainers, on a compressed grid (one hour of the series = 0.3 s) and a
simulated GPU that draws 300 W while a step computes and 30 W otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_energy import EnergyMonitor, TimeShift
from tests.helpers.compressed_grid import (
    BUSY_W,
    CLEAN_AT,
    DEADLINE_H,
    HOUR_S,
    IDLE_W,
    busy_gpu,
    compressed_series,
    deadline_after,
)
from tests.helpers.lightning_models import flavour, make_module, regression_data
from tests.helpers.readback import csv_series
from tests.helpers.records import read_record

pl = flavour("lightning.pytorch")
STEPS = 24  # of 20 ms each: about two clean hours


def fit(tmp_path: Path, trace, shifted: bool, name: str) -> tuple[Path, float]:
    """A run of `STEPS` steps on a grid that starts as training does (and, shifted, a deadline
    `DEADLINE_H` hours later): its record and the grid's start."""
    record = tmp_path / f"{name}.jsonl"
    module = make_module(pl, step_sleep_s=0.02)
    step = module.training_step

    def computing(batch, batch_idx):
        trace.switch(BUSY_W)
        try:
            return step(batch, batch_idx)
        finally:
            trace.switch(IDLE_W)

    module.training_step = computing
    start = compressed_series(tmp_path / "grid.csv")
    shift = [TimeShift(deadline=deadline_after(start, DEADLINE_H), mode="pause")] if shifted else []
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.01, record_path=record,
                            carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=4, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
                         logger=pl.loggers.CSVLogger(tmp_path / name),
                         callbacks=[monitor, *shift])  # fmt: skip
    trainer.fit(module, regression_data(8 * STEPS))
    assert trainer.global_step == STEPS
    return record, start


def test_pauses_through_the_dirty_hours_and_emits_less(tmp_path, sim_gpus) -> None:
    trace = busy_gpu(sim_gpus)
    fit(tmp_path, trace, False, "now")
    now_kg = csv_series(tmp_path / "now", "carbon/co2e_kg")[-1][1]

    record, start = fit(tmp_path, trace, True, "shifted")
    deadline = deadline_after(start, DEADLINE_H)
    lines = read_record(record)
    pauses = [x for x in lines if x["type"] == "shift" and x["event"] == "pause"]
    assert pauses, "it never paused"
    first = pauses[0]
    assert first["at"] < start + CLEAN_AT * HOUR_S  # paused in the dirty hours
    clean = start + CLEAN_AT * HOUR_S  # resumed as the clean hours begin (or a little before: the pace may need it)
    assert clean - HOUR_S < first["resume_at"] <= clean + 0.01
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["time"] < deadline.timestamp()
    shifted_kg = csv_series(tmp_path / "shifted", "carbon/co2e_kg")[-1][1]
    assert shifted_kg < now_kg
    paused = csv_series(tmp_path / "shifted", "carbon/paused_s")
    assert paused[-1][1] == pytest.approx(first["resume_at"] - first["at"], abs=0.02) and paused[-1][1] > 0.5 * HOUR_S
    saved = csv_series(tmp_path / "shifted", "carbon/saved_kg")[-1][1]
    assert saved > 0
