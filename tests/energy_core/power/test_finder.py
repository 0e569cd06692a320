"""The automatic power-cap search: its pure decisions, its estimates, and the real CapFinder on table-driven boards.

Everything runs in virtual time (no sleeping): the figures are exact, and no test depends
on the machine's speed or load. The busy-machine replay in real time is the benchmark's
(benchmarks/cap_finder.py).
"""

from __future__ import annotations

import math
import statistics

import pytest

from benchmarks.cap_finder import zeus_jobs
from energy_core.devices import DeviceError
from energy_core.power import PowerCapRun
from energy_core.power.finder.estimate import Estimate, Noise, Phase, trimmed_mean_and_spread
from energy_core.power.finder.finder import Done, Measuring, Ready, Settling, Warmup
from energy_core.power.finder.search import WAIT, CapSearch, Request, sweep_plan, zeus_steps
from tests.doubles.table_board import Disturbance, Profile, TableBoard, TableJob, run_search

CAPS = tuple(float(c) for c in range(300, 99, -25))  # a V100's or an A40's range on Zeus's grid
WIGGLE = (-0.004, 0.002, 0.004, -0.002)  # small, known step-to-step noise


def phase(rung: int, seconds: float, joules: float, steps: int = 8, wiggle: tuple[float, ...] = WIGGLE) -> Phase:
    """A phase of ``steps`` steps around (seconds, joules) per step, in sub-windows of 2 steps."""
    times = [seconds * (1 + wiggle[i % len(wiggle)]) for i in range(steps)]
    return Phase(rung, times, 2, [joules * (times[i] + times[i + 1]) / seconds for i in range(0, steps, 2)])


def table(name: str, seconds: tuple[float, ...], watts: tuple[float, ...]) -> Profile:
    return Profile(name, CAPS, seconds, tuple(s * w for s, w in zip(seconds, watts)))


def drive(search: CapSearch, figures: dict[int, tuple[float, float]], steps_left: int = 400) -> list[Request]:
    """Answer the search's requests from ``figures`` (rung -> (s, J) per step) until it chooses."""
    asked = []
    while (ask := search.next(steps_left)) is not None:
        assert ask is not WAIT  # every phase comes with its energy here
        asked.append(ask)
        steps_left -= ask.steps + search.settle_steps
        seconds, joules = figures[ask.rung]
        search.add(phase(ask.rung, seconds, joules, ask.steps))
    return asked


# Issue 17's V100 ResNet-18 at 5%: 225 W measured 7.1% slower, 200-150 W within 2-4%.
V100_TRAP = table(
    "V100 ResNet-18",
    (0.100, 0.101, 0.1005, 0.1071, 0.1031, 0.1022, 0.1019, 0.135, 0.190),
    (250, 250, 245, 222, 200, 176, 151, 126, 101),
)
# Issue 17's A40 ResNet-18: 175 W runs 2.2% faster than the uncapped board.
A40_TRAP = table(
    "A40 ResNet-18",
    (0.150, 0.149, 0.151, 0.146, 0.149, 0.1467, 0.170, 0.215, 0.300),
    (230, 230, 230, 222, 200, 175, 150, 125, 100),
)
# A40 ResNet-50 x4: time flat down to the board's minimum, where energy is least.
A40_FLAT = table(
    "A40 ResNet-50",
    (0.200, 0.201, 0.199, 0.200, 0.202, 0.200, 0.201, 0.203, 0.2012),
    (210, 210, 210, 210, 200, 175, 150, 125, 100),
)


# ----------------------------------------------------------------------------- the estimates
def test_a_late_wakeup_is_one_long_step_and_one_short_the_trimmed_mean_keeps_the_centre() -> None:
    """The training thread wakes 30 ms late once: that step looks 30 ms long and the next,
    the GPU having gone on, 30 ms short. The plain mean would hold; a rule that dropped only
    slow steps would be 3.5% fast; the trimmed mean is exact."""
    times = [0.1] * 20
    times[7] += 0.03
    times[8] -= 0.03
    mean, spread = trimmed_mean_and_spread(times)
    assert mean == pytest.approx(0.1) and spread == pytest.approx(0.0, abs=1e-12)
    assert statistics.mean([t for t in times if t < 0.12]) == pytest.approx(0.1 - 0.03 / 19)


