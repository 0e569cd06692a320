"""The budget's forecast and limit watch on a simulated GPU driven by a manual clock: every figure exact,
and every message a figure the summary that follows never contradicts."""

from __future__ import annotations

import math
import re

import pytest

from energy_core import J_PER_KWH, EnergyTracker, MeasureOptions, Ranks
from energy_core.accounting.figures import RunTotals
from energy_core.budget.guard import BudgetGuard
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetRun
from tests.doubles.power_traces import Constant, Switched, Trace
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import ManualRun, manual_run


@pytest.fixture
def manual_gpu(sim_gpus):
    """A 300 W simulated GPU and a tracker on the same manual clock; ``step(n)`` trains n steps of 0.1 s."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(300.0), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"])
    yield run.tracker, lambda n: run.advance(0.1 * n)
    run.tracker.end_fit(step=0)


def test_the_forecast_is_the_rate_so_far_times_the_steps_left(manual_gpu) -> None:
    tracker, step = manual_gpu
    guard = BudgetGuard(BudgetRule(max_kwh=1.0, forecast="warn"), tracker, total_steps=500, epoch_steps=50)
    assert guard.begin(0, tracker.resumed_totals) is None
    step(40)
    metrics, action = guard.review(40, 0, tracker.measured())
    assert "budget/forecast_kwh" not in metrics  # waits for the first epoch
    assert metrics["budget/remaining_kwh"] == pytest.approx(1.0 - 300.0 * 4.0 / J_PER_KWH)
    step(10)
    metrics, action = guard.review(50, 1, tracker.measured())
    assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(300.0 * 0.1 * 500, rel=1e-9)
    assert action is None  # 4.2 Wh, far under 1 kWh


def test_a_carbon_limit_on_a_grid_of_no_carbon_logs_no_remaining_energy(sim_gpus) -> None:
    # At an intensity of 0 g/kWh a CO2e limit is no limit in kWh: budget/remaining_kwh was logged as inf
    # (which loggers such as MLflow refuse), while the run went on, as it should.
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(300.0), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"], carbon_intensity_g_per_kwh=0.0)
    try:
        guard = BudgetGuard(BudgetRule(max_co2e_kg=1.0, max_cost=None), run.tracker, total_steps=100, epoch_steps=10)
        assert guard.begin(0, run.tracker.resumed_totals) is None
        run.advance(2.0)
        metrics, action = guard.review(20, 2, run.tracker.measured())
        assert "budget/remaining_kwh" not in metrics and action is None
        assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(300.0 * 0.1 * 100, rel=1e-6)
        with_energy = BudgetGuard(BudgetRule(max_kwh=1.0, max_co2e_kg=1.0), run.tracker, total_steps=100)
        with_energy.begin(20, run.tracker.resumed_totals)
        metrics, _ = with_energy.review(20, 2, run.tracker.measured())
        assert metrics["budget/remaining_kwh"] == pytest.approx(1.0 - 600.0 / J_PER_KWH)  # the kWh limit binds
    finally:
        run.tracker.end_fit(step=20)


def test_a_forecast_over_the_limit_stops_and_a_crossing_is_seen_by_the_sampler(manual_gpu) -> None:
    tracker, step = manual_gpu
    limit_kwh = 300.0 * 0.1 * 99.5 / J_PER_KWH  # reached during the 100th step
    guard = BudgetGuard(BudgetRule(max_kwh=limit_kwh, forecast="stop"), tracker, total_steps=500, epoch_steps=50)
    guard.begin(0, tracker.resumed_totals)
    step(50)
    _, action = guard.review(50, 1, tracker.measured())
    assert action is not None and action.kind == "stop" and "projected to use" in action.reason
    assert not guard.crossed()
    step(49)
    assert not guard.crossed()
    step(1)  # the 100th step reaches the limit: the sampler's listener raises the flag
    assert guard.crossed()


# ----------------------------------------------------------------------------- what the user is told
FIGURE = re.compile(r"(\d[\d,]*(?:\.\d+)?) (mJ|J|Wh|kWh|MWh)\b")
JOULES = {"mJ": 1e-3, "J": 1.0, "Wh": 3600.0, "kWh": J_PER_KWH, "MWh": 1000 * J_PER_KWH}


def first_energy(text: str) -> tuple[str, float]:
    """The first energy figure a line shows, as written and in joules."""
    found = FIGURE.search(text)
    assert found, text
    return found.group(0), float(found.group(1).replace(",", "")) * JOULES[found.group(2)]


def watching(tracker: EnergyTracker, rule: BudgetRule, **length: float) -> BudgetRun:
    """A budget's run watching a started tracker (as beside a monitor), begun at step 0."""
    budget = BudgetRun(rule, MeasureOptions())
    budget.bind(tracker, Ranks(), step=0)
    assert budget.begin(0, length.get("total_steps"), length.get("epoch_steps")) is None
    return budget


