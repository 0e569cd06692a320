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


def alone(kind: str):
    """A callback of ``kind`` that, with no EnergyCallback begun before it, measures on its own."""
    from datetime import datetime, timedelta, timezone

    from hf_energy import TimeShiftCallback

    measure = {"devices": ["gpu"], "sample_interval_s": 0.02}
    if kind == "budget":
        return EnergyBudgetCallback(max_kwh=1.0, **measure)
    if kind == "target":
        return EnergyToTargetCallback("loss", 0.1, **measure)
    deadline = datetime.now(timezone.utc) + timedelta(days=1)
    return TimeShiftCallback(deadline=deadline, carbon_intensity_g_per_kwh=400.0, **measure)


@pytest.mark.parametrize("kind", ["budget", "target", pytest.param("time_shift", marks=pytest.mark.slow)])
def test_a_run_begun_before_a_refused_duplicate_stops_measuring(tmp_path, sim_gpus, kind) -> None:
    """A duplicate added with HF's ``add_callback`` is refused when training begins: a callback
    before it that had started a sampler of its own stops it then (the conftest guard fails a test
    that leaves one running), and the Trainer can train once the duplicate is gone."""
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    first = alone(kind)
    trainer = make_trainer(tmp_path / "out", SeqData(16), callbacks=[first])
    trainer.add_callback(EnergyCallback(devices=["gpu"]))
    duplicate = EnergyCallback(devices=["gpu"])
    trainer.add_callback(duplicate)
    with pytest.raises(ValueError, match=SECOND):
        trainer.train()
    sampler = first.run.tracker.meter.sampler  # its own: it began before any EnergyCallback
    assert sampler is not None and not sampler.running
    trainer.remove_callback(duplicate)
    trainer.train()
    assert trainer.state.global_step == 4


def test_a_cap_begun_before_a_refused_duplicate_is_restored(tmp_path, sim_gpus) -> None:
    """A duplicate added with HF's ``add_callback`` is refused when training begins: a cap that a
    callback before it had already put in force goes back to the administrator's limit then, not
    at process exit (a notebook goes on after the error)."""
    from hf_energy import PowerCapCallback

    sim = sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02, default_limit_mw=400_000,
                          min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip
    sim.set_limit_mw(sim.gpus[0], 350_000)  # the administrator's limit
    trainer = make_trainer(tmp_path / "out", SeqData(16), callbacks=[PowerCapCallback(watts=250)])
    trainer.add_callback(EnergyCallback(devices=["gpu"]))
    trainer.add_callback(EnergyCallback(devices=["gpu"]))
    with pytest.raises(ValueError, match=SECOND):
        trainer.train()
    assert 250_000 in [mw for _, mw in sim.gpus[0].limit_history]  # the cap was in force...
    assert sim.limit_mw(sim.gpus[0]) == 350_000  # ... and is the administrator's again


def test_a_retry_on_a_new_trainer_ends_what_a_train_that_raised_left(tmp_path, sim_gpus) -> None:
    """A notebook: train() raises (callbacks given, not attached: the Trainer tells no callback), and the
    user trains again with a new Trainer, model and callbacks. The first run's cap stayed in force through the
    retry and after it (the retry took the board for another run's, and left it alone) until the kernel
    exited, and its monitor's sampler ran on, its record without a summary. The retry's start ends both."""
    from transformers import TrainerCallback

    from hf_energy import PowerCapCallback
    from tests.helpers.hf_models import Collator

    sim = sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02, default_limit_mw=400_000,
                          min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip
    sim.set_limit_mw(sim.gpus[0], 350_000)  # the administrator's limit

    class Breaks(Collator):
        def __call__(self, batch):
            raise RuntimeError("a bug in my collator")

    record = tmp_path / "energy.jsonl"
    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=record, summary=False)
    first = make_trainer(tmp_path / "a", SeqData(32), callbacks=[PowerCapCallback(watts=250), monitor])
    first.data_collator = Breaks()
    with pytest.raises(RuntimeError, match="collator"):
        first.train()
    assert sim.limit_mw(sim.gpus[0]) == 250_000  # nothing says the first train() has left

    seen = []

    class See(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(sim.limit_mw(sim.gpus[0]))

    second = make_trainer(tmp_path / "b", SeqData(32), callbacks=[PowerCapCallback(watts=200), See()])
    second.train()
    assert set(seen) == {200_000}  # the retry's own cap, put in force from the administrator's limit
    assert sim.limit_mw(sim.gpus[0]) == 350_000
    [summary] = [line for line in read_record(record) if line["type"] == "summary"]
    assert summary["status"] == "exception: unknown" and summary["step"] == 0
    assert not monitor.tracker.meter.sampler or not monitor.tracker.meter.sampler.running


def test_a_training_nested_in_another_leaves_the_outer_one_running(tmp_path, sim_gpus) -> None:
    """A probe trained from a callback of the outer training, on the same thread: the outer train() is still
    under way, so its measurement and its cap stay (the rule for a retry after an exception took it for one
    that had raised: its summary said 'exception: unknown' mid-run and its cap came off for the rest)."""
    from transformers import TrainerCallback

    from hf_energy import PowerCapCallback

    sim = sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02, default_limit_mw=400_000,
                          min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip
    outer_record, inner_record = tmp_path / "outer.jsonl", tmp_path / "inner.jsonl"
    seen = []

    class Probe(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kwargs):
            if state.epoch is not None and state.epoch < 1.5:  # after the first epoch
                monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=inner_record,
                                         summary=False)  # fmt: skip
                make_trainer(tmp_path / "inner", SeqData(16), num_train_epochs=1, callbacks=[monitor]).train()

        def on_step_end(self, args, state, control, **kwargs):
            seen.append(sim.limit_mw(sim.gpus[0]))

    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=outer_record, summary=False)
    outer = make_trainer(tmp_path / "outer", SeqData(32), callbacks=[PowerCapCallback(watts=250), monitor, Probe()])
    outer.train()
    summaries = [line for line in read_record(outer_record) if line["type"] == "summary"]
    assert [(s["status"], s["step"]) for s in summaries] == [("completed", outer.state.global_step)]
    assert [line["status"] for line in read_record(inner_record) if line["type"] == "summary"] == ["completed"]
    assert set(seen) == {250_000} and len(seen) == outer.state.global_step  # the outer cap, to its last step
    assert sim.limit_mw(sim.gpus[0]) == 400_000
