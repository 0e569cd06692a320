"""Budgets, power caps and time shifts together in one run (a hostile review's regressions).

* a budget spent by a pause's idle energy ends the pause (the run does not idle on for hours past it);
  spent during the wait at the start, it stops the loop before its first step;
* a budget's forecast leaves a pause's idle energy out of its per-step rate (a pause is no step);
* a cap that follows the grid books training time: a pause during its search or while it follows
  is not slowdown.
"""

from __future__ import annotations

import pytest

from benchmarks.cap_finder import zeus_jobs
from energy_core import J_PER_KWH, EnergyTracker, TimeShiftRun
from energy_core.accounting.ranks import Ranks
from energy_core.budget.rule import BudgetRule
from energy_core.power import PowerCapRun
from tests.doubles.table_board import TableBoard, TableJob, capping
from tests.energy_core.shift.manual_job import BUSY_W, HOUR, IDLE_W, STEP_S, STEPS, Job, deadline_in
from tests.helpers.records import read_record


def test_a_budget_spent_while_paused_ends_the_pause(sim_gpus, monkeypatch, tmp_path) -> None:
    """The plan pauses after 3 steps until 2 h; 60 W idle spends a 0.05 kWh budget ~41 min in."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift, budget=BudgetRule(max_kwh=0.05))
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert loop.should_stop
    trained = 3 * STEP_S
    crossed = trained + (0.05 * J_PER_KWH - BUSY_W * trained) / IDLE_W
    assert len(job.step_times) == 3  # the pause ended at the budget (not at 2 h), and no step after it
    assert job.clock.now < crossed + 120
    paused = job.clock.now - trained
    assert read_record(job.record)[-1]["time_shift"]["paused_s"] == pytest.approx(paused, abs=1e-6)
    assert loop.tracker.link.paused_s == pytest.approx(paused, abs=1e-6)


@pytest.mark.parametrize("mode", ["wait", "pause"])
def test_a_budget_spent_during_the_wait_at_the_start_stops_the_loop_before_its_first_step(
    sim_gpus, monkeypatch, tmp_path, mode
) -> None:
    """Planned as the loop starts (``expected_duration_s``), the run waits for the clean hours at 2 h;
    60 W idle spends a 0.05 kWh budget 50 min in. The wait ended there, but ``should_stop`` stayed
    False and a step trained past the spent budget."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode=mode, idle_w=IDLE_W, expected_duration_s=STEPS * STEP_S)
    loop = job.start(shift, budget=BudgetRule(max_kwh=0.05))
    notices: list[str] = []
    loop.notify = lambda notice: notices.append(notice.text)
    with loop:
        assert loop.should_stop  # before the first step
        for _ in range(STEPS):
            if loop.should_stop:
                break
            job.train_step()
            loop.step()
    crossed = 0.05 * J_PER_KWH / IDLE_W
    assert job.step_times == [] and crossed <= job.clock.now < crossed + 120  # the wait ended at the budget
    assert len([text for text in notices if text.startswith("Energy budget spent at step 0")]) == 1
    lines = read_record(job.record)
    assert lines[-1]["status"] == "budget-stop"
    assert lines[-1]["time_shift"]["paused_s"] == pytest.approx(job.clock.now, abs=1e-6)


def test_the_forecast_leaves_a_pause_out_of_the_rate_per_step(sim_gpus, monkeypatch, tmp_path) -> None:
    """150 steps at 300 W (0.45 kWh) and a pause of ~2 h at 60 W (0.12 kWh) fit a 0.65 kWh budget:
    a forecast that spread the pause over every step (1.3 kWh at step 20) stopped the run."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift, budget=BudgetRule(max_kwh=0.65, forecast="stop"))
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert len(job.step_times) == STEPS and not loop.should_stop
    total = loop.last_metrics["energy/total_kwh"]
    assert total == pytest.approx(loop.last_metrics["budget/forecast_kwh"], rel=0.02)  # the forecast was right
    assert total < 0.65 and job.step_times[3] >= 2 * HOUR


def _followed(pause_at: int, steps: int = 1200) -> tuple[float, float]:
    """(slowdown booked, mean cap after the search) of a run that follows a fixed price, paused an
    hour after step ``pause_at`` as `TimeShiftRun` pauses (the meter reads on; the pause is told)."""
    profile = next(j for j in zeus_jobs() if j.name == "V100 bert-base-uncased")
    job = TableJob(
        [TableBoard(p) for p in profile.boards], seed=4, sample_interval_s=profile.seconds(profile.caps[0]) / 5
    )
    caps = []
    with capping(job):
        run = PowerCapRun(watts="auto", follow="cost", price_per_kwh=0.3, max_slowdown=0.1)
        tracker = EnergyTracker(devices=["gpu"])  # the time shift's and the cap's, as beside a monitor
        run.begin(Ranks(), tracker, steps, meter=job.meter)
        try:
            for step in range(1, steps + 1):
                caps.append(sum(b.current_mw for b in job.boards) / 1000)
                job.step()
                run.step(step)
                if step == pause_at:
                    end = job.clock() + HOUR
                    while job._next_read <= end:
                        job.clock.now = job._next_read
                        job.sampler.sample_once()
                        job._next_read += job._interval()
                    job.clock.now = end
                    tracker.link.paused_s += HOUR
        finally:
            run.finish()
            job.close()
    assert run.follower is not None
    return run.follower.slowdown(), sum(caps[300:]) / len(caps[300:])


@pytest.mark.parametrize("pause_at", [30, pytest.param(600, marks=pytest.mark.slow)])  # in the search; following
def test_a_cap_that_follows_the_grid_does_not_book_a_pause_as_slowdown(pause_at: int) -> None:
    """Before the fix, a pause during the search booked 9x slowdown: the rest of the run kept the
    limit at start (250 W) instead of following (~199 W)."""
    unpaused = _followed(-1)
    slowdown, mean_cap = _followed(pause_at)
    assert slowdown == pytest.approx(unpaused[0], abs=1e-3) and slowdown <= 0.1
    assert mean_cap == pytest.approx(unpaused[1], abs=1.0)