@pytest.fixture
def manual_trace(sim_gpus):
    """``start(trace)``: a started tracker on a simulated GPU drawing ``trace``, on a manual clock
    (closed at the test's end, whatever happens)."""
    runs = []

    def start(trace: Trace) -> ManualRun:
        clock = ManualClock()
        sim_gpus(SimGpu("GPU-a", trace, counter_period_s=0.02), clock=clock)
        runs.append(manual_run(clock, devices=["gpu"]))
        return runs[-1]

    yield start
    for run in runs:
        run.tracker.close()


def test_the_stop_tells_a_measured_total_which_the_summary_never_undercuts(manual_trace) -> None:
    # The load drops from 300 W to 30 W just before the step that crossed the limit ends, between two
    # readings. A figure extrapolated to the step's end at the last second's power (~286 W) told the user
    # 3,042 J; the summary then said 3,019 J: the total went down. The figure told is now the one measured
    # up to the newest reading, which every later total includes.
    trace = Switched(300.0)
    trace.set(10.05, 30.0)
    run = manual_trace(trace)
    budget = watching(run.tracker, BudgetRule(max_kwh=2990.0 / J_PER_KWH, forecast="off"))
    run.advance(10.1)  # the reading at 10.0 s passes the limit (3,000 J)
    run.clock.advance(0.09)  # the step ends between readings, after the drop
    action = budget.check(101)
    assert action is not None
    told, told_j = first_energy(action.reason)
    assert told_j == pytest.approx(300.0 * 10.05 + 30.0 * 0.05, abs=300.0 * 0.02)  # up to the reading at 10.1 s
    assert f"{told}, " in action.reason and "measured (up to the newest reading)" in action.reason
    assert "the limit, max_kwh=0.000830556 (2,990 J)." in action.reason  # the limit as given, and in joules
    summary = run.tracker.summary_text(run.tracker.end_fit(101))
    _, final_j = first_energy(summary.splitlines()[0])
    assert final_j == pytest.approx(trace.energy(10.19), abs=300.0 * 0.02)  # exact at the end: 3,019 J
    assert final_j >= told_j  # what follows never reads less than what was told


def test_energy_spent_before_the_first_step_is_not_told_as_a_checkpoints(manual_trace) -> None:
    # On a loaded machine the budget began 0.32 s into a fresh fit, past an 80 J limit, and said the
    # budget "was already spent before this run started (96 J ... measured in the checkpoint)": there was
    # no checkpoint. Only a checkpoint's totals are judged at the start; this fit's energy stops the
    # run at the next check, as a budget spent at that step.
    run = manual_trace(Constant(300.0))
    run.advance(0.4)  # 120 J before the budget begins
    budget = BudgetRun(BudgetRule(max_kwh=80.0 / J_PER_KWH, forecast="off"), MeasureOptions())
    budget.bind(run.tracker, Ranks(), step=0)
    assert budget.begin(0, total_steps=None, epoch_steps=None) is None
    run.advance(0.1)
    action = budget.check(1)
    assert action is not None and action.kind == "stop"
    assert action.reason.startswith("Energy budget spent at step 1: ") and "checkpoint" not in action.reason
    assert first_energy(action.reason)[1] == pytest.approx(300.0 * 0.5, abs=300.0 * 0.02)


def test_a_stop_at_a_reading_reads_as_the_summary_does(manual_trace) -> None:
    run = manual_trace(Constant(300.0))
    budget = watching(run.tracker, BudgetRule(max_kwh=1.5 / J_PER_KWH, forecast="off"))
    run.advance(0.1, every=0.005)  # 1.5 J at 5 ms: the reading at 5 ms crosses
    action = budget.check(3)
    assert action is not None
    summary = run.tracker.summary_text(run.tracker.end_fit(3))  # no time passes: the same total
    told, told_j = first_energy(action.reason)
    shown, shown_j = first_energy(summary)
    assert told_j == pytest.approx(300.0 * 0.1, abs=300.0 * 0.02)
    assert told == shown and told_j == shown_j  # one rounding: not "2 J" beside "1.6 J"


def test_a_forecast_says_it_is_projected_and_what_was_measured(manual_gpu) -> None:
    tracker, step = manual_gpu
    budget = watching(tracker, BudgetRule(max_kwh=0.001, forecast="warn"), total_steps=500, epoch_steps=50)
    step(50)  # 1,500 J: the whole run is projected at 15,000 J = 4.17 Wh, over the 1 Wh budget
    _, action = budget.review(50, 1)
    assert action is not None and action.kind == "warn"
    assert "projected to use 4.17 Wh" in action.reason
    assert "max_kwh=0.001 (1 Wh)" in action.reason
    assert "measured so far: 1,500 J" in action.reason


