"""TimeShift in real Lightning Trainers, on a compressed grid (one hour of the series = 0.5 s) and a
simulated GPU that draws 300 W while a step computes and 30 W otherwise."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from lightning_energy import EnergyMonitor, TimeShift
from tests.energy_core.shift import manual_job
from tests.helpers.compressed_grid import (
    BUSY_W,
    CLEAN_AT,
    DEADLINE_H,
    HOUR_S,
    IDLE_W,
    busy_gpu,
    compressed_series,
    deadline_after,
    ends_by,
)
from tests.helpers.lightning_models import flavour, make_module, regression_data
from tests.helpers.readback import csv_series
from tests.helpers.records import read_record

pl = flavour("lightning.pytorch")
STEPS = 30  # of 20 ms each: under two clean hours
RESTART_S, REQUEUE_DEADLINE_H = (
    1.0,
    40,
)  # a restart builds a new Trainer: seconds, and hours of this grid  # of 20 ms each: about two clean hours


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
    # idle_w: the simulated board's, so that a short job finds the wait for the clean hours worth its idle cost
    shift = [TimeShift(deadline=deadline_after(start, DEADLINE_H), mode="pause", idle_w=IDLE_W)] if shifted else []
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record,
                            carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=3, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
                         logger=pl.loggers.CSVLogger(tmp_path / name),
                         callbacks=[monitor, *shift])  # fmt: skip
    trainer.fit(module, regression_data(8 * STEPS))
    assert trainer.global_step == STEPS
    return record, start


@pytest.mark.slow  # 5 s of real time on a compressed grid; the manual-clock Lightning tests run by default
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
    clean = (
        start + CLEAN_AT * HOUR_S
    )  # resumed by the time the clean hours begin (before, if they cannot hold the work)
    assert first["at"] + HOUR_S < first["resume_at"] <= clean + 0.01
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert ends_by(first["plan"], deadline)  # planned to end in time (the pace it then keeps is the machine's)
    shifted_kg = csv_series(tmp_path / "shifted", "carbon/co2e_kg")[-1][1]
    assert shifted_kg < now_kg
    paused = csv_series(tmp_path / "shifted", "carbon/paused_s")
    # every pause counts (a plan made on a busy machine's slower pace pauses again once the pace is better known),
    # each for as long as it lasted: at least its plan (a busy machine wakes late, by as much as it is busy)
    resumed = [x for x in lines if x["type"] == "shift" and x["event"] == "resume"]
    assert len(resumed) == len(pauses)
    assert paused[-1][1] == pytest.approx(sum(r["paused_s"] for r in resumed), rel=1e-6)
    assert all(r["paused_s"] >= p["resume_at"] - p["at"] - 0.01 for p, r in zip(pauses, resumed, strict=True))
    assert paused[-1][1] > 0.5 * HOUR_S
    saved = csv_series(tmp_path / "shifted", "carbon/saved_kg")[-1][1]
    assert saved > 0
    assert resumed[0]["idle_w"] == pytest.approx(IDLE_W, rel=0.05)  # measured while paused (the first: longest)


@pytest.mark.slow  # two trainers, a requeue's wait between them: several seconds
def test_requeue_exits_75_and_resumes_from_its_checkpoint(tmp_path, sim_gpus) -> None:
    busy_gpu(sim_gpus)  # idle power throughout: this test is about the requeue, not the figures
    record = tmp_path / "energy.jsonl"
    checkpoint = tmp_path / "time_shift.ckpt"

    def trainer_and_shift(began: float) -> tuple:
        shift = TimeShift(deadline=deadline_after(began, REQUEUE_DEADLINE_H), mode="requeue", resume_s=RESTART_S,
                          checkpoint_path=checkpoint)  # fmt: skip
        monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record,
                                carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
        trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=3, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False, logger=False,
                             callbacks=[monitor, shift])  # fmt: skip
        return trainer, shift

    module = make_module(pl, step_sleep_s=0.02)
    began = compressed_series(tmp_path / "grid.csv")
    trainer, shift = trainer_and_shift(began)
    assert shift.resume_from is None
    with pytest.raises(SystemExit) as exited:
        trainer.fit(module, regression_data(8 * STEPS), ckpt_path=shift.resume_from)
    assert exited.value.code == 75 and checkpoint.is_file()
    (requeue,) = [x for x in read_record(record) if x["type"] == "shift" and x["event"] == "requeue"]
    time.sleep(max(0.0, requeue["resume_at"] + RESTART_S - time.time()))  # started then; its restart takes resume_s

    trainer, shift = trainer_and_shift(began)
    assert shift.resume_from == str(checkpoint)
    trainer.fit(make_module(pl, step_sleep_s=0.02), regression_data(8 * STEPS), ckpt_path=shift.resume_from)
    assert trainer.global_step == STEPS and not checkpoint.exists()  # done: the requeue checkpoint is gone
    lines = read_record(record)
    (restart,) = [x for x in lines if x["type"] == "shift" and x["event"] == "resume" and "away_s" in x]
    assert restart["step"] == requeue["step"]
    assert lines[-1]["type"] == "summary" and lines[-1]["time_shift"]["paused_s"] >= restart["away_s"]


@pytest.mark.slow  # two fits, a requeue's wait between them: several seconds
def test_the_same_callback_fits_again_after_a_requeue_that_only_stopped_training(tmp_path, sim_gpus) -> None:
    """``exit_code=None`` only stops training, inviting a second fit in the same process (a notebook)
    with the same callback: it used to stay requeued from the first fit, and the second fit was
    requeued again in on_train_start and trained nothing."""
    busy_gpu(sim_gpus)
    record, checkpoint = tmp_path / "energy.jsonl", tmp_path / "time_shift.ckpt"
    began = compressed_series(tmp_path / "grid.csv")
    shift = TimeShift(deadline=deadline_after(began, REQUEUE_DEADLINE_H), mode="requeue", resume_s=RESTART_S,
                      exit_code=None, checkpoint_path=checkpoint)  # fmt: skip

    def fit() -> Any:
        monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record,
                                carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
        trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=3, enable_checkpointing=False,
                             enable_model_summary=False, enable_progress_bar=False, logger=False,
                             callbacks=[monitor, shift])  # fmt: skip
        trainer.fit(make_module(pl, step_sleep_s=0.02), regression_data(8 * STEPS), ckpt_path=shift.resume_from)
        return trainer

    first = fit()  # no SystemExit: training stops
    (requeue,) = [x for x in read_record(record) if x["type"] == "shift" and x["event"] == "requeue"]
    assert first.global_step == requeue["step"] < STEPS and shift.run.requeued_until == requeue["resume_at"]
    time.sleep(max(0.0, requeue["resume_at"] + RESTART_S - time.time()))  # started then; its restart takes resume_s
    second = fit()
    assert second.global_step == STEPS and shift.run.requeued_until is None and not checkpoint.exists()
    events = [x["event"] for x in read_record(record) if x["type"] == "shift"]
    assert events.count("requeue") == 1 and events[-1] != "requeue"


class StopAsked(pl.Callback):
    """What EarlyStopping or a budget does: ``should_stop`` at step 2 (here, while min_steps trains on)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 2:
            trainer.should_stop = True


