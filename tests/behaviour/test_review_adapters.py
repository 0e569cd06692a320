"""Review of the framework adapters (Trainer reuse, stand-alone stages, logging strategies): defects found,
each pinned here."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from energy_core import J_PER_KWH
from hf_energy import EnergyCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.hf_models import SeqData, make_trainer
from tests.helpers.records import read_record

GPU_W = 300.0


def energy(tmp_path) -> EnergyCallback:
    return EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl", summary=False)


def test_hf_evaluate_and_predict_before_any_train_are_measured(tmp_path, sim_gpus) -> None:
    # The forward pre-hook that sees inference begin was put on the model only in on_train_begin: an evaluate()
    # or predict() before train() logged no energy/val_kwh or energy/predict_kwh and wrote nothing to the record.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(32), sleep_s=0.02, eval_data=SeqData(32))
    callback = attach(trainer, energy(tmp_path))

    metrics = trainer.evaluate()
    assert metrics["energy/val_kwh"] > 0
    assert trainer.state.log_history[-1]["energy/val_kwh"] == metrics["energy/val_kwh"]
    trainer.predict(SeqData(32))
    assert trainer.state.log_history[-1]["energy/predict_kwh"] == callback.last_metrics["energy/predict_kwh"] > 0

    stages = [line for line in read_record(tmp_path / "energy.jsonl") if line["type"] == "stage"]
    assert [s["stage"] for s in stages] == ["val", "predict"]
    for stage in stages:  # four batches behind a 20 ms collator each: well above the counter's 20 ms steps
        assert stage["kwh"] * J_PER_KWH == pytest.approx(GPU_W * stage["seconds"], abs=2 * 0.02 * GPU_W)


@pytest.mark.parametrize("when", ["before", "after"])
def test_hf_a_forward_of_the_users_own_is_no_evaluation(tmp_path, sim_gpus, when) -> None:
    # A forward in eval mode outside the attached Trainer's train/evaluate/predict (a generate() after training)
    # opened an inference run that nothing ended: a sampler left running and a record header with no summary.
    import torch

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(32), eval_data=SeqData(16), num_train_epochs=1)
    attach(trainer, energy(tmp_path))

    def forward_of_their_own() -> None:
        model = trainer.model
        assert model is not None
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.tensor([[1, 2, 3]]))

    if when == "before":
        trainer.evaluate()  # the hook is on the model from here on
        forward_of_their_own()
    trainer.train()
    if when == "after":
        forward_of_their_own()
    lines = read_record(tmp_path / "energy.jsonl")
    assert [x["type"] for x in lines].count("header") == [x["type"] for x in lines].count("summary")
    assert not any(t.name == "energy-sampler" and t.is_alive() for t in threading.enumerate())


def test_hf_model_init_moves_the_counting_hook_to_the_model_trained(tmp_path, sim_gpus) -> None:
    # An evaluate() before train() now hooks the model: a Trainer with model_init then trains a new model, which
    # must be counted (the hook moves), not the one built at construction.
    from transformers import Trainer, TrainingArguments

    from tests.helpers.hf_models import Collator, tiny_gpt2

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    callback = energy(tmp_path)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=8, logging_steps=2,
        save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(
        model_init=tiny_gpt2,
        args=args,
        train_dataset=SeqData(32),
        eval_dataset=SeqData(16),
        data_collator=Collator(0.01),
    )
    attach(trainer, callback)
    trainer.evaluate()  # hooks the model built at construction
    trainer.train()  # on a new one from model_init
    windows = [line for line in read_record(tmp_path / "energy.jsonl") if line["type"] == "window"]
    assert sum(w["samples"] for w in windows) == 32


def test_hf_epoch_end_log_keeps_the_trainers_own_loss_line(tmp_path, sim_gpus) -> None:
    # With logging_strategy="epoch" and an evaluation at the epoch's last step, the callback's own epoch line
    # (Trainer.log) cleared control.should_log, and the Trainer's epoch-end loss line was never written.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    options: dict[str, Any] = {
        "eval_strategy": "steps",
        "eval_steps": 4,
        "logging_strategy": "epoch",
        "num_train_epochs": 2,
    }
    plain = make_trainer(tmp_path / "plain", SeqData(64), eval_data=SeqData(16), **options)
    plain.train()
    expected = [h["step"] for h in plain.state.log_history if "loss" in h]
    assert expected == [8, 16]  # the Trainer alone: one loss line per epoch

    trainer = make_trainer(tmp_path / "out", SeqData(64), eval_data=SeqData(16), **options)
    attach(trainer, energy(tmp_path))
    trainer.train()
    history = trainer.state.log_history
    assert [h["step"] for h in history if "loss" in h] == expected
    assert [h["step"] for h in history if "energy/epoch_kwh" in h] == [8, 16]
    assert [h["step"] for h in history if "eval_loss" in h] == [4, 8, 12, 16]


@pytest.mark.parametrize("kind", ["EnergyBudget", "EnergyToTarget"])
def test_lightning_ctrl_c_ends_a_callback_measuring_alone_as_interrupted(tmp_path, sim_gpus, kind) -> None:
    # The monitor, the HF callbacks and EnergyLoop record a Ctrl+C as "interrupted"; a Lightning budget, target or
    # time shift measuring alone recorded "exception: KeyboardInterrupt" (Lightning then exits with SystemExit(1)).
    import lightning.pytorch as pl

    import lightning_energy
    from tests.helpers.lightning_models import make_module, regression_data

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    measure: dict[str, Any] = {"devices": ["gpu"], "sample_interval_s": 0.02, "record_path": tmp_path / "energy.jsonl"}
    if kind == "EnergyBudget":
        callback = lightning_energy.EnergyBudget(max_kwh=1.0, **measure)
    else:
        callback = lightning_energy.EnergyToTarget("val_loss", 0.0, mode="min", **measure)
    module = make_module(pl)
    original = module.training_step

    def interrupted_step(batch, batch_idx):
        if batch_idx == 3:
            raise KeyboardInterrupt
        return original(batch, batch_idx)

    module.training_step = interrupted_step
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, callbacks=[callback], enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=False, limit_val_batches=0,
    )  # fmt: skip
    with pytest.raises(SystemExit):
        trainer.fit(module, regression_data(80))
    summary = read_record(tmp_path / "energy.jsonl")[-1]
    assert (summary["type"], summary["status"]) == ("summary", "interrupted")


def test_lightning_log_every_n_steps_zero_logs_at_epoch_ends_only(tmp_path, sim_gpus) -> None:
    # Lightning's log_every_n_steps=0 turns logging within an epoch off; the monitor took it as 1 and closed a window,
    # wrote a record line and logged every figure at every optimizer step (a sum over ranks at each, in a job).
    import lightning.pytorch as pl

    from lightning_energy import EnergyMonitor
    from tests.helpers.lightning_models import make_module, regression_data
    from tests.helpers.readback import csv_series

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl")
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", log_every_n_steps=0, logger=pl.loggers.CSVLogger(tmp_path / "csv"),
        callbacks=[monitor], enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(80))  # 10 steps an epoch
    lines = read_record(tmp_path / "energy.jsonl")
    assert [x["step"] for x in lines if x["type"] == "window"] == [10, 20]  # the epochs' partial windows
    assert [x["step"] for x in lines if x["type"] == "epoch"] == [10, 20]
    assert [step for step, _ in csv_series(tmp_path / "csv", "energy/total_kwh")] == [10, 20]

    # the monitor's own log_every_n_steps still sets its cadence
    record = tmp_path / "own.jsonl"
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, log_every_n_steps=5, record_path=record)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", log_every_n_steps=0, logger=False, callbacks=[monitor],
        enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
    )  # fmt: skip
    trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(80))
    assert [(x["step"], x["steps"]) for x in read_record(record) if x["type"] == "window"] == [(5, 5), (10, 5)]
