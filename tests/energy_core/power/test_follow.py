"""Grid following: the Lagrangian plan, the follower's bookkeeping, and a real PowerCapRun on table boards.

The plan and the follower are pure: their figures are checked against an independent
step-by-step replay of the same curve and intensity. The end-to-end runs drive a real
`PowerCapRun(watts="auto", follow=...)` on Zeus's recorded profiles in virtual time
(`TableJob`), so that nothing depends on the machine's speed or load.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from benchmarks.cap_finder import Grid, Job, follow_case, zeus_jobs
from benchmarks.cap_finder import replay as table_replay
from energy_core.accounting.ranks import Ranks
from energy_core.carbon.factor import Fixed, Series
from energy_core.power import PowerCapRun
from energy_core.power.finder.search import CONFIDENCE
from energy_core.power.follow.follower import CHANGE, MIN_STRETCHES, WATCH, GridFollower
from energy_core.power.follow.plan import SLICES, Curve, Plan
from tests.doubles.table_board import CapRunResult, Disturbance, TableBoard, TableJob, run_capped

# Three caps: the limit at start, a little slower and leaner, much slower and leanest.
CURVE = Curve((0, 1, 2), (1.0, 1.1, 1.5), (300.0, 240.0, 200.0))


def replay(curve: Curve, intensity: Callable[[float], float], steps: int, rung_of: Callable[[float], int]):
    """(seconds, emission) of ``steps`` steps, one at a time, each at the rung chosen at its start."""
    t = emitted = 0.0
    for _ in range(steps):
        rung = rung_of(t)
        seconds, joules = curve.seconds[rung], curve.joules[rung]
        emitted += intensity(t + seconds / 2) * joules
        t += seconds
    return t, emitted


def dirty_then_clean(switch_s: float, dirty: float = 500.0, clean: float = 100.0) -> Callable[[float], float]:
    return lambda t: dirty if t < switch_s else clean


def at_each(value_at: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    """``value_at`` read at each of an array of times, as `Plan.solve` asks for it."""
    return lambda times: np.array([value_at(t) for t in times])


def series_file(path: Path, start: float, step_s: float, values: list[float]) -> Path:
    """A ``carbon_intensity_series`` CSV: ``values`` every ``step_s`` seconds from unix time ``start``."""
    rows = [f"{datetime.fromtimestamp(start + i * step_s, timezone.utc).isoformat()},{v}" for i, v in enumerate(values)]
    path.write_text("datetime,value\n" + "\n".join(rows) + "\n")
    return path


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize(
    ("slowdown", "joules", "first", "last"),
    [(0.0001, 299.94, 1, 0), (0.05, 270.0, 1, 0), (0.1, 240.0, 1, 1), (0.3, 220.0, 2, 1), (0.5, 200.0, 2, 2),
     (2.0, 200.0, 2, 2)],
)  # fmt: skip
def test_a_constant_intensity_mixes_the_two_caps_that_use_the_slowdown_exactly(
    slowdown: float, joules: float, first: int, last: int
) -> None:
    """1000 steps at 300 g/kWh: the least emission within the time is the lower hull of
    (seconds, joules) per step at ``1 + slowdown`` seconds: a mix of the two rungs either
    side (a static cap leaves time unused, e.g. rung 1 at 1.1 s where 1.3 s are allowed),
    the leaner first, the faster last."""
    allowed = (1 + slowdown) * 1000
    plan = Plan.solve(CURVE, at_each(lambda t: 300.0), 0.0, 1000, allowed)
    assert plan.seconds <= allowed * (1 + 1e-9)
    assert plan.emission == pytest.approx(300.0 * 1000 * joules, rel=1e-3)
    assert plan.rung(CURVE, 300.0, 0.0) == first and plan.rung(CURVE, 300.0, plan.seconds - 1) == last
    if first != last:  # the whole time is used, to a slice
        assert plan.seconds == pytest.approx(allowed, abs=allowed / SLICES)


def test_when_the_grid_gets_clean_the_plan_runs_lean_while_dirty_and_fast_while_clean() -> None:
    """1000 steps in 1100 s, 500 g/kWh for the first 600 s then 100: the plan beats every
    static cap and every pair (a cap while dirty, a cap while clean) that keeps the time,
    replayed step by step."""
    steps, allowed = 1000, 1100.0
    grid = dirty_then_clean(600.0)
    plan = Plan.solve(CURVE, at_each(grid), 0.0, steps, allowed)
    dirty_rung, clean_rung = plan.rung(CURVE, 500.0, 0.0), plan.rung(CURVE, 100.0, 1000.0)
    assert CURVE.joules[dirty_rung] < CURVE.joules[clean_rung]  # leaner while dirty
    seconds, emitted = replay(CURVE, grid, steps, lambda t: plan.rung(CURVE, grid(t), t))
    assert seconds <= allowed * 1.002  # the replay's steps straddle the plan's slices
    assert emitted == pytest.approx(plan.emission, rel=0.01)
    pairs = [
        replay(CURVE, grid, steps, lambda t, a=a, b=b: a if t < 600.0 else b)
        for a, b in itertools.product(CURVE.rungs, repeat=2)
    ]
    feasible = [e for s, e in pairs if s <= allowed]
    statics = [replay(CURVE, grid, steps, lambda t, r=r: r) for r in CURVE.rungs]
    best_static = min(e for s, e in statics if s <= allowed)
    assert emitted <= min(feasible) * 1.001
    assert emitted < best_static * 0.97


def test_when_the_grid_gets_dirty_the_plan_finishes_early() -> None:
    """Clean first, dirty later: the run goes fast while clean, emitting less than at the
    leanest cap that keeps the time."""
    steps, allowed = 1000, 1500.0
    grid = dirty_then_clean(900.0, dirty=100.0, clean=600.0)  # 100 until 900 s, then 600
    plan = Plan.solve(CURVE, at_each(grid), 0.0, steps, allowed)
    assert plan.rung(CURVE, 100.0) == 0
    # 900 steps at the limit while clean, then the last 100 at the leanest cap: 27 + 12 (x 1e6)
    assert plan.emission == pytest.approx(900 * 300 * 100 + 100 * 200 * 600, rel=0.002)
    _, leanest = replay(CURVE, grid, steps, lambda t: 2)
    assert plan.emission < leanest * 0.66


def test_a_deadline_no_cap_keeps_runs_the_fastest() -> None:
    plan = Plan.solve(CURVE, at_each(lambda t: 300.0), 0.0, 1000, 900.0)
    assert plan.mu == math.inf and plan.rung(CURVE, 300.0) == 0 and plan.seconds == pytest.approx(1000.0)


@pytest.mark.parametrize(
    ("rungs", "seconds", "joules"),
    [((), (), ()), ((0, 1), (1.0,), (1.0, 2.0)), ((0,), (0.0,), (1.0,)), ((0,), (1.0,), (-1.0,))],
)
def test_a_curve_without_a_time_and_energy_per_rung_is_refused(rungs, seconds, joules) -> None:
    with pytest.raises(ValueError, match="curve"):
        Curve(rungs, seconds, joules)


@pytest.mark.parametrize("spreads", [(0.01,), (0.01, -0.01), (0.01, math.inf), (0.01, math.nan)])
def test_a_curve_without_a_finite_spread_per_rung_is_refused(spreads) -> None:
    with pytest.raises(ValueError, match=r"spreads must be one per rung \(2\), each finite and >= 0"):
        Curve((0, 1), (1.0, 1.1), (10.0, 8.0), spreads)


# ----------------------------------------------------------------------------- the follower
def test_the_follower_books_each_stretch_and_keeps_the_whole_run_within_the_slowdown(tmp_path: Path) -> None:
    """A follower driven by a replay of the curve: the run's time stays within 10% of the
    limit at start and the intensity steers the caps."""
    clock = [0.0]
    factor = Series(series_file(tmp_path / "i.csv", 0.0, 300.0, [500, 100, 500, 100]), "series", "g/kWh")
    follower = GridFollower(CURVE, 1.0, 0.1, factor, total_steps=1200, wall=lambda: clock[0])
    rung, used = 0, []
    for step in range(0, 1200, 25):
        rung = follower.decide(step, rung, clock[0])
        used.append((factor.peek(clock[0]).value, rung))
        clock[0] += 25 * CURVE.seconds[rung]
    follower.decide(1200, rung, clock[0])
    assert clock[0] <= 1.1 * 1200 * (1 + 0.01)
    assert follower.slowdown() == pytest.approx(clock[0] / 1200 - 1, abs=1e-9)
    clean = [CURVE.joules[r] for v, r in used if v == 100]
    dirty = [CURVE.joules[r] for v, r in used if v == 500]
    assert sum(dirty) / len(dirty) < sum(clean) / len(clean) - 20  # leaner while dirty


def test_the_search_booked_first_leaves_less_time_to_spend() -> None:
    """1000 steps within 20%: 1200 s. Fresh, the plan mixes 1.1 and 1.5 s per step (the
    slower first); after a search of 100 steps that took 215 s, 900 steps have 985 s: a mix
    of 1.0 and 1.1 s per step. Either plan uses its time to a slice."""
    fresh = GridFollower(CURVE, 1.0, 0.2, Fixed(300.0, "given"), total_steps=1000, wall=lambda: 0.0)
    booked = GridFollower(CURVE, 1.0, 0.2, Fixed(300.0, "given"), total_steps=1000, wall=lambda: 0.0)
    booked.book(seconds=215.0, steps=100, since=(100, 0.0))
    assert fresh.decide(0, 0, 0.0) == 2 and fresh.plan is not None
    assert fresh.plan.seconds == pytest.approx(1200.0, abs=1200.0 / SLICES)
    assert booked.decide(100, 0, 0.0) == 1 and booked.plan is not None
    assert booked.plan.seconds == pytest.approx(985.0, abs=985.0 / SLICES)
    assert booked.excess_s == pytest.approx(215.0 - 120.0)
    assert booked.decide(125, 0, 25.0) == 1 and booked.spent() == (240.0, 125)  # the first stretch is booked


@pytest.mark.parametrize("total_steps", [None, 5000])
def test_the_reserve_is_the_doubt_about_the_time_booked_with_the_spread_pooled_over_rungs(total_steps) -> None:
    """Eight stretches at the limit at start that happen to agree exactly, a hundred at rung 1
    that spread by 1%: the steps' noise is the workload's, so the limit at start's standard
    error is 1% over root 8, not 0; the reserve is 2.33 standard errors (99%) of the time
    booked against the allowance. Rung 0's error weighs on the allowance less its own steps:
    the whole run's when its length is known (kept from the start), else the run's so far."""
    follower = GridFollower(CURVE, 1.0, 0.1, Fixed(300.0, "given"), total_steps=total_steps, wall=lambda: 0.0, every=10)
    now, step = 0.0, 0
    paces = [(0, 1.0)] * MIN_STRETCHES + [(1, 1.1 * (1.01 if i % 2 else 0.99)) for i in range(100)]
    follower.decide(step, 0, now)
    for rung, pace in paces:  # each decision books the stretch just run, at its rung and pace
        step, now = step + 10, now + 10 * pace
        follower.decide(step, rung, now)
    relative = math.sqrt(100 * 0.01**2 / (MIN_STRETCHES - 1 + 99))
    assert follower.spread(0) == pytest.approx(relative / math.sqrt(MIN_STRETCHES), rel=1e-3)
    assert follower.spread(1) == pytest.approx(1.1 * relative / 10, rel=1e-3)
    allowance = 1.1 * (total_steps or 10 * len(paces))
    expected = 2.3263 * math.hypot(1000 * follower.spread(1), (80 - allowance) * follower.spread(0))
    assert follower.reserve_s == pytest.approx(expected, rel=1e-3)


def test_a_rung_the_search_measured_a_little_slow_is_planned_on_its_central_figure() -> None:
    """Zeus's V100 ShuffleNet v2 at 5% (per step, as fractions of the limit at start): 150 W
    1.0208 s and 0.8643 J, 125 W 1.0586 s and 0.7564 J, 100 W 1.1105 s and 0.6576 J. The best
    mix within 5% is 125 W and 150 W (0.781 J a step); 150 W with 100 W gives 0.797. The
    search measured 125 W at 1.061 s with a standard error of 0.75%: at the upper end of its
    interval, 1.073 s, it loses to the 150/100 mix and is never run (the benchmark's seed 1
    lost 2.2 points so). The plan takes a rung not measured yet at its central figure: 125 W
    is run, its stretches replace the search's figure, and the run comes within half a point
    of the best mix, within 5%. Until then its steps are booked at the upper end."""
    seconds, joules = (1.0, 1.0208, 1.0586, 1.1105), (1.0, 0.8643, 0.7564, 0.6576)
    curve = Curve((0, 1, 2, 3), (1.0, 1.0208, 1.061, 1.1105), joules, (0.001, 0.0075, 0.0075, 0.0075))
    follower = GridFollower(curve, 1.0, 0.05, Fixed(300.0, "given"), total_steps=4000, wall=lambda: 0.0, every=25)
    z = NormalDist().inv_cdf(CONFIDENCE)
    rung, now, used = 0, 0.0, []
    for step in range(0, 4000, 25):
        rung = follower.decide(step, rung, now)
        if used.count(2) == 25:  # one stretch at 125 W: booked on the search's figure, at its upper end
            assert follower.seconds(2) == pytest.approx(1.061 + z * 0.0075)
        used += [rung] * 25
        now += 25 * seconds[rung]
    assert used.count(2) > 2000
    assert now <= 1.05 * 4000
    assert sum(joules[r] for r in used) / 4000 <= 0.781 + 0.005
    assert follower.seconds(2) == pytest.approx(1.0586)


def probed(seconds: tuple[float, ...], joules: tuple[float, ...], slowdown: float) -> list[int]:
    """The decisions at which a follower puts the limit at start back, over 6000 steps at a
    fixed intensity, each stretch at the curve's exact pace (the limit at start measured by
    the search with a standard error of 0.5%)."""
    curve = Curve(tuple(range(len(seconds))), seconds, joules, (0.005,) + (0.0,) * (len(seconds) - 1))
    follower = GridFollower(curve, 1.0, slowdown, Fixed(300.0, "given"), total_steps=6000, wall=lambda: 0.0)
    rung, now, probes = 0, 0.0, []
    for step in range(0, 6000, 25):
        rung = follower.decide(step, rung, now)
        probes += [step] if rung == 0 and follower.probing(step) else []
        now += 25 * seconds[rung]
    assert now <= (1 + slowdown) * 6000
    return probes


def test_the_limit_at_start_is_measured_again_only_where_the_time_it_frees_buys_more_than_its_energy() -> None:
    """The search's 0.5% on the limit at start keeps 2.33 x 1.05 x 6000 x 0.005 = 73 s in hand
    at the end. At 5% with a cap 20% leaner for 5% more time, that time is worth 4 J a second
    and the eight stretches (200 steps at 0.2 J more, 10 s sooner) cost 40 J less 40: they
    are run. At 20% (84 s in hand) with a third cap only 0.5% leaner than the second for 28%
    more time, a second is worth 0.02 J: the stretches would cost about 40 J for 1.5 J, and
    are not run."""
    dear = probed((1.0, 1.05, 1.3), (1.0, 0.8, 0.79), 0.05)
    assert len(dear) == MIN_STRETCHES and dear == list(range(dear[0], dear[0] + 25 * MIN_STRETCHES, 25))
    assert probed((1.0, 1.02, 1.3), (1.0, 0.8, 0.795), 0.2) == []


def resnet50_a40() -> Job:
    return next(j for j in zeus_jobs() if j.name == "A40 resnet50")


def follow_resnet50(tmp_path: Path, seed: int) -> tuple[float, float, float]:
    """A follower on Zeus's A40 ResNet-50 at 5% over the recorded day compressed into 6000
    steps, on a manual clock: (its saving, the offline optimum's, its slowdown), all read from
    the table.

    It starts from what the benchmark's search measured (seed 0, on the code before the
    fix): every rung's seconds at the upper end of their interval (200 W at 0.634 s where
    the table says 0.630), the limit at start 0.3% slow (0.6019 s, standard error 0.58%),
    and 110 steps of search that took 71.8 s; the curve now carries the central figures, a
    standard error (taken as the reference's, 3.47 ms) below them. Each stretch then runs at
    the table's pace with the noise of 25 steps of 2% each."""
    job, steps, slowdown, every = resnet50_a40(), 6000, 0.05, 25
    rng = random.Random(seed)
    t0 = job.seconds(job.caps[0])
    grid = Grid(steps * t0 / len(Grid(1.0).values))
    origin = 1.7e9
    factor = Series(grid.write(tmp_path / "intensity.csv", origin), "series", "g/kWh")
    spread, upper = 0.00347, (0.61403, 0.61565, 0.62630, 0.63441, 0.71393, 0.93003)
    z = NormalDist().inv_cdf(CONFIDENCE)
    curve = Curve(
        tuple(range(7)),
        (0.60188, *(s - z * spread for s in upper)),
        (155.91, 153.58, 147.06, 137.49, 124.90, 123.51, 137.04),
        (spread,) * 7,
    )  # caps 300 W down to 150 W
    clock = [0.0]
    follower = GridFollower(curve, 0.60188, slowdown, factor, steps, lambda: origin + clock[0], every)
    caps = [job.caps[0]] * 110
    follower.book(71.8, 110, since=(110, 0.0))
    clock[0], rung, step = 71.8, 0, 110
    while step < steps:
        rung = follower.decide(step, rung, clock[0])
        count = min(every - step % every, steps - step)
        caps += [job.caps[rung]] * count
        clock[0] += count * job.seconds(job.caps[rung]) * (1 + rng.gauss(0, 0.02 / math.sqrt(count)))
        step += count
    base_t, base = replay_table(job, grid, [job.caps[0]] * steps)
    ours_t, ours = replay_table(job, grid, caps)
    ours_t += 71.8 - sum(job.seconds(c) for c in caps[:110])  # the search's steps took what they took
    truth = Curve(tuple(range(len(job.caps))), tuple(map(job.seconds, job.caps)), tuple(map(job.joules, job.caps)))
    plan = Plan.solve(truth, grid.over, 0.0, steps, (1 + slowdown) * base_t)
    offline_t, offline = table_replay(job, grid, steps, lambda t: job.caps[plan.rung(truth, grid.at(t), t)])
    assert offline_t <= (1 + slowdown) * base_t * (1 + 1e-6)
    return 1 - ours / base, 1 - offline / base, ours_t / base_t - 1


def replay_table(job: Job, grid: Grid, caps: list[float]) -> tuple[float, float]:
    steps = iter(caps)
    return table_replay(job, grid, len(caps), lambda t: next(steps))


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_following_a_day_comes_within_two_points_of_the_offline_optimum_within_the_slowdown(
    tmp_path: Path, seed: int
) -> None:
    """The case that missed: with a reserve of a whole stretch kept to the end, the plan's
    choice tipped to all or nothing at the cleanest hours, and the search's pessimistic
    figures steering the first decisions, following saved 16.6% where the offline optimum
    saves 19.1% (200 W all day). Now: within 2 points, and never past 5%."""
    saving, offline, slowdown = follow_resnet50(tmp_path, seed)
    assert offline == pytest.approx(0.1915, abs=0.001)
    assert saving >= offline - 0.02
    assert slowdown <= 0.05


def test_a_change_of_pace_is_a_changed_workload() -> None:
    """`WATCH` stretches `CHANGE` x 1.5 slower than the curve says: search again; a pace
    within noise is not a change."""
    for factor, changed in ((1 + 1.5 * CHANGE, True), (1 + CHANGE / 3, False)):
        follower = GridFollower(CURVE, 1.0, 0.1, Fixed(300.0, "given"), total_steps=None, wall=lambda: 0.0)
        now, rung = 0.0, 0
        for i in range(WATCH + 1):
            rung = follower.decide(i * 25, rung, now)
            now += 25 * CURVE.seconds[rung] * factor
        assert follower.changed() is changed


def test_measured_stretches_replace_the_search_figure() -> None:
    follower = GridFollower(CURVE, 1.0, 5.0, Fixed(300.0, "given"), total_steps=None, wall=lambda: 0.0)
    now = 0.0
    for i in range(MIN_STRETCHES + 1):
        assert follower.decide(i * 10, 2, now) == 2
        now += 10 * 1.6  # rung 2 runs at 1.6 s per step, not the search's 1.5
    assert follower.seconds(2) == pytest.approx(1.6, rel=1e-6)
    assert follower.state_dict() == {"seconds": pytest.approx(10 * MIN_STRETCHES * 1.6), "steps": 10 * MIN_STRETCHES}


# ----------------------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"watts": 200, "follow": "carbon"}, "follow='carbon' needs watts='auto'"),
        ({"watts": "auto", "follow": "price"}, "follow must be one of"),
        ({"watts": "auto", "follow": True}, "follow"),
        ({"watts": "auto", "carbon_intensity_series": "i.csv"}, "carbon_intensity_series .* only with follow='carbon'"),
        ({"watts": "auto", "follow": "cost", "electricity_maps_zone": "X"}, "electricity_maps_zone .* follow='carbon'"),
        ({"watts": "auto", "follow": "carbon", "price_per_kwh": 0.2}, "price_per_kwh .* only with follow='cost'"),
    ],
)  # fmt: skip
def test_follow_arguments_are_checked_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        PowerCapRun(**kwargs)


