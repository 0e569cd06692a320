"""EnergyBudgetCallback in the real HF Trainer, against a simulated GPU at a known power."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from transformers import TrainerCallback

from energy_core import J_PER_KWH
from hf_energy import EnergyBudgetCallback, EnergyCallback, TimeShiftCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import both_vendors_end_to_end
from tests.energy_core.shift.manual_job import BASE, BUSY_W, IDLE_W, STEP_S, STEPS, Job, deadline_in
from tests.helpers.grid_series import write_csv
from tests.helpers.hf_models import JobCollator, SeqData, make_trainer
from tests.helpers.records import read_record

GPU_W = 300.0


@both_vendors_end_to_end
def test_stop_lands_within_one_step_and_saves(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    limit_kwh = GPU_W * 1.0 / J_PER_KWH
    trainer = make_trainer(tmp_path / "out", SeqData(96), sleep_s=0.04, num_train_epochs=3, logging_steps=1)
    budget = EnergyBudgetCallback(max_kwh=limit_kwh, forecast="off")
    attach(trainer, EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False), budget)
    trainer.train()

    stop_step = trainer.state.global_step
    assert stop_step < 36 and budget.guard.stopped is not None  # the crossing, below, says when (load moves it)
    totals = {w["step"]: w["metrics"]["energy/total_kwh"] for w in read_record(record) if w["type"] == "window"}
    crossing = min(step for step, kwh in totals.items() if kwh >= limit_kwh)
    assert stop_step - crossing in (0, 1)
    assert (tmp_path / "out" / f"checkpoint-{stop_step}").is_dir()  # should_save: the last state is kept
    last_log = [h for h in trainer.state.log_history if "loss" in h][-1]
    assert last_log["step"] == stop_step  # should_log, with figures
    # The stop comes from the sampler's watch; the review just after it judges totals read after the flag,
    # which hold the reading that raised it (once in CI a review read them first: 0.025 J were left).
    assert last_log["budget/remaining_kwh"] <= 0.0
    assert any(line["type"] == "budget" and line["event"] == "stop" for line in read_record(record))


def test_forecast_after_the_first_epoch_is_the_rate_so_far_times_the_steps_left(tmp_path, sim_gpus) -> None:
    """The rule's projection of the figures logged at that step, whatever the machine's load
    (how close it lands on a steady run: tests/energy_core/budget/test_guard.py)."""
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(96), sleep_s=0.04, num_train_epochs=3, logging_steps=4)
    budget = EnergyBudgetCallback(max_kwh=1.0, devices=["gpu"], sample_interval_s=0.02)  # alone: measures itself
    attach(trainer, budget)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "budget/forecast_kwh" in h]
    assert logged[0]["step"] == 12  # made once the first epoch has been seen
    for entry in logged:  # spent + spent / step x (36 - step)
        spent = 1.0 - entry["budget/remaining_kwh"]
        assert entry["budget/forecast_kwh"] == pytest.approx(spent * 36 / entry["step"], rel=1e-6)
    assert all("budget/remaining_kwh" in h for h in trainer.state.log_history if "loss" in h)


def test_one_long_epoch_forecasts_after_a_tenth_of_the_steps(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(800), sleep_s=0.0, num_train_epochs=1, logging_steps=5)
    budget = EnergyBudgetCallback(max_kwh=1.0, devices=["gpu"], sample_interval_s=0.02)
    attach(trainer, budget)
    trainer.train()
    steps = [h["step"] for h in trainer.state.log_history if "budget/forecast_kwh" in h]
    assert steps[0] == 10  # 10% of the 100 steps, not the epoch's end


def test_resumed_run_with_a_spent_budget_stops_after_its_first_step(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    out = tmp_path / "out"
    first = make_trainer(out, SeqData(96), sleep_s=0.03, num_train_epochs=1, save_strategy="epoch")
    energy = attach(first, EnergyCallback(devices=["gpu"], summary=False), EnergyBudgetCallback(max_kwh=1.0))
    first.train()
    spent = energy.tracker.totals()["energy/total_kwh"]

    second = make_trainer(out, SeqData(96), sleep_s=0.03, num_train_epochs=2)
    attach(second, EnergyCallback(devices=["gpu"], summary=False), EnergyBudgetCallback(max_kwh=0.5 * spent))
    second.train(resume_from_checkpoint=str(out / "checkpoint-12"))
    assert second.state.global_step == 13  # the HF Trainer checks for a stop only after a step


def test_a_resumed_run_forecasts_only_after_an_epoch_of_its_own(tmp_path, sim_gpus) -> None:
    # Resumed after its first epoch (state.epoch 1.0), the budget projected the run at the first logging
    # step, from one step and the fit's start-up: forecast="stop" could end a run that fits its budget.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    out = tmp_path / "out"
    first = make_trainer(out, SeqData(96), sleep_s=0.02, num_train_epochs=1, save_strategy="epoch")
    attach(first, EnergyBudgetCallback(max_kwh=1.0, devices=["gpu"]))
    first.train()

    second = make_trainer(out, SeqData(96), sleep_s=0.02, num_train_epochs=3, logging_steps=1)
    attach(second, EnergyBudgetCallback(max_kwh=1.0, devices=["gpu"], sample_interval_s=0.02))
    second.train(resume_from_checkpoint=str(out / "checkpoint-12"))
    logged = [h for h in second.state.log_history if "budget/forecast_kwh" in h and h["step"] > 12]  # this fit's
    assert logged[0]["step"] == 24  # an epoch of this fit (12 steps) seen, not one step after the resume
    for entry in logged:  # spent + the resumed fit's rate x steps left (the checkpoint's energy not in the rate)
        spent, step = 1.0 - entry["budget/remaining_kwh"], entry["step"]
        assert -1e-15 <= entry["budget/forecast_kwh"] - spent <= spent * (36 - step) / (step - 12) + 1e-15


@pytest.mark.parametrize(
    "attached", [True, pytest.param(False, marks=pytest.mark.slow)], ids=["attach", "callbacks"]
)  # 4-7 s each
def test_a_budget_keeps_working_after_a_resume_that_re_creates_the_callbacks(tmp_path, sim_gpus, attached) -> None:
    # With restore_callback_states_from_checkpoint=True HF re-creates the callbacks from the checkpoint and drops
    # the ones given; the registry still returned the dropped monitor, whose tracker never started, so the
    # budget never began: 72 of 72 steps and 3,443 J against a 700 J budget.
    from hf_energy.registry import EnergyCallbacks

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    out, record = tmp_path / "out", tmp_path / "energy.jsonl"

    def callbacks(max_kwh: float):
        monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False)
        return monitor, EnergyBudgetCallback(max_kwh=max_kwh, forecast="off")

    first = make_trainer(out, SeqData(96), sleep_s=0.04, num_train_epochs=1, logging_steps=1, save_strategy="epoch")
    attach(first, *callbacks(1.0))
    first.train()
    # The budget the checkpoint holds (HF re-creates it from these args): what the first run spent and 150 J more,
    # half a second at 300 W (the 60 steps left take 2.4 s at least: their collator sleeps).
    state_file = out / "checkpoint-12" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    spent = state["stateful_callbacks"]["EnergyCallback"]["attributes"]["energy_state"]["energy_j"]["gpu"]
    limit_kwh = (spent + 150.0) / J_PER_KWH
    state["stateful_callbacks"]["EnergyBudgetCallback"]["args"]["max_kwh"] = limit_kwh
    state_file.write_text(json.dumps(state))

    given = callbacks(1.0)  # dropped by HF, in favour of re-created ones
    second = make_trainer(
        out, SeqData(96), sleep_s=0.04, num_train_epochs=6, logging_steps=1,
        restore_callback_states_from_checkpoint=True, callbacks=None if attached else list(given),
    )  # fmt: skip
    if attached:
        attach(second, *given)
    second.train(resume_from_checkpoint=str(out / "checkpoint-12"))

    # (re-created in the order of trainer_state.json's sorted keys: the budget before the monitor)
    [budget, monitor] = [
        cb for cb in second.callback_handler.callbacks if isinstance(cb, (EnergyCallback, EnergyBudgetCallback))
    ]
    assert monitor is not given[0] and budget is not given[1]  # HF re-created both
    stop_step = second.state.global_step
    assert stop_step < 72
    windows = {w["step"]: w["metrics"]["energy/total_kwh"] for w in read_record(record) if w["type"] == "window"}
    crossing = min(step for step, kwh in windows.items() if step > 12 and kwh >= limit_kwh)
    assert stop_step - crossing in (0, 1)
    assert budget.tracker is monitor.tracker and budget.guard is not None and budget.guard.stopped is not None
    assert EnergyCallbacks.of(second.model).first(EnergyCallback) is monitor


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a limit"),
        ({"max_kwh": -2}, "max_kwh"),
        ({"max_co2e_kg": 0}, "max_co2e_kg"),
        ({"max_kwh": 1, "forecast": "never"}, "forecast must be one of"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EnergyBudgetCallback(**kwargs)


@pytest.mark.parametrize("monitor", [True, False], ids=["monitor", "alone"])
@pytest.mark.parametrize("order", ["budget-first", "shift-first"])
def test_a_budget_spent_while_paused_ends_the_pause_and_no_step_runs_after_it(
    sim_gpus, monkeypatch, tmp_path, order, monitor
) -> None:
    """Listed before the time shift, the budget checked before the pause; spent during it, it stopped
    training only at the next step's end: 4 steps and 0.053 kWh against a 0.05 kWh budget. Without
    a monitor, each measured on its own tracker: the pause never ended on the budget."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    measure: dict[str, Any] = {"devices": ["gpu"], "sample_interval_s": 60, "carbon_intensity_series": str(job.series)}
    budget = EnergyBudgetCallback(max_kwh=0.05, **({} if monitor else measure))
    shift = TimeShiftCallback(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W, **({} if monitor else measure))
    callbacks: list[Any] = [budget, shift] if order == "budget-first" else [shift, budget]
    if monitor:
        callbacks.insert(0, EnergyCallback(**measure, summary=False))
    # else the tracker the budget binds (a time shift acts after it)
    tracker = job.reads(callbacks[0].tracker if monitor else job.own_tracker(budget.run), shift.run)
    trainer = make_trainer(tmp_path / "out", SeqData(8 * STEPS), max_steps=STEPS, logging_steps=10)
    trainer.data_collator = JobCollator(job)
    attach(trainer, *callbacks)
    trainer.train()
    assert budget.run.tracker is shift.run.tracker is tracker  # one measurement, which both read
    assert trainer.state.global_step == 3 and budget.guard.stopped is not None
    crossed = 3 * STEP_S + (0.05 * J_PER_KWH - BUSY_W * 3 * STEP_S) / IDLE_W
    assert job.step_times[2] < crossed  # the pause came after the third step, and no step after it