class TwinRanks:
    """A 2-rank job of identical ranks, in one process: every sum over ranks doubles."""

    @staticmethod
    def of() -> Ranks:
        return Ranks(rank=0, world_size=2, sum=lambda values: [2 * v for v in values], any=lambda flag: flag)


def test_a_review_judges_the_jobs_totals_now_not_the_monitors_last_window(manual_gpu) -> None:
    # In HF the budget reviews in on_step_end, before the monitor's window in Trainer.log: a review that
    # read the job's sum of the last window judged figures a whole window old.
    tracker, step = manual_gpu
    tracker.ranks = TwinRanks.of()
    limit_kwh = 2 * 300.0 * 3.5 / J_PER_KWH  # the job reaches it 3.5 s in; each rank alone only at 7 s
    budget = BudgetRun(BudgetRule(max_kwh=limit_kwh, forecast="off"), MeasureOptions())
    budget.bind(tracker, tracker.ranks, step=0)
    assert budget.begin(0, total_steps=None, epoch_steps=None) is None
    step(10)
    tracker.window(10)  # the monitor's window: the job's sum at 1 s
    step(10)
    metrics, action = budget.review(20, 0)  # before the monitor's window at step 20
    assert metrics["budget/remaining_kwh"] * J_PER_KWH == pytest.approx(limit_kwh * J_PER_KWH - 2 * 300.0 * 2.0)
    assert action is None
    step(20)  # 4 s: the job has spent 2,400 J, over its 2,100 J; no rank alone has (1,200 J)
    assert not budget.guard.crossed()
    metrics, action = budget.review(40, 0)
    assert action is not None and action.kind == "stop"
    assert first_energy(action.reason)[1] == pytest.approx(2 * 300.0 * 4.0)  # the job's, measured


def test_a_limit_reached_at_the_first_forecast_stops_rather_than_warns(manual_gpu) -> None:
    # In a job the limit is judged at reviews. The job crossed it during the first epoch; at the epoch's end
    # the first forecast was over the limit too, and the review returned the forecast's warning in place of
    # the stop: every rank trained on to the next review (here a whole epoch: 3,000 J more).
    tracker, step = manual_gpu
    tracker.ranks = TwinRanks.of()
    limit_kwh = 2 * 300.0 * 4.0 / J_PER_KWH  # the job reaches it 4 s in; each rank alone only at 8 s
    budget = BudgetRun(BudgetRule(max_kwh=limit_kwh, forecast="warn"), MeasureOptions())
    budget.bind(tracker, tracker.ranks, step=0)
    assert budget.begin(0, total_steps=500, epoch_steps=50) is None
    step(50)  # the first epoch: 3,000 J for the job, 1,500 J per rank
    assert not budget.guard.crossed()
    metrics, action = budget.review(50, 1)
    assert action is not None and action.kind == "stop"
    assert action.reason.startswith("Energy budget spent at step 50: ")
    assert first_energy(action.reason)[1] == pytest.approx(2 * 300.0 * 5.0)  # the job's, measured
    assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(2 * 300.0 * 0.1 * 500)  # still logged
    assert not budget.guard.forecast_warned and not budget.active


def test_a_resumed_fit_forecasts_once_it_has_seen_an_epoch_of_its_own(manual_gpu) -> None:
    # Resumed at step 300 of 500 (epoch 6 of 10), the review after its first step found six epochs done and
    # projected the whole run from one step and the fit's start-up (630 J a step, 126 kJ for the run, against
    # 15 kJ at the steady 30 J): forecast="stop" ended a resumed run that fits its 20 kJ budget.
    tracker, step = manual_gpu
    budget = BudgetRun(BudgetRule(max_kwh=20_000.0 / J_PER_KWH, forecast="stop"), MeasureOptions())
    budget.bind(tracker, Ranks(), step=300)
    step(20)  # the resumed fit's start-up: 2 s, 600 J
    assert budget.begin(300, total_steps=500, epoch_steps=50, epochs_done=6) is None
    step(1)
    metrics, action = budget.review(301, 6)
    assert action is None and "budget/forecast_kwh" not in metrics  # one step of this fit: not enough
    step(48)
    metrics, action = budget.review(349, 6)
    assert action is None and "budget/forecast_kwh" not in metrics
    step(1)
    metrics, action = budget.review(350, 7)  # the fit's first epoch end: an epoch of its own
    spent_j = 300.0 * 7.0  # start-up and 50 steps
    assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(spent_j + spent_j / 50 * 150)
    assert action is None and budget.active  # 8,400 J projected: within the 20 kJ budget


