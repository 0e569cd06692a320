"""TimeShiftCallback in the real HF Trainer, on a compressed grid (one hour of the series = 0.5 s) and a
simulated GPU that draws 300 W while a step computes and 30 W otherwise; figures read back from
TensorBoard's files and the run record."""

from __future__ import annotations

import time

import pytest
from transformers import TrainerCallback

from hf_energy import EnergyCallback, TimeShiftCallback, attach
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
from tests.helpers.hf_models import SeqData, make_trainer
from tests.helpers.readback import tensorboard_series
from tests.helpers.records import read_record

STEPS = 60  # of 20 ms each: long enough to be worth waiting for, at the idle power assumed (a quarter)
RESTART_S, REQUEUE_DEADLINE_H = 1.0, 60  # a restart builds a new Trainer: seconds, and hours of this grid


class Computing(TrainerCallback):
    """Each step computes for 20 ms at busy power (registered before the energy callbacks)."""

    def __init__(self, trace) -> None:
        self.trace = trace

    def on_step_begin(self, args, state, control, **kwargs):
        self.trace.switch(BUSY_W)
        time.sleep(0.02)
        return control

    def on_step_end(self, args, state, control, **kwargs):
        self.trace.switch(IDLE_W)
        return control


def train(tmp_path, trace, shifted: bool, name: str) -> tuple:
    """A run of `STEPS` steps on a grid that starts as training does (and, shifted, a deadline
    `DEADLINE_H` hours later): its record and the grid's start."""
    record = tmp_path / f"{name}.jsonl"
    trainer = make_trainer(tmp_path / name, SeqData(8 * STEPS), max_steps=STEPS, logging_steps=3,
                           report_to=["tensorboard"])  # fmt: skip
    trainer.add_callback(Computing(trace))
    start = compressed_series(tmp_path / "grid.csv")  # the Trainer is built: the grid starts now
    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False,
                             carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
    shift = [TimeShiftCallback(deadline=deadline_after(start, DEADLINE_H), mode="pause")] if shifted else []
    attach(trainer, monitor, *shift)
    trainer.train()
    assert trainer.state.global_step == STEPS
    return record, start


@pytest.mark.slow  # the second framework's end-to-end run (Lightning's is in the default set)
def test_pauses_through_the_dirty_hours_and_emits_less(tmp_path, sim_gpus) -> None:
    trace = busy_gpu(sim_gpus)
    train(tmp_path, trace, False, "now")
    now_kg = tensorboard_series(tmp_path / "now", "train/carbon/co2e_kg")[-1][1]

    record, start = train(tmp_path, trace, True, "shifted")
    deadline = deadline_after(start, DEADLINE_H)
    lines = read_record(record)
    pauses = [x for x in lines if x["type"] == "shift" and x["event"] == "pause"]
    assert pauses and pauses[0]["at"] < start + CLEAN_AT * HOUR_S
    clean = (
        start + CLEAN_AT * HOUR_S
    )  # resumed by the time the clean hours begin (before, if they cannot hold the work)
    assert pauses[0]["resume_at"] <= clean + 0.01
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert ends_by(pauses[0]["plan"], deadline)  # planned to end in time (the pace it then keeps is the machine's)
    assert tensorboard_series(tmp_path / "shifted", "train/carbon/co2e_kg")[-1][1] < now_kg
    paused = tensorboard_series(tmp_path / "shifted", "train/carbon/paused_s")[-1][1]
    # every pause counts (a plan made on a busy machine's slower pace pauses again once the pace is better known),
    # each for as long as it lasted: at least its plan (a busy machine wakes late, by as much as it is busy)
    resumes = [x for x in lines if x["type"] == "shift" and x["event"] == "resume"]
    assert len(resumes) == len(pauses)
    assert paused == pytest.approx(sum(r["paused_s"] for r in resumes), rel=1e-6)
    assert all(r["paused_s"] >= p["resume_at"] - p["at"] - 0.01 for p, r in zip(pauses, resumes, strict=True))
    assert paused > 0.5 * HOUR_S
    assert tensorboard_series(tmp_path / "shifted", "train/carbon/saved_kg")[-1][1] > 0


