"""plan_time_shift: optimal for each mode's cost model (against a brute force), valid, and honest."""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energy_core import plan_time_shift
from energy_core.shift.intensity import Intensity
from tests.energy_core.shift.reference import brute_force, cost_kg

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
UNIT = 600.0


def moment(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@st.composite
def instances(draw):
    per_step = draw(st.integers(1, 3))  # units per step of the series
    offset = draw(st.integers(0, per_step - 1))  # the start, units into the first step
    units = draw(st.integers(2, 11))
    steps = math.ceil((offset + units) / per_step) + draw(st.integers(0, 1))
    values = draw(st.lists(st.integers(0, 800), min_size=steps, max_size=steps))
    mode = draw(st.sampled_from(["wait", "pause", "requeue"]))
    work = draw(st.integers(1, units))
    resume = draw(st.integers(0, 2))
    busy = draw(st.integers(50, 500))
    idle = draw(st.integers(0, busy))
    series = [(moment(i * per_step * UNIT), float(v)) for i, v in enumerate(values)]
    return series, offset, units, work, resume, mode, float(busy), float(idle)


@settings(max_examples=150, deadline=None)
@given(instances())
def test_the_plan_is_the_optimum_of_its_cost_model(instance) -> None:
    series, offset, units, work, resume, mode, busy, idle = instance
    t0 = offset * UNIT
    plan = plan_time_shift(series, work_s=work * UNIT, start=moment(t0), deadline=moment(t0 + units * UNIT),
                           busy_w=busy, idle_w=idle, resume_s=resume * UNIT, mode=mode)  # fmt: skip
    curve = Intensity.of(series)
    start = moment(t0).timestamp()
    optimum = brute_force(curve, start, UNIT, units, work, resume, mode, busy, idle)
    assert plan.exact
    assert plan.co2e_kg == pytest.approx(optimum, rel=1e-6, abs=1e-15)
    check_valid(plan, curve, work * UNIT, resume * UNIT, busy, idle)


def check_valid(plan, curve: Intensity, work_s: float, resume_s: float, busy: float, idle: float) -> None:
    """Runs in order inside the window, the work done, resumed runs that work, the figures consistent."""
    runs = [(a.timestamp(), b.timestamp()) for a, b in plan.runs]
    assert plan.start.timestamp() - 1e-6 <= runs[0][0]
    assert runs[-1][1] <= plan.deadline.timestamp() + 1e-6
    assert all(a < b for a, b in runs) and all(b1 < a2 for (_, b1), (a2, _) in zip(runs, runs[1:]))
    late = plan.mode == "requeue" and runs[0][0] > plan.start.timestamp() + 1e-6
    resumed = runs if late else runs[1:]  # requeue: a first run after the start is a restart too
    assert plan.resumes == len(resumed)
    assert sum(b - a for a, b in runs) - resume_s * len(resumed) == pytest.approx(work_s, abs=1e-6)
    assert all(b - a > resume_s for a, b in resumed)
    if plan.mode == "wait":
        assert len(runs) == 1
    assert plan.co2e_kg == pytest.approx(cost_kg(curve, runs, plan.start.timestamp(), plan.mode, busy, idle))
    now = [(plan.start.timestamp(), plan.start.timestamp() + work_s)]
    assert plan.run_now_co2e_kg == pytest.approx(cost_kg(curve, now, plan.start.timestamp(), plan.mode, busy, idle))
    assert plan.co2e_kg <= plan.run_now_co2e_kg * (1 + 1e-12)
    if plan.run_now_co2e_kg > 0:
        assert plan.saving == pytest.approx(1 - plan.co2e_kg / plan.run_now_co2e_kg)


def steps_of(values: list[float], per_step: int = 2) -> list[tuple[datetime, float]]:
    return [(moment(i * per_step * UNIT), float(v)) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("values", "work", "resume", "mode", "runs"),
    [
        # the job starts inside the first step (a run edge cut by the work)
        ([500, 0, 1000], 3, 0, "wait", [(1, 4)]),
        # requeue: a late first start pays its restart too: 1 unit of start-up, then the 2 of work
        ([1000, 0, 100, 1000], 2, 1, "requeue", [(2, 5)]),
        # a resumed run starts inside a step: the cleaner half of the 500 beats a third run
        ([0, 1000, 500, 0, 1000], 4, 1, "requeue", [(0, 2), (5, 8)]),
        # in-process pauses pay idle power: pausing through one dirty step still pays here
        ([100, 900, 100, 900], 4, 0, "pause", [(0, 2), (4, 6)]),
        # one run: the clean middle, the rest from its cleaner side
        ([900, 100, 300, 900], 3, 0, "wait", [(2, 5)]),
    ],
)
def test_known_optima(values, work, resume, mode, runs) -> None:
    series = steps_of(values)
    units = 2 * len(values)
    plan = plan_time_shift(series, work_s=work * UNIT, start=moment(0), deadline=moment(units * UNIT), busy_w=100.0,
                           idle_w=10.0, resume_s=resume * UNIT, mode=mode)  # fmt: skip
    assert [((a - T0).total_seconds() / UNIT, (b - T0).total_seconds() / UNIT) for a, b in plan.runs] == runs
    optimum = brute_force(Intensity.of(series), T0.timestamp(), UNIT, units, work, resume, mode, 100.0, 10.0)
    assert plan.co2e_kg == pytest.approx(optimum)
    assert plan.shifted and plan.saving > 0


def test_a_late_first_start_in_requeue_is_a_restart() -> None:
    """The job exits at once and is started again: that start-up costs resume_s before the work, like
    every later restart. Counted, the late run no longer beats running now; and a late run that does
    win ends resume_s later, still by the deadline."""
    series = steps_of([500, 0, 1000])
    now = plan_time_shift(series, work_s=3 * UNIT, start=moment(0), deadline=moment(6 * UNIT), busy_w=100.0,
                          resume_s=UNIT, mode="requeue")  # fmt: skip
    assert not now.shifted and now.resumes == 0  # late: (1, 5) at 500+0+0+1000 against (0, 3) at 500+500+0
    late = plan_time_shift(steps_of([1000, 0, 0, 1000]), work_s=2 * UNIT, start=moment(0), deadline=moment(5 * UNIT),
                           busy_w=100.0, resume_s=UNIT, mode="requeue")  # fmt: skip
    assert [(a - T0).total_seconds() / UNIT for a, _ in late.runs] == [2.0] and late.resumes == 1
    assert (late.end - late.runs[0][0]).total_seconds() == pytest.approx(3 * UNIT)  # start-up + work
    assert late.end <= late.deadline
    tight = plan_time_shift(steps_of([1000, 0]), work_s=2 * UNIT, start=moment(0), deadline=moment(4 * UNIT),
                            busy_w=100.0, resume_s=UNIT, mode="requeue")  # fmt: skip
    assert (tight.runs[0][0] - T0).total_seconds() == pytest.approx(UNIT)  # not 2: it would end past the deadline


def test_work_that_does_not_fit_runs_now_and_says_so() -> None:
    plan = plan_time_shift(steps_of([900, 100]), work_s=3 * UNIT, start=moment(0), deadline=moment(2 * UNIT),
                           busy_w=100.0)  # fmt: skip
    assert not plan.fits and "does not fit" in plan.note
    assert plan.runs == [(moment(0), moment(3 * UNIT))]
    assert plan.saving == 0.0 and plan.co2e_kg == plan.run_now_co2e_kg
    late = plan_time_shift(steps_of([900]), work_s=UNIT, start=moment(UNIT), deadline=moment(0), busy_w=1.0)
    assert not late.fits


def test_a_flat_grid_runs_now() -> None:
    for mode in ("wait", "pause", "requeue"):
        plan = plan_time_shift(steps_of([300] * 6), work_s=2 * UNIT, start=moment(0), deadline=moment(12 * UNIT),
                               busy_w=100.0, idle_w=5.0, mode=mode)  # fmt: skip
        assert not plan.shifted and plan.saving == 0.0 and plan.paused_s == 0.0
        assert "runs now" in plan.describe()


def test_a_window_longer_than_the_grid_allows_is_planned_coarser() -> None:
    from energy_core.shift.planner import MAX_CELLS

    series = [(moment(h * 3600), 300.0 + 200.0 * math.sin(h / 3)) for h in range(3 * MAX_CELLS)]
    plan = plan_time_shift(series, work_s=10 * 3600, start=moment(0), deadline=moment(2 * MAX_CELLS * 3600),
                           busy_w=100.0)  # fmt: skip
    assert not plan.exact
    check_valid(plan, Intensity.of(series), 10 * 3600, 0.0, 100.0, 0.0)
    assert plan.saving > 0.3  # still finds the clean troughs


def test_a_csv_series_is_read_like_carbon_intensity_series(tmp_path) -> None:
    from tests.helpers.grid_series import write_csv

    path = tmp_path / "grid.csv"
    write_csv(path, steps_of([500, 0, 1000]))
    from_file = plan_time_shift(path, work_s=3 * UNIT, start=moment(0), deadline=moment(6 * UNIT), busy_w=100.0,
                                resume_s=UNIT, mode="requeue")  # fmt: skip
    from_list = plan_time_shift(steps_of([500, 0, 1000]), work_s=3 * UNIT, start=moment(0), deadline=moment(6 * UNIT),
                                busy_w=100.0, resume_s=UNIT, mode="requeue")  # fmt: skip
    assert from_file.runs == from_list.runs and from_file.co2e_kg == from_list.co2e_kg


@pytest.mark.parametrize(
    ("change", "error", "names"),
    [
        ({"work_s": 0}, ValueError, "work_s"),
        ({"work_s": True}, TypeError, "work_s"),
        ({"busy_w": -1.0}, ValueError, "busy_w"),
        ({"busy_w": 1e12}, ValueError, r"busy_w must be in \(0, 5e\+09\] W"),  # a million boards of 5 kW at most
        ({"idle_w": 200.0}, ValueError, "idle_w"),
        ({"resume_s": float("nan")}, ValueError, "resume_s"),
        ({"work_s": 1e12}, ValueError, r"work_s must be in \(0, 1e\+09\] s"),  # its end: past datetime's range
        ({"resume_s": 1e308, "mode": "requeue"}, ValueError, r"resume_s must be in \[0, 1e\+09\] s"),
        ({"mode": "later"}, ValueError, "mode"),
        ({"start": "2026-03-01T00:00:00+00:00"}, TypeError, "start"),
        ({"deadline": datetime(2026, 3, 2)}, ValueError, "deadline"),
        ({"intensity": []}, ValueError, "intensity"),
        ({"intensity": [(datetime(2026, 3, 1), 100.0)]}, ValueError, "intensity"),
        ({"intensity": [(T0, -5.0)]}, ValueError, "intensity"),
        ({"intensity": [(T0, "x")]}, TypeError, "intensity"),
        ({"intensity": 42}, TypeError, "intensity"),
    ],
)
def test_bad_arguments_name_themselves(change, error, names) -> None:
    arguments = {"intensity": steps_of([100, 200]), "work_s": UNIT, "start": moment(0), "deadline": moment(4 * UNIT),
                 "busy_w": 100.0, **change}  # fmt: skip
    intensity = arguments.pop("intensity")
    with pytest.raises(error, match=names):
        plan_time_shift(intensity, **arguments)


RANGE = r"must be in \[1970-01-01T00:00:00\+00:00, 9000-01-01T00:00:00\+00:00\] \(UTC\)"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("deadline", datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))),  # 10000-01-01 04:00 UTC
        ("deadline", datetime.max.replace(tzinfo=timezone.utc)),
        ("start", datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))),  # year 0 in UTC
        ("start", datetime(1969, 12, 31, 23, tzinfo=timezone.utc)),
    ],
)
def test_times_outside_the_planners_range_name_themselves_and_the_range(name, value) -> None:
    """These raised "year 10000 is out of range" (or year 0) while making the plan's datetimes."""
    start, deadline = (value, moment(0)) if name == "start" else (moment(0), value)
    with pytest.raises(ValueError, match=f"{name} {RANGE}, got {re.escape(value.isoformat())}"):
        plan_time_shift(steps_of([100, 200]), work_s=UNIT, start=start, deadline=deadline, busy_w=100.0)


def test_the_latest_start_and_deadline_hold_the_longest_work() -> None:
    latest = datetime(9000, 1, 1, tzinfo=timezone.utc)
    plan = plan_time_shift(steps_of([100, 200]), work_s=1e9, start=latest, deadline=latest, busy_w=100.0)
    assert not plan.fits and plan.runs == [(latest, latest + timedelta(seconds=1e9))]