@pytest.mark.parametrize("held_by", ["min_steps", "min_epochs"])
def test_a_stop_that_min_steps_overrides_does_not_end_the_time_shifts_decisions(
    sim_gpus, monkeypatch, tmp_path, held_by
):
    # Lightning leaves should_stop set while min_steps (or min_epochs: to the end of the last epoch it
    # needs) keeps training: the time shift, which takes no decision at a step where training stops,
    # took none for the rest of the fit (no pause at all).
    job = manual_job.Job(sim_gpus, monkeypatch, tmp_path)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series))
    shift = TimeShift(deadline=manual_job.deadline_in(6), mode="pause", idle_w=manual_job.IDLE_W)
    job.reads(monitor.tracker, shift.run)
    held = {"min_steps": manual_job.STEPS} if held_by == "min_steps" else {"min_epochs": 1, "max_epochs": 1}
    trainer = pl.Trainer(max_steps=manual_job.STEPS, **held, accelerator="cpu", logger=False,
                         callbacks=[monitor, shift, StopAsked()], enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(job.lightning_module(pl), regression_data(8 * manual_job.STEPS))
    assert trainer.global_step == manual_job.STEPS and trainer.should_stop
    assert monitor.tracker.link.paused_s > manual_job.HOUR  # through the dirty hours, as without the stop request


def test_a_plan_is_made_at_a_logging_step_never_on_a_step_that_logs_nothing(sim_gpus, monkeypatch, tmp_path):
    # A logging step's review asks for a plan; the check that made it ran first, so the plan (the planner,
    # the record's line: 40-115 ms) fell on the next step, which logs nothing.
    job = manual_job.Job(sim_gpus, monkeypatch, tmp_path, hours=[400.0, 380.0] * 3)  # nothing worth a pause
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series),
                            record_path=str(job.record))  # fmt: skip
    shift = TimeShift(deadline=manual_job.deadline_in(6), mode="pause", idle_w=manual_job.IDLE_W)
    job.reads(monitor.tracker, shift.run)
    job.slows_down_after(12)  # the work left moves, and the run plans again
    trainer = pl.Trainer(max_steps=32, accelerator="cpu", logger=False, log_every_n_steps=10,
                         callbacks=[monitor, shift], enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(job.lightning_module(pl), regression_data(8 * 32))
    manual_job.assert_plans_at_logging_steps(read_record(job.record), every=10)
