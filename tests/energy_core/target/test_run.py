"""TargetRun on a simulated 300 W GPU driven by a manual clock: every figure exact.

The counter period and every step of the clock are binary fractions of a second, so the
energy at each evaluation's end is exactly 300 W x the seconds since the fit started.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from energy_core import J_PER_KWH, MeasureOptions, Ranks, TargetRule
from energy_core.target.run import TargetRun
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import ManualRun, manual_run
from tests.helpers.records import read_record

GPU_W = 300.0
TRAIN_S, VAL_S = 1.0, 0.25  # one epoch: a second of training, then a quarter second of validation
EPOCH_KWH = GPU_W * (TRAIN_S + VAL_S) / J_PER_KWH


@dataclass
class Bench:
    run: ManualRun
    record: object
    steps: int = 0

    def train(self, seconds: float = TRAIN_S) -> None:
        self.run.advance(seconds, every=0.125)
        self.steps += 10

    def validate(self, seconds: float = VAL_S) -> None:
        self.run.tracker.start_stage("val")
        self.run.advance(seconds, every=0.125)
        self.run.tracker.end_stage("val", self.steps)

    def epoch(self, target: TargetRun, value: object):
        self.train()
        self.validate()
        return target.evaluate(self.steps, value)


@pytest.fixture
def bench(sim_gpus, tmp_path):
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=1 / 16), clock=clock)
    record = tmp_path / "energy.jsonl"
    run = manual_run(clock, devices=["gpu"], record_path=record, carbon_intensity_g_per_kwh=400.0, pue=1.5)
    yield Bench(run, record)
    run.tracker.end_fit(step=0)
    run.tracker.close()


def target_run(bench: Bench, ranks: Ranks | None = None, **rule: object) -> TargetRun:
    target = TargetRun(TargetRule(**rule), MeasureOptions())  # type: ignore[arg-type]
    assert target.bind(bench.run.tracker, ranks or Ranks(), step=0) == []
    return target


def target_lines(bench: Bench) -> list[dict]:
    return [x for x in read_record(bench.record) if x["type"] == "target"]


def test_the_first_evaluation_that_reaches_the_target_gives_its_cost_once_and_stops(bench) -> None:
    target = target_run(bench, metric="val_acc", target=0.9)
    outcomes = [bench.epoch(target, value) for value in (0.5, 0.8, 0.92, 0.95)]
    assert [o.metrics for o in outcomes[:2]] == [{}, {}] and outcomes[3].metrics == {}  # once, and only there
    reached = outcomes[2].metrics
    # three epochs, each with its validation: 3 x 1.25 s at 300 W, exactly; CO2e at 400 g/kWh x PUE 1.5
    assert reached["target/energy_kwh"] == pytest.approx(3 * EPOCH_KWH, rel=1e-12)
    assert reached["target/co2e_kg"] == pytest.approx(3 * EPOCH_KWH * 1.5 * 0.4, rel=1e-12)
    assert reached["target/seconds"] == pytest.approx(3 * (TRAIN_S + VAL_S), rel=1e-12)
    assert reached["target/step"] == 30.0
    assert (
        outcomes[2].stop is not None and "Target reached at step 30: val_acc = 0.92, val_acc >= 0.9" in outcomes[2].stop
    )
    assert "1.5 Wh" not in outcomes[2].stop and "1,125 J" in outcomes[2].stop  # the energy, said plainly
    assert [o.stop for o in outcomes[:2]] == [None, None] and outcomes[3].stop is None  # decided once
    assert target.reached is not None and target.reached.figures() == reached
    lines = target_lines(bench)
    assert [x["event"] for x in lines] == ["evaluation", "evaluation", "reached", "evaluation"]
    assert [x["value"] for x in lines] == [0.5, 0.8, 0.92, 0.95]
    assert [x["stop"] for x in lines] == [False, False, True, False]
    for i, line in enumerate(lines, start=1):  # each evaluation against the energy spent by its end
        assert line["energy_kwh"] == pytest.approx(i * EPOCH_KWH, rel=1e-12)
        assert (line["metric"], line["target"], line["mode"]) == ("val_acc", 0.9, "max")


@pytest.mark.parametrize("order", ["target first", "monitor first"])
def test_the_evaluations_own_energy_is_included_whichever_hook_runs_first(bench, order) -> None:
    """The target's hook may run before the monitor closes the validation stage, or after."""
    target = target_run(bench, metric="val_loss", target=0.3, mode="min")
    bench.train()
    bench.run.tracker.start_stage("val")
    bench.run.advance(VAL_S, every=0.125)
    if order == "target first":
        outcome = target.evaluate(10, 0.25)
        bench.run.tracker.end_stage("val", 10)
    else:
        bench.run.tracker.end_stage("val", 10)
        outcome = target.evaluate(10, 0.25)
    assert outcome.metrics["target/energy_kwh"] == pytest.approx(EPOCH_KWH, rel=1e-12)
    assert bench.run.tracker.stage_kwh("val") == pytest.approx(GPU_W * VAL_S / J_PER_KWH, rel=1e-12)