def test_a_fit_resumed_mid_epoch_waits_for_an_epochs_worth_of_steps(manual_gpu) -> None:
    tracker, step = manual_gpu
    budget = BudgetRun(BudgetRule(max_kwh=1.0, forecast="warn"), MeasureOptions())
    budget.bind(tracker, Ranks(), step=325)
    assert budget.begin(325, total_steps=500, epoch_steps=50, epochs_done=6) is None
    step(25)
    metrics, _ = budget.review(350, 7)  # an epoch boundary 25 steps in: half an epoch seen
    assert "budget/forecast_kwh" not in metrics
    step(25)
    metrics, _ = budget.review(375, 7)
    assert metrics["budget/forecast_kwh"] * J_PER_KWH == pytest.approx(300.0 * 5.0 * (1 + 125 / 50))


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (["guard"], "stored budget state must be a mapping, got list"),
        ({"guard": ["forecast_warned"]}, "stored budget state: guard must be a mapping, got list"),
        ({"guard": {"forecast_warned": "yes"}}, "forecast_warned must be True or False, got str"),
    ],
)
def test_a_bad_stored_state_is_refused_when_loaded_not_in_the_training_loop(state, message) -> None:
    # {"guard": [...]} in a trainer_state.json was taken at load and raised AttributeError from begin(),
    # which HF calls in on_step_begin, inside the training loop.
    budget = BudgetRun(BudgetRule(max_kwh=1.0), MeasureOptions())
    with pytest.raises(TypeError, match=re.escape(message)):
        budget.load_state_dict(state)
    budget.load_state_dict({"guard": {"forecast_warned": True}})
    assert budget.state_dict() == {"guard": {"forecast_warned": True}}


def test_a_review_stops_on_the_watch_only_with_totals_that_include_its_reading(manual_gpu) -> None:
    # In CI the sampler's reading that crossed the limit landed while a review was reading the totals: the
    # review took the totals (up to the reading before), then the flag (raised by the reading after), and
    # stopped on it, logging budget/remaining_kwh = +6.9e-9 kWh (0.025 J short) and telling a total short
    # of the limit as the one that "reached the limit". The flag is now read before the totals.
    tracker, step = manual_gpu
    limit_j = 300.0 * 1.0 + 0.025  # 0.025 J over the reading at 1.0 s; the reading at 1.1 s crosses
    budget = watching(tracker, BudgetRule(max_kwh=limit_j / J_PER_KWH, forecast="off"))
    step(10)
    assert budget.check(10) is None
    measured = tracker.measured

    def measured_as_the_sampler_reads() -> RunTotals:
        totals = measured()
        step(1)  # the sampler thread's next reading (which crosses) lands just after the totals' read
        return totals

    tracker.measured = measured_as_the_sampler_reads  # type: ignore[method-assign]
    metrics, action = budget.review(10, 0)
    tracker.measured = measured  # type: ignore[method-assign]
    assert budget.guard.crossed()
    remaining_j = metrics["budget/remaining_kwh"] * J_PER_KWH
    assert action is None and remaining_j == pytest.approx(0.025, abs=1e-6)  # judged as it reads: not reached
    action = budget.check(11)  # the next step's flag read stops, on totals that include the crossing
    assert action is not None and action.kind == "stop"
    assert first_energy(action.reason)[1] == pytest.approx(330.0)
    metrics, _ = budget.review(11, 0)  # the stop's logged figures: the limit reached
    assert metrics["budget/remaining_kwh"] <= 0.0


def test_a_crossed_watch_logs_no_budget_remaining(manual_gpu) -> None:
    # The watch sums a reading's joules per source, the totals per kind (and rank): the two may differ in
    # the last bits, and a watch that saw the limit reached must not be contradicted by what is logged.
    tracker, step = manual_gpu
    guard = BudgetGuard(BudgetRule(max_kwh=100.0 / J_PER_KWH, forecast="off"), tracker, total_steps=None)
    guard.begin(0, tracker.resumed_totals)
    just_under = RunTotals({"gpu": math.nextafter(100.0, 0.0)})
    metrics, action = guard.review(3, 0, just_under, crossed=True)
    assert action is not None and action.kind == "stop"
    assert metrics["budget/remaining_kwh"] == 0.0
    metrics, action = guard.review(3, 0, just_under, crossed=False)  # not crossed: judged as it reads
    assert metrics["budget/remaining_kwh"] > 0.0
