"""EnergyBudget in real Lightning Trainers, against a simulated GPU at a known power."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from energy_core import J_PER_KWH
from energy_core.devices.source import COUNTER_UPDATE_S
from energy_core.integration import UNLOGGED_DECIDE_EVERY
from lightning_energy import EnergyBudget, EnergyMonitor, TimeShift
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.energy_core.shift.manual_job import BASE, BUSY_W, HOUR, IDLE_W, STEP_S, STEPS, Job, deadline_in
from tests.helpers.grid_series import write_csv
from tests.helpers.lightning_models import at_train_start, flavour, make_module, regression_data
from tests.helpers.readback import csv_rows, csv_series
from tests.helpers.records import read_record

GPU_W = 300.0
pl = flavour("lightning.pytorch")


def fit(tmp_path: Path, callbacks: list, ckpt_path: str | None = None, **kwargs) -> object:
    options = {
        "max_epochs": 3,
        "accelerator": "cpu",
        "log_every_n_steps": 1,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "limit_val_batches": 0,
        "logger": pl.loggers.CSVLogger(tmp_path / "csv"),
        "callbacks": callbacks,
    }
    options.update(kwargs)
    trainer = pl.Trainer(**options)
    trainer.fit(make_module(pl, step_sleep_s=0.03), regression_data(240), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    ("sim_gpus", "with_monitor"),
    [("nvml", True), ("nvml", False), pytest.param("amdsmi", True, marks=pytest.mark.slow)],  # AMD end to end: slow
    ids=["nvml-beside-monitor", "nvml-alone", "amdsmi-beside-monitor"],
    indirect=["sim_gpus"],
)
def test_stop_lands_within_one_step_of_crossing(tmp_path, sim_gpus, with_monitor) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    limit_kwh = GPU_W * 1.2 / J_PER_KWH  # about 40 steps of 30 ms at 300 W
    record = tmp_path / "energy.jsonl"
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record)
    budget = EnergyBudget(
        max_kwh=limit_kwh,
        forecast="off",
        devices=["gpu"],
        sample_interval_s=0.02,
        record_path=None if with_monitor else record,
    )
    with pytest.warns(UserWarning, match="Energy budget spent at step"):
        trainer = fit(tmp_path, [monitor, budget] if with_monitor else [budget])
    assert budget.guard.stopped is not None
    stop_step = trainer.global_step
    assert stop_step < 90  # before the 90 steps of 3 epochs; the crossing and overshoot below say exactly when
    if with_monitor:  # the monitor logged the total at every step: find the step that crossed
        totals = {w["step"]: w["metrics"]["energy/total_kwh"] for w in read_record(record) if w["type"] == "window"}
        crossing = min(step for step, kwh in totals.items() if kwh >= limit_kwh)
        assert stop_step - crossing in (0, 1)
        assert monitor.tracker.meter.sampler is not None and len(monitor.tracker.meter.sampler.listeners) == 0
    summary = read_record(record)[-1]
    assert summary["type"] == "summary"
    overshoot_j = (summary["metrics"]["energy/total_kwh"] - limit_kwh) * J_PER_KWH
    assert -1.0 <= overshoot_j <= GPU_W * 0.15  # at most a step, a sample and the loop's end (1 J: interpolation)
    [stop] = [line for line in read_record(record) if line["type"] == "budget" and line["event"] == "stop"]
    measured = stop["metrics"]  # each figure with its bound: the true energy at the stop lies within it
    assert limit_kwh <= measured["energy/total_kwh"] + measured["energy/total_kwh_err"]
    # the model's counter period (0.1 s) at up to twice the power at the end, and the slice since the last reading
    assert 0 < measured["energy/total_kwh_err"] <= 2 * GPU_W * (COUNTER_UPDATE_S + 0.02) / J_PER_KWH
    assert measured["carbon/co2e_kg_err"] == pytest.approx(
        measured["carbon/co2e_kg"] * measured["energy/total_kwh_err"] / measured["energy/total_kwh"], rel=1e-6
    )  # a fixed intensity: the energy's relative bound
    remaining = csv_series(tmp_path / "csv", "budget/remaining_kwh")
    assert 0 < remaining[0][1] < limit_kwh and remaining[-1][1] < remaining[0][1]  # logged from the first step on


@pytest.mark.slow  # the rule's projection is unit-tested (test_guard) and run in HF by default
def test_forecast_after_the_first_epoch_is_the_rate_so_far_times_the_steps_left(tmp_path, sim_gpus) -> None:
    """How close a forecast lands depends on how steady the steps are (exact on a steady run:
    tests/energy_core/budget/test_guard.py); here, in a real fit on a machine of any load, it must be the rule's
    projection of the figures logged at that step."""
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    budget = EnergyBudget(max_kwh=1.0, forecast="warn", devices=["gpu"], sample_interval_s=0.02)
    trainer = fit(tmp_path, [budget], log_every_n_steps=5)
    assert trainer.global_step == 90
    rows = [r for r in csv_rows(tmp_path / "csv") if r.get("budget/forecast_kwh")]
    assert int(rows[0]["step"]) == 30  # made once the first epoch has been seen, not before
    for row in rows:  # re-projected as the run goes: spent + spent / step x (90 - step)
        spent, step = 1.0 - float(row["budget/remaining_kwh"]), int(row["step"])
        assert float(row["budget/forecast_kwh"]) == pytest.approx(spent * 90 / step, rel=1e-6)
    assert budget.guard.stopped is None and not budget.guard.forecast_warned


def test_forecast_stop_ends_a_hopeless_run_early(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    projected_kwh = GPU_W * 90 * 0.03 / J_PER_KWH  # 90 steps of at least 30 ms
    # At the first epoch's review the forecast is 3x the energy so far: over 0.9 x projected whatever the pace,
    # while the limit itself is reached there only if a step takes over 81 ms.
    budget = EnergyBudget(max_kwh=0.9 * projected_kwh, forecast="stop", devices=["gpu"], sample_interval_s=0.02)
    with pytest.warns(UserWarning, match="projected to use"):
        trainer = fit(tmp_path, [budget], log_every_n_steps=5)
    assert trainer.global_step == 30  # at the first epoch's review, before the limit itself
    assert budget.tracker.totals()["energy/total_kwh"] < 0.9 * projected_kwh


def test_forecast_warn_warns_once_and_trains_on(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    projected_kwh = GPU_W * 90 * 0.03 / J_PER_KWH
    budget = EnergyBudget(max_kwh=0.9 * projected_kwh, forecast="warn", devices=["gpu"], sample_interval_s=0.02)
    with pytest.warns(UserWarning) as caught:
        trainer = fit(tmp_path, [budget], log_every_n_steps=5)
    texts = [str(w.message) for w in caught]
    assert sum("projected to use" in t for t in texts) == 1
    assert any("Energy budget spent" in t for t in texts)  # and the limit itself still stops it
    assert 30 < trainer.global_step < 90  # past the review that warned (81 at 30 ms a step; fewer when slower)


def test_min_epochs_wins_and_the_warning_says_so(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    budget = EnergyBudget(max_kwh=GPU_W * 0.3 / J_PER_KWH, forecast="off", devices=["gpu"], sample_interval_s=0.02)
    with pytest.warns(UserWarning, match="min_epochs=2 are reached"):
        trainer = fit(tmp_path, [budget], min_epochs=2)
    assert trainer.current_epoch == 2  # Lightning ran the minimum, then honoured the stop


def test_resumed_run_keeps_the_spent_energy_and_stops_at_once(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02)
    first = fit(tmp_path, [monitor, EnergyBudget(max_kwh=1.0), checkpoint], max_epochs=1, enable_checkpointing=True)
    spent = monitor.tracker.totals()["energy/total_kwh"]
    assert first.global_step == 30

    budget = EnergyBudget(max_kwh=0.5 * spent)  # already spent in the checkpoint
    monitor2 = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02)
    loaded: list[float] = []
    began = time.perf_counter()
    seen = at_train_start(pl, lambda: loaded.append(monitor2.tracker.resumed_kwh))
    with pytest.warns(UserWarning, match="already spent before this run started"):
        second = fit(tmp_path, [monitor2, budget, seen], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    second_s = time.perf_counter() - began
    assert second.global_step == 30  # not a single step more
    # The checkpoint was saved at the epoch's end, before the first fit's teardown; the second fit adds its own
    # seconds at 300 W (at most the test's clock around it), within a counter period at each end.
    assert 0.5 * spent <= loaded[0] <= spent + GPU_W * 2 * 0.02 / J_PER_KWH  # (within a counter update at each end)
    total = monitor2.tracker.totals()["energy/total_kwh"]
    assert loaded[0] <= total <= loaded[0] + GPU_W * (second_s + 2 * 0.02) / J_PER_KWH


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs a limit"),
        ({"max_kwh": 0}, r"max_kwh must be in \(0, 277777777777777.78\]"),
        ({"max_kwh": -1.0}, "max_kwh"),
        ({"max_kwh": float("inf")}, "max_kwh"),
        ({"max_co2e_kg": float("nan")}, "max_co2e_kg"),
        ({"max_kwh": 1.0, "forecast": "maybe"}, "forecast must be one of 'warn', 'stop', 'off'"),
        ({"max_kwh": 1.0, "pue": 0.2}, "pue"),
    ],
)
def test_bad_budget_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        EnergyBudget(**kwargs)


def test_carbon_limit_is_converted_with_the_monitors_factor(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, carbon_intensity_g_per_kwh=500.0, pue=1.5)
    limit_kg = GPU_W * 1.0 / J_PER_KWH * 1.5 * 500.0 / 1000  # the CO2e of one second at 300 W
    budget = EnergyBudget(max_co2e_kg=limit_kg, forecast="off")
    with pytest.warns(UserWarning, match="Energy budget spent"):
        fit(tmp_path, [monitor, budget])
    assert budget.guard.limit_kwh == pytest.approx(GPU_W * 1.0 / J_PER_KWH)
    assert monitor.tracker.totals()["carbon/co2e_kg"] == pytest.approx(limit_kg, rel=0.15)


def test_the_budget_reviews_at_the_monitors_cadence(tmp_path, sim_gpus) -> None:
    # The monitor overrides the trainer's log_every_n_steps (50); the budget reviewed at the trainer's
    # 50 and so judged figures at steps where the monitor logged none.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=7)
    budget = EnergyBudget(max_kwh=1.0, forecast="off")
    fit(tmp_path, [monitor, budget], log_every_n_steps=50, max_epochs=1)
    reviewed = [step for step, _ in csv_series(tmp_path / "csv", "budget/remaining_kwh")]
    assert reviewed == [7, 14, 21, 28, 30]  # every 7 steps, then the epoch's end


def test_log_every_n_steps_0_logs_the_budget_and_the_time_shift_at_epoch_ends_only(tmp_path, sim_gpus) -> None:
    # Lightning's 0 (no logging within an epoch) held for the monitor only: the budget and the time
    # shift beside it logged, and the budget reviewed (a sum over the ranks, in a job), at every step.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    now = datetime.now(timezone.utc)
    budget = EnergyBudget(max_kwh=1.0, forecast="off")
    shift = TimeShift(deadline=now + timedelta(days=1), forecast=[(now - timedelta(hours=1), 100.0)])
    reviews: list[int] = []
    review = budget.run.review
    budget.run.review = lambda step, epochs: (reviews.append(step), review(step, epochs))[1]
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, carbon_intensity_g_per_kwh=100)
    fit(tmp_path, [monitor, budget, shift], log_every_n_steps=0, max_epochs=2)
    for key in ("energy/total_kwh", "budget/remaining_kwh", "carbon/paused_s"):
        assert [step for step, _ in csv_series(tmp_path / "csv", key)] == [30, 60], key
    assert reviews == [30, UNLOGGED_DECIDE_EVERY, 60]  # decisions go on, unlogged, every 50 steps


def test_a_resumed_run_forecasts_only_after_an_epoch_of_its_own(tmp_path, sim_gpus) -> None:
    # Resumed after its first epoch, the budget projected the run at the review after the first step
    # (current_epoch was already 1), from that step and the fit's start-up: a rate many times the
    # steady one, so forecast="stop" could end a run that fits its budget.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    fit(tmp_path, [EnergyBudget(max_kwh=1.0, devices=["gpu"]), checkpoint], max_epochs=1, enable_checkpointing=True)
    budget = EnergyBudget(max_kwh=1.0, forecast="warn", devices=["gpu"], sample_interval_s=0.02)
    trainer = fit(tmp_path / "resumed", [budget], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 90
    rows = [r for r in csv_rows(tmp_path / "resumed" / "csv") if r.get("budget/forecast_kwh")]
    assert int(rows[0]["step"]) == 60  # an epoch of this fit (30 steps) seen, not one step after the resume
    for row in rows:  # spent + the resumed fit's rate x steps left
        spent, step = 1.0 - float(row["budget/remaining_kwh"]), int(row["step"])
        left = float(row["budget/forecast_kwh"]) - spent  # the checkpoint's energy is not in the rate
        assert -1e-15 <= left <= spent * (90 - step) / (step - 30) + 1e-15


def fit_on_the_job(job: Job, budget: EnergyBudget, shift: TimeShift, order: str, monitor: bool) -> tuple[object, Any]:
    """A Lightning fit of `STEPS` steps, each a step of ``job`` (its manual clock), with ``budget`` and
    ``shift`` in ``order``, beside a monitor or measuring alone (then the budget measures, the time shift
    after it shares its tracker); the trainer and that tracker."""
    callbacks: list[Any] = [budget, shift] if order == "budget-first" else [shift, budget]
    if monitor:
        callbacks.insert(
            0, EnergyMonitor(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series))
        )
    # else the tracker the budget binds (a time shift acts after it)
    tracker = job.reads(callbacks[0].tracker if monitor else job.own_tracker(budget.run), shift.run)
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=10, logger=False, callbacks=callbacks,
                         enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
                         limit_val_batches=0)  # fmt: skip
    trainer.fit(job.lightning_module(pl), regression_data(8 * STEPS))
    assert budget.run.tracker is shift.run.tracker is tracker  # one measurement, which both read
    return trainer, tracker


ORDERS = pytest.mark.parametrize("order", ["budget-first", "shift-first"])
MONITOR = pytest.mark.parametrize("monitor", [True, False], ids=["monitor", "alone"])


@ORDERS
@MONITOR
def test_a_wait_at_train_start_is_left_out_of_the_forecast_in_either_order(
    sim_gpus, monkeypatch, tmp_path, order, monitor
) -> None:
    """150 steps at 300 W (0.45 kWh) after a time shift's wait at 60 W fit a 0.65 kWh budget. Listed
    before the budget, the shift waited before the budget began, and the wait's idle energy was
    spread over the steps: a forecast of 1.35 kWh stopped the run at step 20. Without a monitor,
    each measured on its own tracker and never saw the other's pauses: the same stop."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    measure: dict[str, Any] = {} if monitor else {"devices": ["gpu"], "sample_interval_s": 60,
                                                  "carbon_intensity_series": str(job.series)}  # fmt: skip
    budget = EnergyBudget(max_kwh=0.65, forecast="stop", **measure)
    shift = TimeShift(
        deadline=deadline_in(6), mode="wait", idle_w=IDLE_W, expected_duration_s=STEPS * STEP_S, **measure
    )
    trainer, tracker = fit_on_the_job(job, budget, shift, order, monitor)
    assert job.step_times[0] >= HOUR  # it waited for a cleaner hour
    assert trainer.global_step == STEPS
    total = tracker.totals()["energy/total_kwh"]
    assert budget.guard.forecast_kwh == pytest.approx(total, rel=0.05) and total < 0.65