def test_late_timestamps_cancel_in_a_span_and_count_only_at_its_ends() -> None:
    """The GPU takes 0.1 s a step; the training thread reads the clock 10-30 ms late after
    every other step. Each late reading makes a step long and the next short: the time per
    step is exact. The lateness is the neighbours' covariance, counted at the span's two
    ends only; the GPU's own share (variance + 2 covariance: none here) is taken one
    standard error high. The spread is well under the single steps' scatter over root n."""
    late = [0.0, 0.03, 0.0, 0.02, 0.0, 0.03, 0.0, 0.01] * 4 + [0.0]  # at each timestamp
    times = [0.1 + b - a for a, b in zip(late, late[1:])]
    estimate = Estimate(1)
    estimate.add(Phase(1, times, 8, None))
    deviations = [t / 0.1 - 1 for t in times]
    variance = sum(d * d for d in deviations) / 31
    covariance = sum(a * b for a, b in zip(deviations, deviations[1:])) / 31
    assert variance + 2 * covariance < 0  # the GPU's own share: none
    step = variance * math.sqrt(2 / 31 + 4 / 31)
    assert Noise.of(estimate.kept) == Noise(pytest.approx(step), pytest.approx(-covariance))
    mean, spread = estimate.time
    assert mean == pytest.approx(0.1) and spread == pytest.approx(0.1 * math.sqrt(32 * step - 2 * covariance) / 32)
    assert spread < 0.75 * 0.1 * statistics.stdev(deviations) / math.sqrt(32)


def test_a_late_timestamp_is_not_a_stall() -> None:
    """A sub-window made slow by a late reading at its end is made up by the next one: both
    are kept (leaving the slow one out alone would make the cap look 4% faster); a real
    wait of the GPU is not made up, and is left out."""
    late = [0.1] * 16
    late[3] += 0.06  # read 60 ms late at the end of the second sub-window ...
    late[4] -= 0.06  # ... so the third one's first step looks 60 ms short
    stall = [0.1] * 16
    stall[3] += 0.06
    assert Phase(1, late, 2).slow == frozenset() and Phase(1, stall, 2).slow == {1}
    estimate = Estimate(1)
    estimate.add(Phase(1, late, 2))
    assert estimate.time[0] == pytest.approx(0.1)


def test_trimmed_spread_is_tukey_mclaughlin() -> None:
    values = [float(v) for v in range(1, 11)]  # 20% cut: 3..8 kept; winsorized 3,3,3..8,8,8
    mean, spread = trimmed_mean_and_spread(values)
    winsorized = [3.0, 3.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 8.0, 8.0]
    assert mean == 5.5
    assert spread == pytest.approx(statistics.stdev(winsorized) / (0.6 * math.sqrt(10)))


def test_a_stalled_sub_window_is_left_out_of_the_energy() -> None:
    """The GPU waits 0.2 s in the third sub-window (idle at 30 W): its energy is left out,
    the rest gives the step's energy exactly."""
    times = [0.1] * 8
    times[5] += 0.2
    joules = [2 * 25.0, 2 * 25.0, 2 * 25.0 + 0.2 * 30.0, 2 * 25.0]  # 250 W x 0.1 s per step
    estimate = Estimate(1, resolution_s=0.0)
    estimate.add(Phase(1, times, 2, joules))
    assert estimate.left_out == 1
    energy = estimate.energy
    assert energy is not None and energy[0] == pytest.approx(25.0)


def test_energy_spread_is_the_counters_resolution_at_each_end_of_a_span() -> None:
    """Steady steps: the spread is the staleness of a reading (uniform over the 50 ms interval)
    at both ends of the phase: 250 W x 0.05 s x sqrt(2 / 12) over 0.8 s of steps."""
    estimate = Estimate(0, resolution_s=0.05)
    estimate.add(Phase(0, [0.1] * 8, 2, [50.0] * 4))
    assert estimate.energy == pytest.approx((25.0, 25.0 * 0.05 * math.sqrt(2 / 12) / 0.8))


def test_a_disturbed_phase_is_set_aside() -> None:
    estimate = Estimate(1)
    estimate.add(phase(1, 1.3, 8.8))  # a noisy neighbour: 30% slower
    estimate.add(phase(1, 1.0, 8.0))
    assert len(estimate.set_aside) == 1 and estimate.time[0] == pytest.approx(1.0, rel=1e-3)


