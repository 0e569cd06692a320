"""EnergyToTargetCallback in the real HF Trainer: an evaluation metric on a scripted curve,
a simulated GPU at a known power, the figures read back from ``log_history`` and the record."""

from __future__ import annotations

import json
import time
import warnings

import pytest
from transformers import TrainerCallback

from energy_core import J_PER_KWH
from hf_energy import EnergyBudgetCallback, EnergyCallback, EnergyToTargetCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.hf_models import SeqData, make_trainer
from tests.helpers.records import read_record

GPU_W, PERIOD_S = 300.0, 0.02
COUNTER_J = 2 * PERIOD_S * GPU_W + 1.0
STEPS = 6  # optimizer steps per epoch: 48 sequences in batches of 8


class Times(TrainerCallback):
    """When hooks ran on this process's clock (the meters' clock: ``perf_counter``)."""

    def __init__(self) -> None:
        self.train_begin = 0.0
        self.predicted: list[float] = []  # after each evaluation batch
        self.evaluated: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):
        self.train_begin = time.perf_counter()

    def on_prediction_step(self, args, state, control, **kwargs):
        self.predicted.append(time.perf_counter())

    def on_evaluate(self, args, state, control, **kwargs):
        self.evaluated.append(time.perf_counter())


def scripted(curve: list[float]):
    """``compute_metrics`` giving the next value of ``curve`` as ``score`` at each evaluation."""
    values = iter(curve)
    return lambda prediction: {"score": next(values)}


def trainer_for(tmp_path, curve: list[float], **arguments):
    trainer = make_trainer(tmp_path / "out", SeqData(48), sleep_s=0.03, eval_data=SeqData(16), eval_strategy="epoch",
                           num_train_epochs=len(curve), logging_steps=3, **arguments)  # fmt: skip
    trainer.compute_metrics = scripted(curve)
    return trainer


def test_energy_to_target_is_the_energy_at_the_end_of_the_evaluation_that_reached_it(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    trainer = trainer_for(tmp_path, [0.2, 0.6, 0.93, 0.97])
    before, after = Times(), Times()
    trainer.add_callback(before)
    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, summary=False)
    target = EnergyToTargetCallback("score", 0.9)  # "eval_score", as the Trainer logs it
    attach(trainer, monitor, target)
    trainer.add_callback(after)
    trainer.train()

    assert trainer.state.global_step == 3 * STEPS  # stopped at the third evaluation, the first to reach 0.9
    (entry,) = [h for h in trainer.state.log_history if "target/energy_kwh" in h]  # once, in the evaluation's entry
    assert entry["eval_score"] == 0.93 and entry["step"] == entry["target/step"] == 3 * STEPS
    kwh, seconds = entry["target/energy_kwh"], entry["target/seconds"]
    # from training's start to the end of the third evaluation, that evaluation and the two before included
    last_batch = before.predicted[3 * 2 - 1]  # two evaluation batches per evaluation
    assert last_batch - after.train_begin <= seconds <= after.evaluated[2] - before.train_begin
    assert kwh * J_PER_KWH == pytest.approx(GPU_W * seconds, abs=COUNTER_J)
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [(x["event"], x["metric"], x["value"]) for x in lines] == [
        ("evaluation", "eval_score", 0.2), ("evaluation", "eval_score", 0.6), ("reached", "eval_score", 0.93)
    ]  # fmt: skip
    assert lines[-1]["energy_kwh"] == kwh
    assert (tmp_path / "out" / f"checkpoint-{3 * STEPS}").is_dir()  # the model that reached the target, saved


