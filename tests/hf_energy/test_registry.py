"""One energy callback of each kind per HF Trainer: a duplicate is refused with one message, before
any figure, however it was added (callbacks=[...], attach, add_callback)."""

from __future__ import annotations

import pytest

from energy_core import J_PER_KWH
from hf_energy import EnergyBudgetCallback, EnergyCallback, EnergyToTargetCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.hf_models import SeqData, make_trainer
from tests.helpers.records import read_record

GPU_W = 300.0
TWICE = "given to the Trainer twice"
SECOND = "already has a EnergyCallback"


def test_attach_twice_is_refused_and_the_epochs_stay_right(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(48), sleep_s=0.05)
    energy = EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl")
    attach(trainer, energy)
    with pytest.raises(ValueError, match=TWICE):
        attach(trainer, energy)
    assert [cb for cb in trainer.callback_handler.callbacks if cb is energy] == [energy]
    trainer.train()

    # Each epoch's row is that epoch's energy: 300 W over its seconds, within two counter periods.
    epochs = [line for line in read_record(tmp_path / "energy.jsonl") if line["type"] == "epoch"]
    logged = [h["energy/epoch_kwh"] for h in trainer.state.log_history if "energy/epoch_kwh" in h]
    assert len(epochs) == len(logged) == 2
    for line, kwh in zip(epochs, logged):
        assert kwh == pytest.approx(line["metrics"]["energy/epoch_kwh"])
        assert kwh * J_PER_KWH == pytest.approx(GPU_W * line["seconds"], abs=GPU_W * 2 * 0.02)


def test_a_duplicate_in_the_trainers_callbacks_is_refused_at_construction(tmp_path) -> None:
    energy = EnergyCallback(devices=["cpu"])
    with pytest.raises(ValueError, match=TWICE):
        make_trainer(tmp_path / "a", SeqData(16), callbacks=[energy, energy])
    with pytest.raises(ValueError, match=SECOND):
        make_trainer(tmp_path / "b", SeqData(16), callbacks=[EnergyCallback(devices=["cpu"]), energy])
    trainer = make_trainer(tmp_path / "c", SeqData(16), callbacks=[energy])
    with pytest.raises(ValueError, match=TWICE + r".*not both"):
        attach(trainer, energy)  # given to the Trainer and attached too


def test_a_second_callback_added_later_is_refused_before_training(tmp_path) -> None:
    trainer = make_trainer(tmp_path / "out", SeqData(16))
    attach(trainer, EnergyCallback(devices=["cpu"]))
    with pytest.raises(ValueError, match=SECOND):
        attach(trainer, EnergyCallback(devices=["cpu"]))
    trainer.add_callback(EnergyCallback(devices=["cpu"]))  # HF's own API: found when training begins
    with pytest.raises(ValueError, match=SECOND):
        trainer.train()


def test_different_jobs_of_one_kind_are_allowed(tmp_path) -> None:
    trainer = make_trainer(tmp_path / "out", SeqData(16))
    loss, accuracy = EnergyToTargetCallback("loss", 0.1), EnergyToTargetCallback("accuracy", 0.9)
    attach(trainer, EnergyCallback(devices=["cpu"]), loss, accuracy)  # a target per metric, as in Lightning
    with pytest.raises(ValueError, match="already has a EnergyToTargetCallback"):
        attach(trainer, EnergyToTargetCallback("loss", 0.1))
    with pytest.raises(ValueError, match="already has a EnergyBudgetCallback"):
        attach(trainer, EnergyBudgetCallback(max_kwh=1.0), EnergyBudgetCallback(max_kwh=2.0))