# ----------------------------------------------------------------------------- the decisions
def test_the_sweep_goes_on_past_a_slow_cap_and_keeps_the_leanest_cap_within() -> None:
    """Zeus's A40 ResNet-18 profile at 5%: 250 and 200 W run 13% slower, 225 and 175 W
    within the limit between them; 175 W saves 25%."""
    (a40,) = [j for j in zeus_jobs() if j.name == "A40 resnet18"]
    figures = {r: (a40.seconds(c), a40.joules(c)) for r, c in enumerate(a40.caps)}
    search = CapSearch(9, max_slowdown=0.05, sweep_steps=8)
    asked = drive(search, figures)
    assert [a.rung for a in asked[:7]] == [0, 1, 2, 3, 4, 5, 6]
    assert asked[0].steps == 16 and all(a.steps == 8 for a in asked[1:7])
    assert search.over(2) and search.within(3) and search.over(4) and search.within(5)
    assert search.chosen == 5 and a40.caps[5] == 175.0


def test_two_starved_caps_end_the_sweep() -> None:
    """At 5%, 150 W is 13% slower and 125 W 43%: both over the limit by more than 5% again,
    the second the slower: 100 W is not measured."""
    seconds = (1.0, 1.01, 1.02, 1.03, 1.04, 1.05, 1.13, 1.43, 2.0)
    figures = {r: (s, 10.0 - r) for r, s in enumerate(seconds)}
    search = CapSearch(9, max_slowdown=0.05, sweep_steps=8)
    drive(search, figures)
    assert 8 not in search.estimates and 7 in search.estimates
    assert "1 below a cap that starves the GPU not measured" in search.why


def test_sweep_plan_fits_long_phases_over_fewer_rungs() -> None:
    # 9 rungs of 8 steps: (9 + 1) x 8 + 8 x 2 = 96 <= 100
    assert sweep_plan(9, room=100, steps=8, wanted=8, settle_steps=2) == (8, 1)
    # 22-step phases fit over rungs 0, 4, 8 only: (3 + 1) x 22 + 2 x 2 = 92 <= 100
    assert sweep_plan(9, room=100, steps=8, wanted=22, settle_steps=2) == (22, 4)
    # not even two rungs: the budget's phases
    assert sweep_plan(9, room=30, steps=6, wanted=40, settle_steps=2) == (6, 1)


def test_a_straddling_cap_is_measured_again_with_the_steps_its_margin_needs() -> None:
    """Rung 1 is 4.6% slower (limit 5%): within on its mean, not with 95% confidence. Rung 0
    has twice its steps, so it is rung 1 that is measured again, for as many more steps as
    bring the verdict's spread to margin / z (spreads fall as 1 / sqrt(steps))."""
    search = CapSearch(2, max_slowdown=0.05, sweep_steps=8)
    search.add(phase(0, 1.0, 10.0, 16))
    search.add(phase(1, 1.046, 9.0, 8, wiggle=(-0.01, -0.01, 0.01, 0.01)))
    verdict = search.verdict(1)
    assert verdict.slowdown == pytest.approx(0.046, abs=1e-4) and 0.5 < verdict.within < 0.95
    assert not search.within(1) and not search.over(1)
    own = search.estimates[1].time[1] / search.estimates[1].time[0]
    reference = search.estimates[0].time[1] / search.estimates[0].time[0]
    allowed = (0.05 - verdict.slowdown) / search.z / (1 + verdict.slowdown)
    expected = math.ceil(8 * (own**2 / (allowed**2 - reference**2) - 1))
    assert expected > 8 and search.next(steps_left=400) == Request(1, expected)
    assert search.next(steps_left=20) == Request(1, 18)  # as many as the budget allows (2 to settle)


def test_a_cap_unlikely_to_be_within_is_not_measured_again() -> None:
    search = CapSearch(2, max_slowdown=0.05, sweep_steps=8)
    wiggle = (-0.015, -0.015, 0.015, 0.015)  # the same noise on both: neither phase is disturbed
    search.add(phase(0, 1.0, 10.0, 16, wiggle))
    search.add(phase(1, 1.059, 9.0, 8, wiggle))  # 5.9% slower: under 20% likely within
    assert search.verdict(1).within < 0.2 and not search.over(1) and not search.within(1)
    assert search.next(steps_left=400) is None and search.chosen == 0