class StopAsked(TrainerCallback):
    """Whether a stop was asked by the time each step's optimizer stepped (HF runs a step it has begun)."""

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.seen.append(control.should_training_stop)
        return control


@pytest.mark.parametrize("order", ["budget-first", "shift-first"])
def test_a_budget_spent_during_the_wait_at_the_start_stops_training_there(sim_gpus, monkeypatch, tmp_path, order):
    """The time shift waits at the first step's beginning for the clean hours at 2 h; 60 W idle spends a
    0.05 kWh budget 50 min in. The wait ended there, but training was asked to stop only after the
    first step, by the budget's own check: the stop was not taken where the budget was spent."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    energy = EnergyCallback(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series),
                            summary=False)  # fmt: skip
    budget = EnergyBudgetCallback(max_kwh=0.05)
    shift = TimeShiftCallback(deadline=deadline_in(6), mode="wait", idle_w=IDLE_W, expected_duration_s=STEPS * STEP_S)
    job.reads(energy.tracker, shift.run)
    trainer = make_trainer(tmp_path / "out", SeqData(8 * STEPS), max_steps=STEPS, logging_steps=10)
    attach(trainer, energy, *([budget, shift] if order == "budget-first" else [shift, budget]))
    probe = StopAsked()
    trainer.add_callback(probe)
    trainer.train()
    crossed = 0.05 * J_PER_KWH / IDLE_W
    assert crossed <= job.clock.now < crossed + 120  # the wait ended at the budget
    assert budget.guard.stopped is not None and "at step 0:" in budget.guard.stopped.reason
    # the HF Trainer runs the step it has begun (it checks for a stop after it): stopped before its work
    assert probe.seen == [True] and trainer.state.global_step == 1


@pytest.mark.parametrize("order", ["budget-first", "shift-first"])
def test_no_pause_begins_at_the_step_a_forecast_stops_the_run(sim_gpus, monkeypatch, tmp_path, order) -> None:
    # The grid turns dirty at step 20 (HF collates a batch ahead: 21 steps of the job's clock), where the
    # budget's first forecast stops the run. Listed first, the time shift paused for 1.8 h before it.
    job = Job(sim_gpus, monkeypatch, tmp_path)
    write_csv(
        job.series, [(BASE, 80.0), (BASE + timedelta(seconds=21 * STEP_S), 500.0), (BASE + timedelta(hours=2), 80.0)]
    )
    energy = EnergyCallback(
        devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series), summary=False
    )
    energy.tracker.meter.clock = job.clock
    job.loop = SimpleNamespace(tracker=energy.tracker)
    budget = EnergyBudgetCallback(max_kwh=0.3, forecast="stop")
    shift = TimeShiftCallback(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    shift.run.sleep = job.idle
    trainer = make_trainer(tmp_path / "out", SeqData(8 * STEPS), max_steps=STEPS, logging_steps=10)
    trainer.data_collator = JobCollator(job)
    attach(trainer, energy, *([budget, shift] if order == "budget-first" else [shift, budget]))
    trainer.train()
    assert trainer.state.global_step == 20 and budget.guard.stopped is not None
    assert energy.tracker.link.paused_s == 0


def test_a_second_train_is_held_to_a_budget_the_first_spent(tmp_path, sim_gpus) -> None:
    # The budget began only while it had no guard: the first train()'s stopped guard stayed, and a second train()
    # on the same callbacks ran all its steps unbudgeted, its summary 'completed' (Lightning stops it at once).
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    trainer = make_trainer(tmp_path / "out", SeqData(96), sleep_s=0.03, num_train_epochs=2, logging_steps=1)
    budget = EnergyBudgetCallback(max_kwh=GPU_W * 0.3 / J_PER_KWH, forecast="off")
    attach(trainer, EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False), budget)
    trainer.train()
    assert 0 < trainer.state.global_step < 24
    trainer.train()  # the totals carry over to a later training of the same callbacks: the budget is spent
    assert trainer.state.global_step <= 1
    assert [line["status"] for line in read_record(record) if line["type"] == "summary"] == ["budget-stop"] * 2


@pytest.mark.parametrize(
    ("logging", "expected"),
    [({"logging_steps": 7}, 7), ({"logging_strategy": "epoch"}, 50), ({"logging_strategy": "no"}, 50)],
)
def test_a_job_decides_at_logging_steps_or_every_50_where_none_are_logged(tmp_path, logging, expected) -> None:
    """With more than one process, a budget reviews (and a time shift plans) only at these steps:
    the epoch's end alone would let a one-epoch run spend its whole epoch."""
    from transformers import TrainingArguments

    from hf_energy.framework import decision_every

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[], **logging)
    state = SimpleNamespace(logging_steps=args.logging_steps)  # what the Trainer resolves a ratio into
    assert decision_every(args, state) == expected