# ----------------------------------------------------------------------------- end to end
def bert() -> Job:
    return next(j for j in zeus_jobs() if j.name == "V100 bert-base-uncased")


@pytest.mark.slow
def test_a_search_that_left_the_cap_beyond_the_limit_unmeasured_no_longer_costs_the_mix() -> None:
    """The benchmark's miss at 5% (V100 ShuffleNet v2, seed 2): the search measured 250,
    200, 150 and 100 W, and following, mixing only those, came 2.4 points short of the
    offline optimum, which runs 125 W most of the day. The search for following now
    measures the cap just slower than the one it would keep: within 2 points, within 5%."""
    case = follow_case(next(j for j in zeus_jobs() if j.name == "V100 shufflenetv2"), 0.05, 6000, seed=2)
    assert 125.0 in case.caps and case.kept[0] == 150.0  # the search keeps its own choice
    assert case.ours[0] >= case.offline[0] - 0.02 and case.ours[1] <= 0.05


@pytest.mark.slow
def test_the_benchmark_sets_following_beside_the_cap_its_own_search_keeps() -> None:
    """`benchmarks.cap_finder`'s column "the search's cap": V100 ResNet-18 x2 at 20%, where
    100 W is best all day. The search keeps 100 W; run for the rest of the day after the
    search's own steps, it saves less than the oracle's 100 W from the first step (the
    search's steps at other caps cost), and following, which keeps 100 W too, saves the
    same within 0.2 point."""
    case = follow_case(next(j for j in zeus_jobs() if j.name == "V100 resnet18 x2"), 0.2, 6000, seed=0)
    (cap, saving, _), (kept_cap, kept, kept_time) = case.static, case.kept
    assert cap == kept_cap == 100.0
    assert saving - 0.01 < kept < saving and kept_time <= 0.2
    assert case.ours[0] == pytest.approx(kept, abs=0.002)