def test_a_saving_within_the_counters_resolution_keeps_the_limit_at_start() -> None:
    """A40 ShuffleNet's 225 W: as fast as 300 W; measured 1% leaner over 0.8 s, when a reading
    may be 50 ms stale at each end (a 2.6% spread): not a saving with 95% confidence."""
    search = CapSearch(2, max_slowdown=0.05, sweep_steps=8, resolution_s=0.05)
    search.add(Phase(0, [0.1] * 16, 4, [40.0] * 4))
    search.add(Phase(1, [0.1] * 8, 2, [19.8] * 4))
    verdict = search.verdict(1)
    assert verdict.saving == pytest.approx(0.01) and verdict.saving_spread == pytest.approx(
        0.99 * math.hypot(0.05 * math.sqrt(2 / 12) / 0.8, 0.05 * math.sqrt(2 / 12) / 1.6)
    )
    assert search.within(1) and not search.saves(1) and search.best() == 0


def test_the_choice_comes_with_its_confidence() -> None:
    search = CapSearch(3, max_slowdown=0.1, sweep_steps=8)
    drive(search, {0: (1.0, 10.0), 1: (1.03, 8.0), 2: (1.4, 7.0)})
    assert search.chosen == 1
    verdict = search.verdict(1)
    assert verdict.saving == pytest.approx(0.2, abs=0.002) and verdict.within > 0.999
    assert verdict.text(0.1).startswith("20.0% +- ") and "(within +10% with 100% confidence)" in verdict.text(0.1)


def test_the_search_waits_for_energy_it_needs_and_stops_within_its_budget() -> None:
    search = CapSearch(3, max_slowdown=0.1, sweep_steps=8)
    search.add(Phase(0, [1.0] * 16, 4, None))  # energy not fixed yet: the sweep goes on
    assert search.next(steps_left=100) == Request(1, 8)
    search.add(Phase(1, [1.0] * 8, 2, None))
    search.add(Phase(2, [1.5] * 8, 2, None))
    assert search.next(steps_left=100) is WAIT  # the choice needs the energy
    for rung, estimate in search.estimates.items():
        estimate.kept[0].joules = [10.0 * len(w) * (1 - 0.1 * rung) for w in estimate.kept[0].windows]
    assert search.next(steps_left=100) == Request(1, 8)  # the cap chosen so far, confirmed
    search.add(Phase(1, [1.0] * 8, 2, [18.0] * 4))
    assert search.next(steps_left=100) is None and search.chosen == 1
    short = CapSearch(9, max_slowdown=0.1, sweep_steps=8)  # rung 0 (16 + 2), then 8 + 2 per rung
    drive(short, {r: (1.0 + 0.01 * r, 10.0 - r) for r in range(9)}, steps_left=16 + 2 + 2 * 10 + 9)
    assert sorted(short.estimates) == [0, 1, 2] and short.chosen == 2


def test_for_following_the_cap_just_slower_than_the_best_is_measured_once_beyond_the_budget() -> None:
    """Zeus's V100 ShuffleNet v2 at 5%, swept every second rung (250, 200, 150, 100 W):
    150 W is the leanest within the limit; 125 W (+5.9%, 24% less energy) is over it and
    unmeasured. Following mixes the cap kept with the one beyond the limit, so with
    ``partner`` the search measures 125 W, once, after its budget is spent; the choice (150
    W) is the same. Without, 125 W is never measured."""
    (job,) = [j for j in zeus_jobs() if j.name == "V100 shufflenetv2"]
    figures = {r: (job.seconds(c), job.joules(c)) for r, c in enumerate(job.caps)}
    budget = 16 + 2 + 3 * (8 + 2)  # the sweep alone
    searches = {}
    for partner in (False, True):
        searches[partner] = search = CapSearch(7, max_slowdown=0.05, sweep_steps=8, stride=2, partner=partner)
        asked = drive(search, figures, steps_left=budget)
        assert search.chosen == 4 and job.caps[4] == 150.0
    assert 5 not in searches[False].estimates
    assert searches[True].history == [*searches[False].history, 5]
    assert searches[True].over(5) and searches[True].verdict(5).saving == pytest.approx(0.244, abs=0.005)
    assert asked[-1] == Request(5, 8)