@pytest.mark.slow  # two trainers, a requeue's wait between them: several seconds
def test_requeue_saves_exits_75_and_the_next_start_carries_the_plan_on(tmp_path, sim_gpus) -> None:
    from transformers.trainer_utils import get_last_checkpoint

    trace = busy_gpu(sim_gpus)
    record = tmp_path / "energy.jsonl"

    def start(grid_start: float | None) -> tuple:
        trainer = make_trainer(tmp_path / "out", SeqData(8 * STEPS), max_steps=STEPS, logging_steps=3)
        trainer.add_callback(Computing(trace))
        began = grid_start if grid_start is not None else compressed_series(tmp_path / "grid.csv")
        monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False,
                                 carbon_intensity_series=str(tmp_path / "grid.csv"))  # fmt: skip
        shift = TimeShiftCallback(
            deadline=deadline_after(began, REQUEUE_DEADLINE_H), mode="requeue", resume_s=RESTART_S
        )
        attach(trainer, monitor, shift)
        return trainer, began

    trainer, began = start(None)
    with pytest.raises(SystemExit) as exited:
        trainer.train()
    assert exited.value.code == 75
    stopped = trainer.state.global_step
    checkpoint = get_last_checkpoint(str(tmp_path / "out"))
    assert checkpoint is not None and checkpoint.endswith(f"checkpoint-{stopped}")
    (requeue,) = [x for x in read_record(record) if x["type"] == "shift" and x["event"] == "requeue"]
    clean = began + CLEAN_AT * HOUR_S
    assert requeue["step"] == stopped < STEPS
    assert requeue["at"] < requeue["resume_at"] <= clean + 0.01  # by the time the clean hours begin
    time.sleep(max(0.0, requeue["resume_at"] + RESTART_S - time.time()))  # started then; its restart takes resume_s

    trainer, _ = start(began)  # the same grid: the scheduler started the script again
    trainer.train(resume_from_checkpoint=checkpoint)
    assert trainer.state.global_step == STEPS
    lines = read_record(record)
    (restart,) = [x for x in lines if x["type"] == "shift" and x["event"] == "resume" and "away_s" in x]
    assert restart["step"] == stopped and restart["away_s"] >= requeue["resume_at"] - requeue["at"] - 0.01
    summary = lines[-1]
    assert summary["type"] == "summary"
    assert ends_by(requeue["plan"], deadline_after(began, REQUEUE_DEADLINE_H))
    assert summary["time_shift"]["paused_s"] >= restart["away_s"]


@pytest.mark.slow  # 32 real HF steps (10+ s on 2 busy cores); Lightning's twin runs by default
def test_a_plan_is_made_at_a_logging_step_never_on_a_step_that_logs_nothing(sim_gpus, monkeypatch, tmp_path):
    # A logging step's review asks for a plan; the check that made it ran first, so the plan (the planner,
    # the record's line: 40-115 ms) fell on the next step, which logs nothing.
    from tests.energy_core.shift import manual_job
    from tests.helpers.hf_models import JobCollator

    job = manual_job.Job(sim_gpus, monkeypatch, tmp_path, hours=[400.0, 380.0] * 3)  # nothing worth a pause
    energy = EnergyCallback(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series),
                            record_path=str(job.record), summary=False)  # fmt: skip
    shift = TimeShiftCallback(deadline=manual_job.deadline_in(6), mode="pause", idle_w=manual_job.IDLE_W)
    job.reads(energy.tracker, shift.run)
    job.slows_down_after(12)  # the work left moves, and the run plans again
    trainer = make_trainer(tmp_path / "out", SeqData(8 * 32), max_steps=32, logging_steps=10)
    trainer.data_collator = JobCollator(job)
    attach(trainer, energy, shift)
    trainer.train()
    manual_job.assert_plans_at_logging_steps(read_record(job.record), every=10)