def test_min_gain_per_kwh_stops_where_the_curve_flattens_and_logs_each_gain(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    trainer = trainer_for(tmp_path, [0.1, 0.5, 0.7, 0.7, 0.7])
    target = EnergyToTargetCallback("eval_score", None, min_gain_per_kwh=1.0, devices=["gpu"], sample_interval_s=0.02,
                                    record_path=record)  # fmt: skip  # alone: it measures itself
    attach(trainer, target)
    trainer.train()
    assert trainer.state.global_step == 4 * STEPS
    gains = [h["target/gain_per_kwh"] for h in trainer.state.log_history if "target/gain_per_kwh" in h]
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [x["event"] for x in lines] == ["evaluation"] * 3 + ["diminishing"]
    for gain, line, earlier in zip(gains, lines[1:], lines):
        assert gain == pytest.approx((line["value"] - earlier["value"]) / (line["energy_kwh"] - earlier["energy_kwh"]))
    assert len(gains) == 3 and min(gains[:2]) > 1.0 and gains[2] == 0.0
    assert read_record(record)[-1]["status"] == "target-stop"


@pytest.mark.parametrize("added", ["attach", pytest.param("callbacks", marks=pytest.mark.slow)])
def test_with_a_dict_of_eval_datasets_only_the_metrics_dataset_entries_are_its_evaluations(
    tmp_path, sim_gpus, added
) -> None:
    # HF logs one entry per dataset (eval_val_* then eval_val_ood_*): the eval_val entry was counted as an
    # evaluation of eval_val_ood_score, a gap between every two, so no gain was ever computed and a false
    # "not logged" warning was given. "val" names a prefix of "val_ood": the longer name is the metric's.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    target = EnergyToTargetCallback("val_ood_score", None, min_gain_per_kwh=0.0, devices=["gpu"],
                                    sample_interval_s=0.02, record_path=record)  # fmt: skip
    trainer = make_trainer(tmp_path / "out", SeqData(48), sleep_s=0.03, eval_data={"val": SeqData(8),
                           "val_ood": SeqData(8)}, eval_strategy="steps", eval_steps=2, max_steps=6, logging_steps=2,
                           callbacks=[target] if added == "callbacks" else None)  # fmt: skip
    trainer.compute_metrics = scripted([9.0, 0.2, 9.0, 0.4, 9.0, 0.5])  # val, val_ood, val, ... in HF's order
    if added == "attach":
        attach(trainer, target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [(x["step"], x["metric"], x["value"]) for x in lines] == [
        (2, "eval_val_ood_score", 0.2), (4, "eval_val_ood_score", 0.4), (6, "eval_val_ood_score", 0.5)
    ]  # fmt: skip
    gains = [x["gain_per_kwh"] for x in lines]
    assert gains[0] is None and gains[1] > 0 and gains[2] > 0 and trainer.state.global_step == 6  # no stop
    for gain, line, earlier in zip(gains[1:], lines[1:], lines):
        assert gain == pytest.approx((line["value"] - earlier["value"]) / (line["energy_kwh"] - earlier["energy_kwh"]))
    entries = [h for h in trainer.state.log_history if "target/gain_per_kwh" in h]
    assert [h["eval_val_ood_score"] for h in entries] == [0.4, 0.5]  # in the metric's own entries
    assert not [w for w in caught if "not logged" in str(w.message)]


@pytest.mark.parametrize("metric", ["eval_val_accuracy", "accuracy"])
def test_with_a_dict_of_eval_datasets_a_metric_no_entry_logs_is_said_once(tmp_path, sim_gpus, metric) -> None:
    # "accuracy" (eval_accuracy) is no dataset's metric: HF names them eval_val_*, eval_test_*
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    trainer = make_trainer(tmp_path / "out", SeqData(16), eval_data={"val": SeqData(8), "test": SeqData(8)},
                           eval_strategy="steps", eval_steps=1, max_steps=2)  # fmt: skip
    attach(trainer, EnergyToTargetCallback(metric, 0.9, devices=["gpu"], sample_interval_s=0.02))
    with pytest.warns(UserWarning) as caught:
        trainer.train()
    (gap,) = [str(w.message) for w in caught if "not logged" in str(w.message)]
    assert f"'eval_{metric.removeprefix('eval_')}' was not logged at this evaluation (step 1; logged: eval_" in gap


def test_a_target_reached_before_a_resume_is_not_reported_again(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    first = trainer_for(tmp_path, [0.3, 0.6], save_strategy="epoch")
    attach(first, EnergyCallback(devices=["gpu"], summary=False), EnergyToTargetCallback("score", 0.5, stop=False))
    first.train()
    reached = [h for h in first.state.log_history if "target/energy_kwh" in h]
    assert [h["step"] for h in reached] == [2 * STEPS]

    second = trainer_for(tmp_path, [0.7, 0.8, 0.9, 0.95])
    target = EnergyToTargetCallback("score", 0.5, stop=False)
    attach(second, EnergyCallback(devices=["gpu"], summary=False), target)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{2 * STEPS}"))
    assert second.state.global_step == 4 * STEPS
    assert [h["step"] for h in second.state.log_history if "target/energy_kwh" in h] == [2 * STEPS]  # the old entry
    assert target.reached == {k: v for k, v in reached[0].items() if k.startswith("target/")}


def test_without_a_monitor_a_resume_that_re_creates_the_callbacks_keeps_the_totals(tmp_path, sim_gpus) -> None:
    # The target measured for both, so only its checkpoint state held the totals; HF re-creates the
    # callbacks in the order of trainer_state.json (the budget first), and the budget, measuring now,
    # started from zero.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    measure = {"devices": ["gpu"], "sample_interval_s": 0.02, "record_path": tmp_path / "energy.jsonl"}
    first = trainer_for(tmp_path, [0.2], save_strategy="epoch")
    target = EnergyToTargetCallback("score", 0.99, **measure)
    attach(first, target, EnergyBudgetCallback(max_kwh=1.0, forecast="off", **measure))
    first.train()
    spent = target.run.tracker.totals()["energy/total_kwh"]
    second = trainer_for(tmp_path, [0.2, 0.3], restore_callback_states_from_checkpoint=True)
    attach(second, EnergyToTargetCallback("score", 0.99, **measure), EnergyBudgetCallback(max_kwh=1.0, **measure))
    second.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-6"))
    header = [line for line in read_record(tmp_path / "energy.jsonl") if line["type"] == "header"][-1]
    assert header["resumed_from"] is not None  # the budget, measuring now, started from zero
    # the checkpoint's totals, carried as the budget, measuring now, stored them (at the epoch's end, before the
    # fit's teardown)
    stored = json.loads((tmp_path / "out" / "checkpoint-6" / "trainer_state.json").read_text())["stateful_callbacks"]
    saved_j = stored["EnergyBudgetCallback"]["attributes"]["budget_state"]["tracker"]["energy_j"]
    assert header["resumed_from"]["energy_j"] == pytest.approx(saved_j)
    assert sum(saved_j.values()) / J_PER_KWH >= 0.5 * spent  # (the target's own figure at the end, read apart)


class ExtraEvaluation(TrainerCallback):
    """A user's extra evaluation of another set, under HF's own ``metric_key_prefix``, at odd steps."""

    def __init__(self, data: SeqData) -> None:
        self.data, self.trainer = data, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % 2 == 1:
            self.trainer.evaluate(self.data, metric_key_prefix="eval_ood")
        return control


def test_an_extra_evaluation_under_its_own_prefix_is_not_the_targets(tmp_path, sim_gpus) -> None:
    # A single eval dataset (eval_score) and a user's evaluate(..., metric_key_prefix="eval_ood"): the
    # eval_ood entries counted as this target's evaluations, each a gap, so no gain was ever computed and a
    # false "not logged" warning was given (the single dataset's prefix was never among those known).
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))
    record = tmp_path / "energy.jsonl"
    target = EnergyToTargetCallback("score", None, min_gain_per_kwh=0.0, devices=["gpu"], sample_interval_s=0.02,
                                    record_path=record)  # fmt: skip
    extra = ExtraEvaluation(SeqData(8))
    trainer = make_trainer(tmp_path / "out", SeqData(48), sleep_s=0.03, eval_data=SeqData(8), eval_strategy="steps",
                           eval_steps=2, max_steps=6, logging_steps=2, callbacks=[extra])  # fmt: skip
    extra.trainer = trainer
    values = iter([9.0, 0.2, 9.0, 0.4, 9.0, 0.5])  # eval_ood at step 1, eval at 2, eval_ood at 3, ...
    trainer.compute_metrics = lambda prediction: {"score": next(values)}
    attach(trainer, target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    lines = [x for x in read_record(record) if x["type"] == "target"]
    assert [(x["step"], x["value"]) for x in lines] == [(2, 0.2), (4, 0.4), (6, 0.5)]
    assert lines[0]["gain_per_kwh"] is None and all(x["gain_per_kwh"] > 0 for x in lines[1:])
    assert not [w for w in caught if "not logged" in str(w.message)]