def test_follow_carbon_on_a_recorded_profile_emits_less_than_the_best_static_cap(tmp_path: Path) -> None:
    """V100 BERT (Zeus's profile), 3000 steps, dirty (500 g/kWh) for the first half of the
    time at the limit at start, then clean (100): following emits less than the best static
    cap within 10% (both read from the table), stays within 10%, logs and records every
    change, and puts the limit at start back."""
    job, steps, slowdown = bert(), 3000, 0.1
    t0 = job.seconds(job.caps[0])
    half = steps * t0 / 2
    table = TableJob([TableBoard(p) for p in job.boards], seed=1, sample_interval_s=t0 / 5)
    origin = datetime.now(timezone.utc).timestamp()
    series = series_file(tmp_path / "intensity.csv", origin - 3600, 3600 + half, [500, 100, 100])
    result = run_capped(table, steps, max_slowdown=slowdown, follow="carbon", carbon_intensity_series=series)

    grid = dirty_then_clean(half)
    ours_t = sum(job.seconds(s.cap_w) for s in result.steps)
    ours = sum(job.joules(s.cap_w) * grid((s.start + s.end) / 2) for s in result.steps)
    statics = []
    for cap in job.caps:
        t, emitted = 0.0, 0.0
        for _ in range(steps):
            emitted += job.joules(cap) * grid(t + job.seconds(cap) / 2)
            t += job.seconds(cap)
        statics.append((t, emitted))
    best_static = min(e for t, e in statics if t <= (1 + slowdown) * steps * t0)
    assert ours_t <= (1 + slowdown) * steps * t0
    assert ours < best_static * 0.99
    assert len({s.cap_w for s in result.steps[steps // 10 :]}) >= 2  # the cap moved with the grid
    assert result.run.limits is not None and not result.run.limits.capped
    assert all(b.current_mw == b.limits().max_mw for b in table.boards)  # the limit at start is back
    assert any("Followed the grid intensity" in n.text for n in result.notices)


def test_the_searchs_curve_holds_central_figures_and_their_spreads() -> None:
    """The finder hands following each measured cap's central seconds per step and their
    standard error: on V100 BERT (Zeus's profile, 2% noise on each step's time) every cap's
    measured slowdown lies within four of its standard errors of the table's, 0.5 of them
    above it on average (the upper ends of the intervals would be 2.1 above), and the upper
    end it is booked at is above the central figure by 1.64 of them."""
    job = bert()
    t0 = job.seconds(job.caps[0])
    table = TableJob([TableBoard(p) for p in job.boards], seed=3, sample_interval_s=t0 / 5)
    result = run_capped(table, 400, max_slowdown=0.1, follow="cost", price_per_kwh=0.25)
    assert result.run.finder is not None
    found = result.run.finder.curve()
    assert found is not None
    curve, reference = found
    assert curve.seconds[0] == reference and len(curve.spreads) == len(curve.rungs) >= 3
    errors = []  # each cap's measured slowdown less the table's, in its standard errors
    for rung, seconds, spread in zip(curve.rungs, curve.seconds, curve.spreads):
        assert 0 < spread < 0.02 * reference
        errors += [(seconds - reference * job.seconds(job.caps[rung]) / t0) / spread] if rung else []
    assert all(abs(e) <= 4 for e in errors) and sum(errors) / len(errors) < 1.0  # central (the upper ends: ~2)
    follower = GridFollower(curve, reference, 0.1, Fixed(300.0, "given"), total_steps=400, wall=lambda: 0.0)
    z = NormalDist().inv_cdf(CONFIDENCE)
    assert [follower.seconds(r) for r in curve.rungs[1:]] == pytest.approx(
        [s + z * e for s, e in zip(curve.seconds[1:], curve.spreads[1:])]
    )


def test_follow_cost_with_a_fixed_price_spends_the_slowdown_on_the_leanest_caps(tmp_path: Path) -> None:
    """A fixed price: nothing to follow; the cap spends the slowdown over the whole run on
    the leanest caps (mixing two where the best static cap leaves time unused), and says so."""
    job, steps, slowdown = bert(), 1500, 0.2
    t0 = job.seconds(job.caps[0])
    table = TableJob([TableBoard(p) for p in job.boards], seed=2, sample_interval_s=t0 / 5)
    result = run_capped(table, steps, max_slowdown=slowdown, follow="cost", price_per_kwh=0.25)
    assert any(n.level == "info" and "price is fixed" in n.text for n in result.notices)
    seconds = sum(job.seconds(s.cap_w) for s in result.steps)
    saving = 1 - sum(job.joules(s.cap_w) for s in result.steps) / (steps * job.joules(job.caps[0]))
    best_static = max(job.saving(c) for c in job.caps if job.slowdown(c) <= slowdown)
    assert seconds <= (1 + slowdown) * steps * t0
    assert saving >= best_static - 0.01


def test_follow_without_an_intensity_keeps_the_search_choice(tmp_path: Path) -> None:
    job = bert()
    table = TableJob([TableBoard(p) for p in job.boards], seed=3, sample_interval_s=job.seconds(job.caps[0]) / 5)
    result = run_capped(table, 400, max_slowdown=0.1, follow="cost")
    assert [n.level for n in result.notices if "needs a price" in n.text] == ["warn"]
    assert result.run.follower is None
    assert result.run.finder is not None and not result.run.finder.partner  # no phase for a plan never made
    assert not any("one phase for following" in n.text for n in result.notices)


def test_a_resumed_run_keeps_the_search_and_the_time_booked(tmp_path: Path) -> None:
    """`PowerCapRun.state_dict` after a followed run, loaded into a new run: no search (the
    checkpoint's choice is in force from the first step), and the follower starts from the
    seconds and steps booked before the checkpoint."""
    job, slowdown = bert(), 0.1
    t0 = job.seconds(job.caps[0])
    table = TableJob([TableBoard(p) for p in job.boards], seed=4, sample_interval_s=t0 / 5)
    first = run_capped(table, 600, total_steps=1200, max_slowdown=slowdown, follow="cost", price_per_kwh=0.3)
    state = first.run.state_dict()
    # every step timed: all but the first, which ends before the search's clock starts
    assert state["finder"]["chosen"] == first.run.finder.chosen and state["follower"]["steps"] == 599

    table = TableJob([TableBoard(p) for p in job.boards], seed=5, sample_interval_s=t0 / 5)
    second = run_capped(
        table, 100, total_steps=600, state=state, max_slowdown=slowdown, follow="cost", price_per_kwh=0.3
    )
    chosen_w = first.run.finder.cap_w(first.run.finder.chosen)
    assert second.steps[1].cap_w == chosen_w  # in force from the first step: not searched again
    assert any("kept (" in n.text for n in second.notices) and not any("Searching" in n.text for n in second.notices)
    assert second.run.follower is not None and second.run.follower.booked[1] == 599


def test_a_changed_workload_is_searched_again_and_its_time_still_counts(tmp_path: Path) -> None:
    """From a third of the run on, every step takes 30% longer (the workload changed): the
    pace leaves the curve, every node searches again, and the new follower carries the
    time booked before (the steps it has booked are all the steps timed)."""
    job, steps = bert(), 1500
    t0 = job.seconds(job.caps[0])
    slower = Disturbance(start_s=steps * t0 / 3, end_s=1e9, factor=1.3)
    table = TableJob([TableBoard(p) for p in job.boards], seed=6, sample_interval_s=t0 / 5, disturbances=[slower])
    result = run_capped(table, steps, max_slowdown=0.1, follow="cost", price_per_kwh=0.3)
    texts = [n.text for n in result.notices]
    assert sum("Searching for the power cap" in t for t in texts) == 2
    assert sum("the power-cap search runs again" in t for t in texts) == 1
    follower = result.run.follower
    assert follower is not None and follower.spent()[1] >= steps - 2 * 25  # all but the last stretch or two


def test_finishing_early_at_a_cap_both_faster_and_leaner_beats_a_mix_that_uses_all_the_time() -> None:
    """Zeus's A40 ResNet-18 (caps 300, 175, 150 W): 175 W is faster than the limit at start
    and uses least energy per step; 150 W draws less power but more energy per step. The
    plan must look past the least value of a step that keeps the deadline (a mix of 175
    and 150 W filling the time) to the 175 W run that finishes early and emits least."""
    curve = Curve((0, 1, 2), (0.2304, 0.2253, 0.2656), (51.34, 38.38, 39.91))
    grid = dirty_then_clean(400.0, dirty=300.0, clean=250.0)
    steps = 6000
    plan = Plan.solve(curve, at_each(grid), 0.0, steps, 1.05 * steps * 0.2304)
    _, only_175 = replay(curve, grid, steps, lambda t: 1)
    assert plan.rung(curve, 300.0) == plan.rung(curve, 250.0) == 1
    assert plan.emission == pytest.approx(only_175, rel=0.002)


class Collectives:
    """Two ranks in threads: an element-wise sum every rank reaches (a barrier on each side)."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=20)
        self.slots: list[list[float]] = [[] for _ in range(world)]
        self.calls = [0] * world

    def ranks(self, rank: int) -> Ranks:
        world = len(self.slots)

        def total(values: list[float]) -> list[float]:
            self.calls[rank] += 1
            self.slots[rank] = values
            self.barrier.wait()
            summed = [sum(column) for column in zip(*self.slots)]
            self.barrier.wait()
            return summed

        return Ranks(
            rank=rank, local_rank=rank, world_size=world, sum=total, any=lambda flag: total([float(flag)])[0] > 0
        )


def two_ranks(tmp_path: Path, steps: int, second_series: bool) -> tuple[CapRunResult, list, Collectives]:
    """Rank 0 leads the node and caps its board; rank 1 shares the node (no board of its own),
    each in its own thread with the same steps; both follow the same series (or rank 1 has none)."""
    job = bert()
    t0 = job.seconds(job.caps[0])
    table = TableJob([TableBoard(p) for p in job.boards], seed=7, sample_interval_s=t0 / 5)
    series = series_file(tmp_path / "i.csv", datetime.now(timezone.utc).timestamp() - 3600, 3600 + steps * t0 / 2,
                         [500, 100, 100])  # fmt: skip
    collectives = Collectives(2)
    second: list = []

    def rank_one() -> None:
        grid = {"carbon_intensity_series": series} if second_series else {}
        run = PowerCapRun(watts="auto", max_slowdown=0.1, follow="carbon", **grid)
        notices = run.begin(collectives.ranks(1), None, steps)
        for step in range(1, steps + 1):
            metrics, said = run.step(step)
            second.append(metrics)
            notices += said
        second.append(notices + run.finish())

    thread = threading.Thread(target=rank_one)
    thread.start()
    first = run_capped(
        table, steps, ranks=collectives.ranks(0), max_slowdown=0.1, follow="carbon", carbon_intensity_series=series
    )
    thread.join(timeout=30)
    assert not thread.is_alive()
    return first, second, collectives


def test_every_rank_reaches_the_same_decisions(tmp_path: Path) -> None:
    """A node's second rank takes part in every decision (the same collectives at the same
    steps) and changes nothing; the leader follows the grid."""
    first, second, collectives = two_ranks(tmp_path, 1200, second_series=True)
    assert collectives.calls[0] == collectives.calls[1] >= 1200 // 25
    assert first.run.follower is not None and len({s.cap_w for s in first.steps[200:]}) >= 2
    assert all(metrics == {} for metrics in second[:-1])  # no board, no change, nothing logged


def test_a_rank_without_the_intensity_means_no_rank_follows(tmp_path: Path) -> None:
    first, second, collectives = two_ranks(tmp_path, 300, second_series=False)
    assert collectives.calls[0] == collectives.calls[1]
    assert first.run.follower is None  # the leader has the intensity, but not every rank: the search's choice stays
    assert [n.level for n in first.notices if "another rank has no grid intensity" in n.text] == ["warn"]
    assert [n.level for n in second[-1] if "follow='carbon' needs" in n.text] == ["warn"]


@functools.cache
def followed_state() -> dict:
    """The `PowerCapRun.state_dict` of 600 steps of a 1200-step run that follows the price (made once)."""
    job = bert()
    table = TableJob([TableBoard(p) for p in job.boards], seed=4, sample_interval_s=job.seconds(job.caps[0]) / 5)
    first = run_capped(table, 600, total_steps=1200, max_slowdown=0.1, follow="cost", price_per_kwh=0.3)
    return first.run.state_dict()


@pytest.mark.parametrize(
    "saved",
    ["garbage", {"seconds": None, "steps": 10}, {"seconds": "x"}, {"seconds": 1.0, "steps": 2.5e30},
     {"seconds": 1.0, "steps": 10**30}, {"seconds": float("nan"), "steps": 599}, {"seconds": -5.0, "steps": 599}],
)  # fmt: skip
def test_a_malformed_follower_state_is_ignored_as_a_malformed_search_state(saved) -> None:
    # The follower's part of a checkpoint was taken as it came: a string or a None raised into the first step,
    # 10**30 steps booked a slowdown of -100% (the rest of the run +21% where 10% was allowed), a NaN booked NaN.
    job, slowdown = bert(), 0.1
    t0 = job.seconds(job.caps[0])
    state = {**followed_state(), "follower": saved}
    table = TableJob([TableBoard(p) for p in job.boards], seed=5, sample_interval_s=t0 / 5)
    second = run_capped(
        table, 600, total_steps=600, state=state, max_slowdown=slowdown, follow="cost", price_per_kwh=0.3
    )
    follower = second.run.follower
    assert follower is not None and follower.booked[1] < 5  # as if none was saved: nothing before this run
    assert math.isfinite(follower.slowdown())
    took = second.steps[-1].end - second.steps[0].start
    assert took / (600 * t0) - 1 <= slowdown + 0.02  # within the limit (the noise's 2%)


@pytest.mark.parametrize("resume", ["at train start", "at the first step"])
def test_a_run_preempted_during_its_search_goes_on_with_it_and_keeps_its_slowdown(resume) -> None:
    """Checkpointed and requeued every 60 steps, before the search (about 110 steps) could end:
    only a finished search was saved, so each part searched again from scratch at slow caps and
    never followed (+23% over the run where 10% was allowed); the search steps were never booked
    either. Now a search in progress is saved, goes on after the resume within the same step
    budget, and its steps and time before the checkpoint count against the run's slowdown."""
    job, slowdown, total, every = bert(), 0.1, 720, 60
    t0 = job.seconds(job.caps[0])
    state: dict | None = None
    elapsed, notices, searched = 0.0, [], []
    for done in range(0, total, every):
        table = TableJob([TableBoard(p) for p in job.boards], seed=done, sample_interval_s=t0 / 5)
        part = run_capped(
            table, every, total_steps=total, state=state, max_slowdown=slowdown, follow="cost",
            price_per_kwh=0.3, resumed_at=done or None, told_at_start=resume == "at train start",
        )  # fmt: skip
        elapsed += part.steps[-1].end - part.steps[0].start
        notices += [n.text for n in part.notices]
        state = part.run.state_dict()
        searched.append(part.run.finder is not None and part.run.finder.done)
    assert searched[0] is False and searched[1:3].count(True) >= 1  # the search ended in the second or third part
    assert sum("Searching for the power cap" in text for text in notices) == 1  # searched once, not once a part
    assert any("the search saved in the checkpoint goes on" in text for text in notices)
    finder_state = state["finder"]
    assert finder_state["chosen"] is not None and finder_state["steps"] <= part.run.finder.budget
    assert elapsed / (total * t0) - 1 <= slowdown + 0.01  # within the limit over the whole run (1%: the noise)


def test_a_search_cut_shorter_than_its_reference_phase_at_every_checkpoint_still_ends() -> None:
    """Requeued every 25 steps, before the warm-up and the reference phase could end: nothing was measured,
    so nothing was saved, and every part began the search again (600 steps searching against a budget of
    116, the search never over). The steps of every part now count against one budget; the search ends
    with the limit at start when no phase could be measured."""
    job, total, every = bert(), 400, 25
    t0 = job.seconds(job.caps[0])
    state, notices, ended_at = None, [], None
    for done in range(0, total, every):
        table = TableJob([TableBoard(p) for p in job.boards], seed=done, sample_interval_s=t0 / 5)
        part = run_capped(table, every, total_steps=total, state=state, max_slowdown=0.1, resumed_at=done or None)
        notices += [n.text for n in part.notices]
        state, finder = part.run.state_dict(), part.run.finder
        if finder is not None and finder.done and ended_at is None:
            ended_at = done + every
            assert finder.chosen == 0 and finder.steps_used <= finder.budget + 5  # its warm-up past the budget
    assert ended_at is not None and ended_at <= 116 + every
    assert sum("Searching for the power cap" in text for text in notices) == 1


@pytest.mark.parametrize("told_at_start", [True, False], ids=["HF, EnergyLoop", "Lightning"])
def test_a_search_resumed_often_keeps_to_its_step_budget(told_at_start) -> None:
    """Requeued every 30 steps, its checkpoint stored as JSON (as HF does): each part warmed up for 5 steps
    even with 3 steps of the budget left, and the first step of each part (two in Lightning, which puts a
    checkpoint's state in force at the first step) counted nowhere: 126 steps searching against 116."""
    import json

    job, total, every = bert(), 240, 30
    t0 = job.seconds(job.caps[0])
    state, finder = None, None
    for done in range(0, total, every):
        table = TableJob([TableBoard(p) for p in job.boards], seed=done, sample_interval_s=t0 / 5)
        part = run_capped(table, every, total_steps=total, state=state, max_slowdown=0.1, resumed_at=done or None,
                          told_at_start=told_at_start)  # fmt: skip
        state = json.loads(json.dumps(part.run.state_dict()))
        finder = part.run.finder
        if finder.done:
            break
    assert finder is not None and finder.done and finder.chosen is not None
    assert finder.steps_used <= finder.budget, (finder.steps_used, finder.budget)  # every part's steps counted


def test_a_checkpoint_between_two_decisions_books_every_step_taken() -> None:
    """The follower books its steps at its decisions, every 25 steps: a checkpoint taken between two
    saved only those booked, so a resumed run counted up to 24 steps and their time nowhere (720 steps
    requeued every 20 booked 429). The stretch since the last decision is saved with them."""
    job = bert()
    t0 = job.seconds(job.caps[0])
    table = TableJob([TableBoard(p) for p in job.boards], seed=4, sample_interval_s=t0 / 5)
    result = run_capped(table, 610, total_steps=1200, max_slowdown=0.1, follow="cost", price_per_kwh=0.3)
    booked = result.run.state_dict()["follower"]
    assert booked["steps"] == 609  # every step timed (the first ends before the search's clock starts)
    took = result.steps[-1].end - result.steps[0].end  # the 609 steps' own time
    assert booked["seconds"] == pytest.approx(took, rel=0.02)