@ORDERS
@MONITOR
def test_a_budget_spent_while_paused_ends_the_pause_and_no_step_runs_after_it(
    sim_gpus, monkeypatch, tmp_path, order, monitor
) -> None:
    """Listed before the time shift, the budget checked before the pause; spent during it, it stopped
    the run only at the next step's end: 4 steps and 0.053 kWh against a 0.05 kWh budget. Without
    a monitor, the pause never ended on the budget: 0.13 kWh."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    measure: dict[str, Any] = {} if monitor else {"devices": ["gpu"], "sample_interval_s": 60,
                                                  "carbon_intensity_series": str(job.series)}  # fmt: skip
    budget = EnergyBudget(max_kwh=0.05, **measure)
    shift = TimeShift(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W, **measure)
    with pytest.warns(UserWarning, match="Energy budget spent"):
        _, tracker = fit_on_the_job(job, budget, shift, order, monitor)
    trained = 3 * STEP_S  # the steps before the pause (as EnergyLoop's test_review_together)
    crossed = trained + (0.05 * J_PER_KWH - BUSY_W * trained) / IDLE_W
    assert len(job.step_times) == 3 and job.step_times[-1] < crossed  # no step after the crossing
    assert budget.guard.stopped is not None
    assert tracker.totals()["energy/total_kwh"] == pytest.approx(0.05, rel=0.01)


@ORDERS
@MONITOR
def test_a_budget_spent_during_the_wait_at_train_start_stops_before_the_first_step(
    sim_gpus, monkeypatch, tmp_path, order, monitor
) -> None:
    """The time shift waits at train start for the clean hours at 2 h; 60 W idle spends a 0.05 kWh budget
    50 min in. The wait ended there, but no stop was asked: a step trained past the spent budget."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    measure: dict[str, Any] = {} if monitor else {"devices": ["gpu"], "sample_interval_s": 60,
                                                  "carbon_intensity_series": str(job.series)}  # fmt: skip
    budget = EnergyBudget(max_kwh=0.05, **measure)
    shift = TimeShift(
        deadline=deadline_in(6), mode="wait", idle_w=IDLE_W, expected_duration_s=STEPS * STEP_S, **measure
    )
    with pytest.warns(UserWarning, match="Energy budget spent at step 0") as warned:
        trainer, tracker = fit_on_the_job(job, budget, shift, order, monitor)
    assert trainer.global_step == 0 and job.step_times == []  # no step after the wait
    assert budget.guard.stopped is not None
    assert len([w for w in warned if "Energy budget spent" in str(w.message)]) == 1  # the budget's stop, told once
    assert tracker.totals()["energy/total_kwh"] == pytest.approx(0.05, rel=0.01)