@pytest.mark.parametrize(
    ("patience", "stop_at"),
    [(1, 4), (2, 5)],  # gains per evaluation below; the first under 100 per kWh stops
)
def test_min_gain_per_kwh_stops_at_the_evaluation_the_curve_implies(bench, patience, stop_at) -> None:
    curve = [0.5, 0.7, 0.8, 0.85, 0.86, 0.865, 0.866]
    # each epoch costs 375 J = 1.0417e-4 kWh: patience 1 gives 1920, 960, 480, 96 per kWh (stop at
    # the 5th evaluation, index 4); patience 2 gives 1440, 720, 288, 72 (stop at index 5)
    target = target_run(bench, metric="val_acc", target=0.99, min_gain_per_kwh=100.0, patience=patience)
    outcomes = []
    for value in curve:
        outcomes.append(bench.epoch(target, value))
        if outcomes[-1].stop is not None:
            break
    assert len(outcomes) == stop_at + 1
    for i, outcome in enumerate(outcomes):
        if i < patience:
            assert "target/gain_per_kwh" not in outcome.metrics  # not enough evaluations behind it yet
        else:
            expected = (curve[i] - curve[i - patience]) / (patience * EPOCH_KWH)
            assert outcome.metrics["target/gain_per_kwh"] == pytest.approx(expected, rel=1e-9)
    gain = outcomes[-1].metrics["target/gain_per_kwh"]
    assert gain < 100.0 <= outcomes[-2].metrics.get("target/gain_per_kwh", 1e9)
    text = outcomes[-1].stop
    assert text.startswith(f"Diminishing returns at step {10 * (stop_at + 1)}: val_acc improved by {gain:.4g} per kWh")
    assert f"over the last {patience} evaluation(s)" in text and "min_gain_per_kwh=100" in text
    assert target.stopped == "diminishing returns" and target.reached is None
    assert target_lines(bench)[-1]["event"] == "diminishing"


def test_min_mode_gain_counts_a_lower_loss_as_an_improvement(bench) -> None:
    target = target_run(bench, metric="val_loss", target=None, mode="min", min_gain_per_kwh=0.0)
    assert bench.epoch(target, 1.0).metrics == {}
    better = bench.epoch(target, 0.5).metrics["target/gain_per_kwh"]
    assert better == pytest.approx(0.5 / EPOCH_KWH, rel=1e-9)
    worse = bench.epoch(target, 0.6)
    assert worse.metrics["target/gain_per_kwh"] == pytest.approx(-0.1 / EPOCH_KWH, rel=1e-9)
    assert worse.stop is not None  # a loss that went up is below a minimum gain of 0


def test_a_missing_or_impossible_value_is_a_gap_said_once(bench) -> None:
    target = target_run(bench, metric="val_acc", target=0.9, min_gain_per_kwh=1.0)
    first = bench.epoch(target, None)
    assert first.metrics == {} and len(first.notices) == 1
    assert "'val_acc' was not logged at this evaluation (step 10; logged: nothing)" in first.notices[0].text
    assert bench.epoch(target, None).notices == []  # once
    nan = bench.epoch(target, float("nan"))
    assert "'val_acc' is not a finite number at step 30 (nan)" in nan.notices[0].text
    assert nan.metrics == {} and nan.stop is None  # no gain across a gap
    after = bench.epoch(target, 0.5)
    assert "target/gain_per_kwh" not in after.metrics  # the evaluation before it was a gap
    assert bench.epoch(target, 0.95).metrics["target/step"] == 50.0
    assert [x["value"] for x in target_lines(bench)] == [None, None, None, 0.5, 0.95]


@pytest.mark.parametrize("gap", [None, float("nan")])
def test_no_gain_is_computed_across_a_gap_inside_the_patience_span(bench, gap) -> None:
    """patience=2: the evaluation two back has a value, the one between them has none."""
    target = target_run(bench, metric="val_acc", target=None, min_gain_per_kwh=1.0, patience=2)
    outcomes = [bench.epoch(target, value) for value in (0.5, gap, 0.6, 0.7, 0.8)]
    # the 3rd spans the gap (0.5 -> 0.6 across it), the 4th starts at it; the 5th has none in its span
    assert [o.metrics for o in outcomes[:4]] == [{}, {}, {}, {}]
    assert outcomes[4].metrics["target/gain_per_kwh"] == pytest.approx((0.8 - 0.6) / (2 * EPOCH_KWH), rel=1e-9)
    assert [o.stop for o in outcomes] == [None] * 5 and target.stopped is None
    assert [x["gain_per_kwh"] is None for x in target_lines(bench)] == [True, True, True, True, False]