def test_the_partner_phase_feeds_the_curve_not_the_choice() -> None:
    """Swept every second rung, rung 2 is the leanest within 10%; rung 3, unmeasured, is
    within too and leaner still. Measured once past the budget for following, it is not
    kept: one phase of it, unconfirmed, is not the search's standard for a choice. The
    choice is the one the search makes without it, and nothing is measured after it."""
    seconds, joules = (1.0, 1.01, 1.03, 1.06, 1.2), (10.0, 9.5, 9.0, 8.5, 8.0)
    figures = {r: (s, j) for r, (s, j) in enumerate(zip(seconds, joules))}
    budget = 16 + 2 + 2 * (8 + 2)  # the sweep of 0, 2, 4
    plain = CapSearch(5, max_slowdown=0.1, sweep_steps=8, stride=2)
    drive(plain, figures, steps_left=budget)
    search = CapSearch(5, max_slowdown=0.1, sweep_steps=8, stride=2, partner=True)
    asked = drive(search, figures, steps_left=budget)
    assert search.history == [*plain.history, 3] and asked[-1] == Request(3, 8)
    assert search.within(3) and search.best() == 3
    assert search.chosen == plain.chosen == 2


def test_zeus_steps_are_its_defaults_on_a_25_w_grid() -> None:
    assert zeus_steps(300_000, 100_000) == 450  # V100, A40: 9 limits x (10 + 40) steps
    assert zeus_steps(700_000, 200_000) == 1050  # H100 SXM: 21 limits


# ----------------------------------------------------------------------------- the finder on tables
def job(profile: Profile, boards: int = 1, seed: int = 0, **kwargs: object) -> TableJob:
    return TableJob([TableBoard(profile, index=i) for i in range(boards)], seed=seed, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1])
def test_the_issue_traps_no_longer_stop_the_search_uncapped(seed: int) -> None:
    v100 = run_search(job(V100_TRAP, seed=seed), max_slowdown=0.05)
    assert v100.chosen_w == 150.0 == V100_TRAP.best_within(0.05)  # 38.5% less energy at +1.9% time
    a40 = run_search(job(A40_TRAP, seed=seed), max_slowdown=0.05)
    assert a40.chosen_w == 175.0 == A40_TRAP.zeus_choice(0.05)  # 25.6% less energy at -2.2% time
    for result in (v100, a40):
        assert result.limit_at_end_w == result.chosen_w  # the cap kept is in force
        assert result.steps <= result.finder.budget == 149 < 450 / 3


def test_on_zeus_profiles_it_saves_zeus_energy_in_11_of_12_in_a_third_of_the_steps() -> None:
    """Zeus's twelve recorded profiles at 5%, in virtual time with 2% noise on each step's
    time: the choice saves at least Zeus's energy less 1 point, within the limit."""
    passed, ratios = 0, []
    for zeus_job in zeus_jobs():
        boards = [TableBoard(p, index=i) for i, p in enumerate(zeus_job.boards)]
        result = run_search(TableJob(boards, seed=3), max_slowdown=0.05)
        ours = (result.chosen_w or 0.0) / len(boards)
        zeus = zeus_job.zeus_choice(0.05)
        passed += zeus_job.slowdown(ours) <= 0.05 and zeus_job.saving(ours) >= zeus_job.saving(zeus) - 0.01
        ratios.append(result.steps / zeus_job.zeus_steps())
    assert passed >= 11 and max(ratios) <= 1 / 3


def test_on_a_busy_machine_late_wakeups_do_not_keep_the_limit_at_start() -> None:
    """Zeus's twelve profiles at 5% with the training thread waking up to 30% of a step
    late after every step (the GPU goes on with the work queued): single steps scatter six
    times as much as the GPU's own 2%. Judged on the single steps' trimmed mean and scatter
    (the rule before), the search saved Zeus's energy in 4 of 12 and kept the limit at
    start in most of the rest; over spans of steps it does in 8, never beyond the limit."""
    passed, over, ratios = 0, 0, []
    for zeus_job in zeus_jobs():
        boards = [TableBoard(p, index=i) for i, p in enumerate(zeus_job.boards)]
        result = run_search(TableJob(boards, seed=0, wake_share=0.3), max_slowdown=0.05)
        ours = (result.chosen_w or 0.0) / len(boards)
        over += zeus_job.slowdown(ours) > 0.05
        passed += (
            zeus_job.slowdown(ours) <= 0.05
            and zeus_job.saving(ours) >= zeus_job.saving(zeus_job.zeus_choice(0.05)) - 0.01
        )
        ratios.append(result.steps / zeus_job.zeus_steps())
    assert passed >= 8 and over == 0 and max(ratios) <= 1 / 3


def test_the_search_reaches_the_board_minimum() -> None:
    result = run_search(job(A40_FLAT, boards=4), max_slowdown=0.05)
    assert result.finder.fractions[-1] == pytest.approx(1 / 3)  # 100 W of 300 W
    assert result.chosen_w == 4 * 100.0  # four boards at their minimum limit
    assert all(board.sets[-2:] == [100_000, 300_000] for board in result.job.boards)  # kept, then restored


