"""Review of checkpoints and resume: defects found, each pinned here."""

from __future__ import annotations

import pytest

from energy_core.accounting.figures import RunTotals
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetRun
from energy_core.options import MeasureOptions
from energy_core.shift.run import TimeShiftRun, _State
from energy_core.target.rule import TargetRule
from energy_core.target.run import Evaluation, TargetRun
from energy_core.tracker import EnergyTracker

TOTALS = RunTotals({"gpu": 3.6e6}, samples=4).to_state()
SHIFT = _State(1.7e9, 0.1, 0.2, [(1.7e9, 1.7e9 + 10, 0.1)], 5.0).to_state()
EVALUATION = Evaluation(3, 0.5, 0.1, 0.01, 10.0).to_state()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"bogus": 1.0}, "unknown keys \\['bogus'\\]"),  # was taken, the key ignored
        ({"version": True}, "version True"),  # True == 1 passed the version check
    ],
)
def test_a_foreign_energy_state_is_refused(change, field) -> None:
    with pytest.raises(ValueError, match=field):
        EnergyTracker().load_state_dict({**TOTALS, **change})


def test_an_empty_energy_state_is_refused_not_taken_as_zero() -> None:
    with pytest.raises(ValueError, match="version"):
        EnergyTracker().load_state_dict({})


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"origin": "1700000000"}, "origin"),  # a string was float()-ed into a figure
        ({"paused_s": True}, "paused_s"),  # a bool was taken as 1 s
        ({"paused_s": 1e300}, "paused_s"),  # huge figures were logged as carbon/paused_s
        ({"co2e_at_origin": 1e300}, "co2e_at_origin"),
        ({"idle_kwh": 1e300}, "idle_kwh"),
        ({"stretches": [[0.0, 1e300, 1e300]]}, "stretches"),
        ({"resume_s": "5"}, "resume_s"),
        ({"bogus": 1}, "unknown keys \\['bogus'\\]"),
    ],
)
def test_a_damaged_time_shift_state_names_the_field(change, field) -> None:
    run = TimeShiftRun(deadline="2030-01-01T00:00:00+00:00")
    with pytest.raises(ValueError, match=f"time shift state.*{field}"):
        run.load_state_dict({"shift": {**SHIFT, **change}})
    with pytest.raises(ValueError, match="time shift state"):
        run.load_state_dict({"shift": []})  # not a mapping: was a fresh plan, silently
    with pytest.raises(ValueError, match="unknown keys"):
        run.load_state_dict({"shift": SHIFT, "extra": 1})
    run.load_state_dict({"shift": SHIFT})  # the same state, undamaged, is taken


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ([1, 2], "stored target state must be a mapping"),  # was "cannot convert dictionary update sequence"
        ("abc", "stored target state must be a mapping"),
        ({"reached": {**EVALUATION, "kwh": 1e300}}, "kwh"),  # a huge kWh made every gain per kWh ~0: a stop
        ({"reached": {**EVALUATION, "seconds": 1e300}}, "seconds"),
        ({"reached": {**EVALUATION, "step": 10**400}}, "step"),  # float(step) raised OverflowError in training
        ({"reached": {**EVALUATION, "bogus": 1}}, "unknown keys \\['bogus'\\]"),
        ({"reached": {k: v for k, v in EVALUATION.items() if k != "kwh"}}, "lacks \\['kwh'\\]"),
        ({"history": [], "bogus": 1}, "unknown keys \\['bogus'\\]"),
        ({"tracker": {**TOTALS, "samples": -1}}, "samples"),  # checked at load, not at fit start
    ],
)
def test_a_damaged_target_state_names_the_field(state, field) -> None:
    with pytest.raises((TypeError, ValueError), match=field):
        TargetRun(TargetRule("val_acc", 0.9), MeasureOptions()).load_state_dict(state)


@pytest.mark.parametrize(
    ("state", "field"),
    [
        ({"guard": {"forecast_warned": False, "x": 1}}, "guard has unknown keys \\['x'\\]"),
        ({"guard": {}, "bogus": 1}, "unknown keys \\['bogus'\\]"),
        ({"guard": {}, "tracker": "garbage"}, "mapping"),  # was kept, and checked only at fit start
        ({"guard": {}, "tracker": 0}, "mapping"),  # was ignored: the totals restarted at zero
        ({"guard": {}, "tracker": {**TOTALS, "samples": -1}}, "samples"),
    ],
)
def test_a_damaged_budget_state_names_the_field_when_loaded(state, field) -> None:
    with pytest.raises(ValueError, match=field):
        BudgetRun(BudgetRule(max_kwh=1.0), MeasureOptions()).load_state_dict(state)


def test_two_hf_targets_each_resume_their_own_latest_state(tmp_path, sim_gpus) -> None:
    """HF keeps a list per class when a Trainer has two targets, and every checkpoint appends to it (the
    first entries are the states at train start): the targets took the first entry, and a target
    reached before the resume was reported again."""
    from hf_energy import EnergyCallback, EnergyToTargetCallback, attach
    from tests.doubles.power_traces import Constant
    from tests.doubles.sim_nvml import SimGpu
    from tests.hf_energy.test_target import GPU_W, PERIOD_S, STEPS, trainer_for

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=PERIOD_S))

    def targets() -> tuple[EnergyToTargetCallback, EnergyToTargetCallback]:
        return EnergyToTargetCallback("score", 0.5, stop=False), EnergyToTargetCallback("score", 0.55, stop=False)

    first = trainer_for(tmp_path, [0.3, 0.6], save_strategy="epoch")
    attach(first, EnergyCallback(devices=["gpu"], summary=False), *targets())
    first.train()
    second = trainer_for(tmp_path, [0.7, 0.8, 0.9, 0.95])
    a, b = targets()
    attach(second, EnergyCallback(devices=["gpu"], summary=False), a, b)
    second.train(resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{2 * STEPS}"))
    assert second.state.global_step == 4 * STEPS
    assert [h["step"] for h in second.state.log_history if "target/energy_kwh" in h] == [2 * STEPS]  # not again
    assert a.reached is not None and b.reached is not None
    assert a.reached["target/step"] == b.reached["target/step"] == 2 * STEPS