def test_a_budget_and_a_time_shift_without_a_monitor_measure_once(tmp_path, sim_gpus) -> None:
    # Each measured alone, on a tracker of its own: two samplers, and two runs in one record for one fit.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    now = datetime.now(timezone.utc)
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02, "record_path": tmp_path / "energy.jsonl"}
    budget = EnergyBudget(max_kwh=1.0, forecast="off", **measure)
    shift = TimeShift(deadline=now + timedelta(days=1), forecast=[(now - timedelta(hours=1), 100.0)], **measure)
    fit(tmp_path, [shift, budget], max_epochs=1, max_steps=5)
    assert budget.run.tracker is shift.run.tracker and budget.run.owns and not shift.run.owns  # the shift acts after
    lines = read_record(tmp_path / "energy.jsonl")
    assert [line["type"] for line in lines].count("header") == 1 and lines[-1]["type"] == "summary"
    assert len({line["run"] for line in lines}) == 1


@ORDERS
def test_no_pause_begins_at_the_step_a_forecast_stops_the_run(sim_gpus, monkeypatch, tmp_path, order) -> None:
    # The grid turns dirty at step 20, where the budget's first forecast stops the run. Listed first,
    # the time shift paused for 1.8 h (0.17 kWh instead of 0.06) before the budget stopped it.
    job = Job(sim_gpus, monkeypatch, tmp_path)
    write_csv(
        job.series,
        [(BASE, 80.0), (BASE + timedelta(seconds=20 * STEP_S), 500.0), (BASE + 2 * timedelta(hours=1), 80.0)],
    )
    budget = EnergyBudget(max_kwh=0.3, forecast="stop")
    shift = TimeShift(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    with pytest.warns(UserWarning, match="Energy forecast at step 20"):
        trainer, tracker = fit_on_the_job(job, budget, shift, order, monitor=True)
    assert trainer.global_step == 20 and tracker.link.paused_s == 0


def test_the_budget_moves_before_the_time_shift_and_every_callback_is_set_up_once(tmp_path, sim_gpus) -> None:
    # The budget moves itself (earlier only) from its setup hook, while Lightning loops over the list:
    # a callback moved later there would make the loop skip the one after it.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    calls: list[str] = []

    class Counting(pl.Callback):
        def setup(self, trainer, pl_module, stage):
            calls.append("setup")

    now = datetime.now(timezone.utc)
    budget = EnergyBudget(max_kwh=1.0, forecast="off", devices=["gpu"])
    shift = TimeShift(deadline=now + timedelta(days=1), forecast=[(now - timedelta(hours=1), 100.0)])
    trainer = fit(tmp_path, [shift, Counting(), budget], max_epochs=1, max_steps=5)
    assert calls == ["setup"]
    energy = [cb for cb in trainer.callbacks if isinstance(cb, (EnergyBudget, TimeShift))]
    assert energy == [budget, shift]


def test_a_stop_at_the_start_of_a_resumed_fit_is_held_by_min_epochs(tmp_path, sim_gpus) -> None:
    # A fit resumed from an epoch's end keeps the checkpoint's is_last_batch until its first batch: the epoch not
    # yet run was counted done, so a budget spent at train start said nothing of min_epochs, and `stopping` said
    # the fit ended there, while Lightning trained the epoch that min_epochs=2 still needed.
    import warnings

    from lightning_energy.framework import stopping

    def short_fit(callbacks: list, **kwargs: Any) -> Any:
        options = {"max_epochs": 3, "accelerator": "cpu", "log_every_n_steps": 1, "enable_model_summary": False,
                   "enable_progress_bar": False, "limit_val_batches": 0, "logger": False, "callbacks": callbacks,
                   "enable_checkpointing": False, **kwargs}  # fmt: skip
        ckpt_path = options.pop("ckpt_path", None)
        trainer = pl.Trainer(**options)
        trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(80), ckpt_path=ckpt_path)
        return trainer

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02)
    short_fit([monitor, EnergyBudget(max_kwh=1.0), checkpoint], max_epochs=1, enable_checkpointing=True)
    spent = monitor.tracker.totals()["energy/total_kwh"]
    seen = {}

    class Look(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            trainer.should_stop = True
            seen["at start"] = stopping(trainer)
            trainer.should_stop = False

    budget = EnergyBudget(max_kwh=0.5 * spent)  # spent already in the checkpoint: it stops at train start
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = short_fit([Look(), EnergyMonitor(devices=["gpu"], sample_interval_s=0.02), budget],
                           ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"), min_epochs=2)  # fmt: skip
    assert second.global_step == 20  # Lightning trained epoch 1: min_epochs=2 was not met at the stop
    texts = [str(w.message) for w in caught if "already spent" in str(w.message)]
    assert texts and all("keeps training until min_epochs=2" in text for text in texts), texts
    assert seen["at start"] is False