def test_min_watts_is_the_floor_of_the_search() -> None:
    result = run_search(job(A40_FLAT, boards=2), max_slowdown=0.05, min_watts=150)
    assert result.finder.fractions[-1] == 0.5
    assert result.chosen_w == 2 * 150.0
    assert min(mw for board in result.job.boards for mw in board.sets) == 150_000


def test_a_noisy_neighbour_during_the_best_caps_phase() -> None:
    """Steps 30% slower for 0.3 s in 150 W's phase (three of its eight steps): that phase
    is far noisier than the others, so it is left out of the noise pooled over the search
    (which stays the quiet run's) and 150 W is judged on its own noise and measured again;
    with its phases pooled, 150 W (1.9% slower) is kept."""
    quiet = run_search(job(V100_TRAP, seed=4), max_slowdown=0.05)
    start = next(t for t, cap in quiet.job.limit_log if cap == 150.0) + 0.3  # after the change's steps
    noisy = run_search(job(V100_TRAP, seed=4, disturbances=[Disturbance(start, start + 0.3, 1.3)]), max_slowdown=0.05)
    rung = noisy.finder.fractions.index(0.5)
    estimate = noisy.finder.search.estimates[rung]
    assert estimate.phases >= 2 and noisy.finder.search.noise.single < 1.5 * quiet.finder.search.noise.single
    assert estimate.time[0] == pytest.approx(V100_TRAP.s_per_step[rung], rel=0.01)
    assert noisy.chosen_w == 150.0


@pytest.mark.parametrize("seed", [0, 2, 3])  # the previous finder kept 175 W with each
def test_a_busy_spell_in_the_references_phase_is_measured_again(seed: int) -> None:
    """Zeus's V100 ResNet-50 at 10%, its steps 10% slower all through the limit at start's
    first phase: every cap looks 10% faster than it is, 225 and 200 W faster than the limit
    at start itself. Before, 175 W (+10.4%: over the limit) was kept; now rung 0 is
    measured again, the slowed phase set aside, and 200 W (+6.1%) is kept."""
    (v100,) = [j for j in zeus_jobs() if j.name == "V100 resnet50"]
    t0 = v100.seconds(v100.caps[0])
    spell = Disturbance(4 * t0, 21 * t0, 1.1)  # the warm-up's last step to the end of rung 0's phase
    boards = [TableBoard(p, index=i) for i, p in enumerate(v100.boards)]
    result = run_search(TableJob(boards, seed=seed, disturbances=[spell]), max_slowdown=0.1)
    reference = result.finder.search.estimates[0]
    assert reference.phases == 2 and len(reference.set_aside) == 1
    assert result.chosen_w == 200.0 == v100.zeus_choice(0.1)


def test_the_finder_goes_through_its_states_and_done_is_derived() -> None:
    def state_after(steps: int) -> object:
        return run_search(job(V100_TRAP), max_steps=steps, max_slowdown=0.05).finder.state

    assert isinstance(state_after(0), Ready)
    assert isinstance(state_after(1), Warmup)  # the first step starts the warm-up (5 steps)
    measuring = state_after(6)
    assert isinstance(measuring, Measuring) and measuring.request.rung == 0 and len(measuring.times) == 0
    sweep = measuring.request.steps // 2
    settling = state_after(6 + 2 * sweep)
    assert isinstance(settling, Settling) and settling.request == Request(1, sweep)
    finished = run_search(job(V100_TRAP), max_slowdown=0.05).finder
    assert isinstance(finished.state, Done) and finished.done and finished.chosen == finished.state.chosen


def test_on_the_training_thread_a_clock_read_while_measuring_and_a_comparison_otherwise() -> None:
    table_job = job(V100_TRAP)
    reads = []
    clock = table_job.meter.clock
    table_job.meter.clock = lambda: reads.append(1) or clock()  # type: ignore[method-assign]
    marks = []
    mark = table_job.meter.mark
    table_job.meter.mark = lambda: marks.append(1) or mark()  # type: ignore[method-assign]
    result = run_search(table_job, max_slowdown=0.05)
    search = result.finder.search
    measured = sum(e.steps + sum(len(p.times) for p in e.set_aside) for e in search.estimates.values())
    phases = len(search.history)
    assert len(marks) <= phases * 5  # a mark at each sub-window's end (4) and the phase's start
    assert len(reads) <= measured + len(marks) + phases + 2  # a timestamp per measured step, no more
    changes = sum(len(b.sets) for b in table_job.boards) - 1  # registration at start, then the search
    assert changes <= phases + 1


