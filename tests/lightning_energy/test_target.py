"""EnergyToTarget in real Lightning Trainers: a validation metric on a scripted curve, a
simulated GPU at a known power, the figures read back from the CSV logger and the record."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn

from energy_core import J_PER_KWH
from lightning_energy import EnergyBudget, EnergyMonitor, EnergyToTarget
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.lightning_models import flavour, regression_data
from tests.helpers.readback import csv_rows, csv_series
from tests.helpers.records import read_record

GPU_W, PERIOD_S = 300.0, 0.02
COUNTER_J = 2 * PERIOD_S * GPU_W + 1.0  # two counter periods (the fit start's and the evaluation's), 1 J of rounding
STEPS = 8  # optimizer steps per epoch: 64 samples in batches of 8
pl = flavour("lightning.pytorch")


class Scripted(pl.LightningModule):
    """Logs ``score`` = the next value of ``curve`` at the end of each validation of the fit (None: logs nothing)."""

    def __init__(self, curve: list[float | None]) -> None:
        super().__init__()
        self.layer = nn.Linear(8, 1)
        self.curve = curve
        self.evaluations = 0

    def training_step(self, batch, batch_idx):
        time.sleep(0.03)  # a step of a known, realistic length
        return nn.functional.mse_loss(self.layer(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        time.sleep(0.02)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self.log("score", -1.0)  # what an untrained model scores: never the target
            return
        if self.curve[self.evaluations] is not None:
            self.log("score", self.curve[self.evaluations])
        self.evaluations += 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Times(pl.Callback):
    """When hooks ran on this process's clock (the meters' clock: ``perf_counter``)."""

    def __init__(self) -> None:
        self.fit_start = 0.0
        self.val_batches_done: list[float] = []
        self.val_end: list[float] = []

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # after the validation's last batch
        if not trainer.sanity_checking:
            self.val_batches_done.append(time.perf_counter())

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.val_end.append(time.perf_counter())


def fit(tmp_path: Path, callbacks: list, curve: list[float | None], ckpt_path: str | None = None, **kwargs):
    options = {
        "max_epochs": len(curve),
        "accelerator": "cpu",
        "log_every_n_steps": 4,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "enable_progress_bar": False,
        "logger": pl.loggers.CSVLogger(tmp_path / "csv"),
        "callbacks": callbacks,
    }
    options.update(kwargs)
    trainer = pl.Trainer(**options)
    trainer.fit(Scripted(curve), regression_data(64), regression_data(16), ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize(
    "setup", ["monitor first", "target first", pytest.param("target alone", marks=pytest.mark.slow)]
)
def test_energy_to_target_is_the_energy_at_the_end_of_the_evaluation_that_reached_it(tmp_path, sim_gpus, setup):
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02}
    monitor = EnergyMonitor(record_path=record, **measure)
    target = EnergyToTarget(
        "score", 0.9, **(measure if setup != "target alone" else {**measure, "record_path": record})
    )
    inner = {"monitor first": [monitor, target], "target first": [target, monitor], "target alone": [target]}[setup]
    before, after = Times(), Times()
    curve = [0.2, 0.6, 0.93, 0.97, 0.99]
    with pytest.warns(UserWarning, match="Target reached at step 24: score = 0.93, score >= 0.9"):
        trainer = fit(tmp_path, [before, *inner, after], curve)

    assert trainer.global_step == 3 * STEPS  # stopped at the third evaluation, the first to reach 0.9
    (row,) = [r for r in csv_rows(tmp_path / "csv") if r.get("target/energy_kwh")]  # logged once
    kwh, seconds = float(row["target/energy_kwh"]), float(row["target/seconds"])
    assert int(row["step"]) == 3 * STEPS and float(row["target/step"]) == 3 * STEPS
    # from fit start to the end of the third validation, that validation and the two before included
    assert before.val_batches_done[2] - after.fit_start <= seconds <= after.val_end[2] - before.fit_start
    assert kwh * J_PER_KWH == pytest.approx(GPU_W * seconds, abs=COUNTER_J)  # the known power's integral
    assert float(row["target/co2e_kg"]) == pytest.approx(kwh * 475.0 / 1000, rel=1e-3)  # world average, PUE 1
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["event"] for x in lines] == ["evaluation", "evaluation", "reached"]
    assert lines[-1]["energy_kwh"] == kwh and lines[-1]["stop"] is True
    assert target.reached == {"target/energy_kwh": kwh, "target/co2e_kg": pytest.approx(float(row["target/co2e_kg"])),
                              "target/seconds": seconds, "target/step": 24.0}  # fmt: skip
    if setup == "target alone":
        assert read_record(record)[-1]["status"] == "target-stop"


def test_min_gain_per_kwh_stops_at_the_evaluation_where_the_curve_flattens(tmp_path, sim_gpus) -> None:
    """The score stops improving after the fourth validation: whatever an epoch costs on this
    machine, the gain per kWh is 0 at the fifth and far above 1 per kWh before it."""
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    curve = [0.1, 0.5, 0.7, 0.75, 0.75, 0.75, 0.75]
    target = EnergyToTarget("score", None, min_gain_per_kwh=1.0, devices=["gpu"], sample_interval_s=0.02,
                            record_path=record)  # fmt: skip
    with pytest.warns(UserWarning, match="Diminishing returns at step 40: score improved by 0 per kWh"):
        trainer = fit(tmp_path, [target], curve)
    assert trainer.global_step == 5 * STEPS
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["event"] for x in lines] == ["evaluation"] * 4 + ["diminishing"]
    gains = csv_series(tmp_path / "csv", "target/gain_per_kwh")
    assert [step for step, _ in gains] == [16, 24, 32, 40]  # from the second validation on
    for (_, gain), line, earlier in zip(gains, lines[1:], lines):  # the improvement over that evaluation's energy
        assert gain == pytest.approx((line["value"] - earlier["value"]) / (line["energy_kwh"] - earlier["energy_kwh"]))
    assert min(g for _, g in gains[:3]) > 1.0 and gains[3][1] == 0.0


def test_a_validation_that_does_not_log_the_metric_is_a_gap_not_the_previous_value(tmp_path, sim_gpus) -> None:
    # Lightning keeps a metric in callback_metrics until it is logged again: the second validation, which logs
    # no score, read the first's 0.5 as its own, a gain of 0 per kWh that stopped the run at step 16.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    target = EnergyToTarget("score", None, min_gain_per_kwh=1.0)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record)
    with pytest.warns(UserWarning) as caught:
        trainer = fit(tmp_path, [monitor, target], [0.5, None, 0.6, 0.6, 0.7])
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["value"] for x in lines] == [0.5, None, pytest.approx(0.6), pytest.approx(0.6)]  # a gap, then
    # no gain across it; the 4th logs the same value as the 3rd: a figure of its own, a gain of 0 that stops
    assert [x["gain_per_kwh"] for x in lines] == [None, None, None, 0.0]
    assert [x["event"] for x in lines] == ["evaluation"] * 3 + ["diminishing"] and trainer.global_step == 4 * STEPS
    (gap,) = [str(w.message) for w in caught if "not logged" in str(w.message)]  # said once
    assert "'score' was not logged at this evaluation (step 16; logged: energy/val_kwh" in gap


def test_a_target_reached_before_a_resume_is_not_reported_again(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02}
    first = EnergyToTarget("score", 0.5, **measure)
    with pytest.warns(UserWarning, match="Target reached at step 16"):
        fit(tmp_path, [EnergyMonitor(record_path=record, **measure), first, checkpoint], [0.3, 0.6, 0.8],
            enable_checkpointing=True)  # fmt: skip
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["callbacks"][first.state_key]
    assert saved["reached"]["step"] == 16 and saved["reached"]["kwh"] == first.reached["target/energy_kwh"]

    resumed = EnergyToTarget("score", 0.5, **measure)
    monitor = EnergyMonitor(record_path=record, **measure)
    trainer = fit(tmp_path, [monitor, resumed], [0.9, 0.95, 0.97, 0.98], ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 4 * STEPS  # trained on to max_epochs: the resumed run does not stop again
    assert resumed.reached == first.reached  # the figures of the first run, kept
    assert not any(r.get("target/energy_kwh") for r in csv_rows(tmp_path / "csv"))  # the new run's log: not again
    runs = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["event"] for x in runs] == ["evaluation", "reached", "evaluation", "evaluation"]
    assert runs[2]["energy_kwh"] > runs[1]["energy_kwh"]  # the totals continue across the resume


def test_without_a_monitor_the_summary_says_the_target_stopped_the_run(tmp_path, sim_gpus) -> None:
    # Beside a budget that measures for both, the summary said "completed": only the run that measured
    # gave its status, and the target's stop was not the budget's.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02, "record_path": record}
    budget = EnergyBudget(max_kwh=1.0, forecast="off", **measure)
    target = EnergyToTarget("score", 0.9, **measure)
    with pytest.warns(UserWarning, match="Target reached"):
        fit(tmp_path, [budget, target], [0.2, 0.93, 0.97, 0.99])
    assert budget.run.owns and target.run.tracker is budget.run.tracker
    assert [line["status"] for line in read_record(record) if line["type"] == "summary"] == ["target-stop"]


def test_a_target_that_shared_a_budgets_measurement_measures_alone_in_a_later_fit(tmp_path, sim_gpus) -> None:
    # It went on with the budget's tracker: its record and totals, not its own.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02}
    budget = EnergyBudget(max_kwh=1.0, forecast="off", record_path=tmp_path / "budget.jsonl", **measure)
    target = EnergyToTarget("score", 0.99, record_path=tmp_path / "target.jsonl", **measure)
    fit(tmp_path / "first", [budget, target], [0.2])
    fit(tmp_path / "second", [target], [0.3])
    assert [line["type"] for line in read_record(tmp_path / "budget.jsonl")].count("header") == 1
    header = read_record(tmp_path / "target.jsonl")[0]
    assert header["type"] == "header" and header["resumed_from"] is None  # its own, from zero


@pytest.mark.parametrize("order", ["budget first", "target first"])
def test_the_summary_says_which_run_stopped_the_fit_first(tmp_path, sim_gpus, order) -> None:
    # The budget stops at step 2; the validation Lightning runs next reaches the target too. The summary
    # took the status of the run listed first, not of the one that stopped the fit.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    budget = EnergyBudget(max_kwh=GPU_W * 0.1 / J_PER_KWH, forecast="off")
    target = EnergyToTarget("score", 0.9)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record)
    with pytest.warns(UserWarning, match="Energy budget spent"):
        fit(tmp_path, [monitor, *([budget, target] if order == "budget first" else [target, budget])], [0.95] * 3)
    assert target.run.stopped is not None  # reached in that validation, after the budget's stop
    assert [line["status"] for line in read_record(record) if line["type"] == "summary"] == ["budget-stop"]


def test_a_budgets_stop_in_one_fit_is_not_the_status_of_the_next(tmp_path, sim_gpus) -> None:
    # The second fit trains nothing, so the budget never begins again: its guard from the first fit,
    # stopped, gave the second fit's summary "budget-stop" too.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    callbacks = [EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record),
                 EnergyBudget(max_kwh=GPU_W * 0.3 / J_PER_KWH, forecast="off")]  # fmt: skip
    with pytest.warns(UserWarning, match="Energy budget spent"):
        fit(tmp_path / "first", callbacks, [0.1] * 3)
    fit(tmp_path / "second", callbacks, [0.1] * 3, limit_train_batches=0)
    assert [line["status"] for line in read_record(record) if line["type"] == "summary"] == ["budget-stop", "completed"]


def test_a_stop_in_the_last_epoch_min_epochs_needs_is_not_held(tmp_path, sim_gpus) -> None:
    # Lightning counts an epoch once its data runs out: a stop at epoch 0's last batch or in its validation ends
    # the fit there when min_epochs=1. It was read as held: the target's warning said Lightning would keep
    # training, and `stopping` said no, so a time shift could still pause or requeue at a step where the fit ends.
    import warnings

    from lightning_energy.framework import stopping

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    seen: dict[int, bool] = {}

    class StopAtLastBatch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == STEPS:  # the last step of epoch 0
                trainer.should_stop = True
            seen[trainer.global_step] = stopping(trainer)

    trainer = fit(tmp_path / "last", [StopAtLastBatch()], [0.1, 0.1, 0.1], min_epochs=1)
    assert trainer.global_step == STEPS and seen[STEPS] is True and not any(seen[s] for s in range(1, STEPS))

    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fit(tmp_path / "val", [monitor, EnergyToTarget("score", 0.9)], [0.95, 0.96, 0.97], min_epochs=1)
    texts = [str(w.message) for w in caught if "Target reached" in str(w.message)]
    assert trainer.global_step == STEPS  # stopped after epoch 0's validation: min_epochs=1 was met
    assert texts and not any("keeps training until" in text for text in texts), texts