def test_a_reached_target_is_not_reported_again_after_a_resume(bench) -> None:
    target = target_run(bench, metric="val_acc", target=0.9, stop=False, min_gain_per_kwh=1.0, patience=2)
    for value in (0.6, 0.91, 0.93):
        outcome = bench.epoch(target, value)
    assert outcome.stop is None and target.reached is not None and target.reached.step == 20
    state = target.state_dict()

    resumed = TargetRun(TargetRule("val_acc", 0.9, stop=False, min_gain_per_kwh=1.0, patience=2), MeasureOptions())
    resumed.load_state_dict(state)
    (notice,) = resumed.bind(bench.run.tracker, Ranks(), step=30, resumed=True)
    assert "val_acc >= 0.9 was reached before this resume, at step 20" in notice.text and "goes on" in notice.text
    outcome = bench.epoch(resumed, 0.95)
    assert "target/energy_kwh" not in outcome.metrics and outcome.stop is None  # not reported twice
    # the gain spans the resume: from the evaluation two back (0.91 at 2 epochs) to this one (4 epochs)
    assert outcome.metrics["target/gain_per_kwh"] == pytest.approx((0.95 - 0.91) / (2 * EPOCH_KWH), rel=1e-9)
    assert resumed.reached == target.reached


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (
            {"reached": {"step": -1, "value": 1.0, "kwh": 0.0, "co2e_kg": 0.0, "seconds": 0.0}},
            "step must be an integer >= 0",
        ),
        (
            {"reached": {"step": 1, "value": 1.0, "kwh": "x", "co2e_kg": 0.0, "seconds": 0.0}},
            "kwh must be a finite number",
        ),
        ({"history": "nope"}, "history must be a list"),
        ({"history": [3]}, "an evaluation must be a mapping"),
    ],
)
def test_a_damaged_stored_state_names_the_field(state, message) -> None:
    target = TargetRun(TargetRule("val_acc", 0.9), MeasureOptions())
    with pytest.raises((TypeError, ValueError), match=message):
        target.load_state_dict(state)


def test_every_rank_reaches_the_same_decisions_with_the_same_collectives(bench) -> None:
    """Rank 1's own value never reaches the target; rank 0's does (the job's `any` says so)."""
    calls: list[bool] = []

    def any_rank(flag: bool) -> bool:  # rank 0 reached at the second evaluation
        calls.append(flag)
        return flag or len(calls) == 3

    ranks = Ranks(rank=1, world_size=2, any=any_rank)
    target = target_run(bench, ranks, metric="val_acc", target=0.9, min_gain_per_kwh=0.0)
    first = bench.epoch(target, 0.5)
    assert first.stop is None and len(calls) == 2  # one collective per rule, whatever the value here
    second = bench.epoch(target, None)
    assert second.stop is not None and "on another rank (val_acc here: no figure)" in second.stop
    assert second.metrics["target/energy_kwh"] == pytest.approx(2 * EPOCH_KWH, rel=1e-12)
    assert len(calls) == 4  # a missing value still takes part


def test_an_evaluation_before_the_samplers_second_reading_has_no_energy_figure(bench) -> None:
    """Right after the fit starts the sampler has one reading: no power to extrapolate with."""
    target = target_run(bench, metric="val_acc", target=0.5, min_gain_per_kwh=1.0)
    outcome = target.evaluate(0, 0.6)
    assert outcome.metrics == {"target/seconds": 0.0, "target/step": 0.0}  # no false zero of energy
    assert outcome.stop is not None and "no energy figure yet (before the sampler's second reading)" in outcome.stop
    (line,) = target_lines(bench)
    assert line["event"] == "reached" and line["energy_kwh"] is None and line["co2e_kg"] is None
    later = bench.epoch(target, 0.9)
    assert later.metrics == {}  # no gain from an evaluation without energy, and reached once
    assert target_lines(bench)[-1]["energy_kwh"] == pytest.approx(EPOCH_KWH, rel=1e-12)
    assert target.state_dict()["reached"]["kwh"] is None
    restored = TargetRun(TargetRule("val_acc", 0.5), MeasureOptions())
    restored.load_state_dict(target.state_dict())
    assert restored.reached == target.reached