def test_summary_and_record_give_the_table_with_spreads_the_choice_and_its_confidence() -> None:
    result = run_search(job(V100_TRAP), max_slowdown=0.05)
    rows = result.finder.table()
    assert [r["cap_w"] for r in rows] == sorted((r["cap_w"] for r in rows), reverse=True)
    assert rows[0]["cap_w"] == 300.0 and rows[-1]["cap_w"] <= 125.0
    assert all(r["s_spread"] > 0 and r["j_spread"] > 0 for r in rows)
    choice = result.finder.choice()
    assert choice["cap_w"] == 150.0 and choice["zeus_steps"] == 450 and choice["steps"] <= 149
    assert "least energy per step" in choice["why"] and "within +5% with" in choice["confidence"]
    text = result.finder.summary()
    assert text.startswith("Power-cap search chose 150 W (50% of the limit at start): ")
    assert "Zeus's defaults: 450" in text and "*     150" in text


def test_the_choice_is_kept_across_a_checkpoint() -> None:
    first = run_search(job(V100_TRAP), max_slowdown=0.05)
    saved = first.finder.state_dict()
    resumed = run_search(job(V100_TRAP), max_slowdown=0.05, restore=saved)
    assert resumed.finder.done and resumed.finder.chosen == first.finder.chosen and resumed.chosen_w == 150.0
    assert resumed.limit_at_end_w == 150.0 and resumed.job.boards[0].sets == [300_000, 150_000, 300_000]
    assert resumed.finder.table() == first.finder.table()  # the same measurements, for the record
    assert "kept from the checkpoint" in resumed.finder.choice()["why"]
    other = run_search(job(V100_TRAP), max_steps=0, min_watts=200, restore=saved, restored=False)
    assert not other.finder.done  # another ladder: searched again
    assert not run_search(job(V100_TRAP), max_steps=0, restore={"fractions": "x"}, restored=False).finder.done


DAMAGED = {  # a stored phase changed as a hand-edited trainer_state.json might be
    "rung off the ladder": ("rung", 99),
    "no joules for its windows": ("joules", []),
    "steps of no time": ("times", [0.0, 0.0, 0.0]),
    "steps of infinite time": ("times", [float("inf")] * 3),
    "joules below zero": ("joules", -1.0),
}


@pytest.mark.parametrize("damage", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_checkpoint_search_is_searched_again_not_raised(damage) -> None:
    """A phase that cannot have been measured refuses the stored search when it is restored (it was
    taken, and raised inside the training loop from a verdict or the table); the run searches again."""
    saved = run_search(job(V100_TRAP), max_slowdown=0.05).finder.state_dict()
    field, value = DAMAGED[damage]
    phase = saved["phases"][-1]
    if field == "joules" and not isinstance(value, list):
        value = [value] * len(phase["joules"])
    saved["phases"][-1] = {**phase, field: value}
    again = run_search(job(V100_TRAP), max_slowdown=0.05, restore=saved, restored=False)
    assert again.finder.done and "kept from the checkpoint" not in again.finder.choice()["why"]
    assert again.finder.chosen is not None and again.finder.table()


def test_training_that_ends_first_and_a_limit_that_fails() -> None:
    short = run_search(job(V100_TRAP), max_steps=40, max_slowdown=0.05)
    assert not short.finder.done and short.finder.chosen is None
    assert short.finder.summary().startswith("Power-cap search did not finish (training ended first)")

    failing = job(V100_TRAP)
    board = failing.boards[0]
    set_limit = board.set_limit_mw

    def flaky(mw: int) -> None:
        if mw < 250_000:
            raise DeviceError("NVML: GPU is lost")
        set_limit(mw)

    board.set_limit_mw = flaky  # type: ignore[method-assign]
    result = run_search(failing, max_slowdown=0.05)  # nothing raises into the training loop
    assert result.finder.done and result.finder.chosen is None
    assert "setting a limit failed (NVML: GPU is lost)" in result.finder.summary()
    assert board.current_mw == 300_000


def test_nothing_to_search_when_the_floor_is_the_limit_at_start() -> None:
    result = run_search(job(A40_FLAT), min_watts=300)
    assert result.finder.fractions == [1.0] and result.finder.done and result.steps == 0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"watts": "auto", "min_watts": 0}, ValueError, r"min_watts must be in \(0, 5000\] W"),
        ({"watts": "auto", "min_watts": True}, TypeError, r"min_watts must be in \(0, 5000\] W"),
        ({"watts": "auto", "min_watts": "150"}, TypeError, r"min_watts must be"),
        ({"watts": 200, "min_watts": 150}, ValueError, r"min_watts=150 applies only to watts='auto'"),
        ({"fraction": 0.8, "min_watts": 150}, ValueError, r"applies only to watts='auto'"),
    ],
)
def test_min_watts_is_checked_at_construction(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        PowerCapRun(**kwargs)
    assert PowerCapRun(watts="auto", min_watts=150).min_watts == 150.0


class FailingBoard(TableBoard):
    """A board whose driver errors on every limit change once ``fail`` is set (NVML Unknown Error)."""

    fail = False

    def set_limit_mw(self, mw: int) -> None:
        if self.fail:
            raise DeviceError("NVML: Unknown Error (simulated)")
        super().set_limit_mw(mw)


@pytest.mark.parametrize("when", ["first step", "train start"])
def test_a_checkpoints_choice_the_driver_refuses_is_said_not_raised(when) -> None:
    # Putting a checkpoint's choice in force called the driver unguarded: a DeviceError came out of the first
    # step (Lightning) or of begin(step=...) (HF, EnergyLoop; in a job, on the node's leader only).
    from energy_core.accounting.ranks import Ranks
    from tests.doubles.table_board import capping, run_capped

    bert = next(j for j in zeus_jobs() if j.name == "V100 bert-base-uncased")
    t0 = bert.seconds(bert.caps[0])
    first = run_capped(TableJob([TableBoard(p) for p in bert.boards], seed=4, sample_interval_s=t0 / 5), 400,
                       max_slowdown=0.1)  # fmt: skip
    saved = first.run.state_dict()
    assert saved["finder"]["chosen"] not in (None, 0)
    boards = [FailingBoard(p, index=i) for i, p in enumerate(bert.boards)]
    table = TableJob(boards, seed=5, sample_interval_s=t0 / 5)
    at_start = [board.current_mw for board in boards]
    with capping(table):
        run = PowerCapRun(watts="auto", max_slowdown=0.1)
        run.load_state_dict(saved)
        start = run.start

        def start_then_fail(node_boards=()):
            notices = start(node_boards)
            for board in boards:
                board.fail = True  # the driver errors from the first change after the cap at start
            return notices

        run.start = start_then_fail
        try:
            notices = run.begin(Ranks(), None, 100, meter=table.meter, step=40 if when == "train start" else None)
            for step in range(1, 5):
                table.step()
                notices += run.step(step)[1]
        finally:
            for board in boards:
                board.fail = False
            run.finish()
            table.close()
    assert any("could not be put in force" in n.text and "Unknown Error" in n.text for n in notices), notices
    assert [board.current_mw for board in boards] == at_start


def test_auto_from_a_limit_above_the_range_the_board_reports_searches_from_it() -> None:
    # A limit in force above the range a board reports (set before its constraints changed) made the search's
    # registration format a missing fraction: a TypeError out of train start. The search also clamped the limit
    # at start to the range, so its reference was measured at a cap, and two rungs were the same.
    from energy_core.devices import LimitRange
    from tests.doubles.table_board import run_capped

    class Above(TableBoard):
        def limits(self) -> LimitRange:
            return LimitRange(self.min_mw, self.max_mw - 25_000, self.max_mw, self.current_mw)

    bert = next(j for j in zeus_jobs() if j.name == "V100 bert-base-uncased")
    boards = [Above(p, index=i) for i, p in enumerate(bert.boards)]
    at_start = [board.current_mw for board in boards]
    result = run_capped(TableJob(boards, seed=1, sample_interval_s=bert.seconds(bert.caps[0]) / 5), 60,
                        max_slowdown=0.1)  # fmt: skip
    finder = result.run.finder
    assert finder is not None and finder.caps_mw[0] == at_start  # the reference: the limit at start, not capped
    assert all(mw <= board.max_mw - 25_000 for caps in finder.caps_mw[1:] for board, mw in zip(boards, caps))
    assert len({tuple(caps) for caps in finder.caps_mw}) == len(finder.caps_mw)  # no rung twice
    assert [board.current_mw for board in boards] == at_start
