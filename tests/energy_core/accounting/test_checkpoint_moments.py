"""A checkpoint's totals and its epoch part are figures of one moment: whatever the sampler does between
the reads, the run's own state is one its next fit takes (`EpochPart.from_state` refuses a part larger
than its whole), and no figure comes out below zero. On a manual clock, the sampler thread's next reading
is made to land between two reads."""

from __future__ import annotations

import time

import pytest

from energy_core import EnergyTracker
from energy_core.accounting.ranks import Ranks
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetRun
from energy_core.options import MeasureOptions
from tests.doubles.power_traces import Constant, Steps
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import ManualRun, manual_run


def reading_after_the_first_read(monkeypatch: pytest.MonkeyPatch, run: ManualRun, step_s: float) -> None:
    """The sampler thread's next reading (``step_s`` on) lands right after the next `EnergyMeter.read`."""
    tracker, clock = run.tracker, run.clock
    read, taken = tracker.meter.read, []

    def then_a_reading(*marks):
        found = read(*marks)
        if not taken:
            taken.append(True)
            clock.advance(step_s)
            tracker.meter.sampler.sample_once()
        return found

    monkeypatch.setattr(tracker.meter, "read", then_a_reading)


def stepped_run(sim_gpus, watts: list[float], at_s: float) -> ManualRun:
    """One board drawing ``watts[0]`` until ``at_s``, then ``watts[1]``; read every 0.1 s by hand."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Steps(watts, [at_s]), counter_period_s=0.01), clock=clock)
    return manual_run(clock, devices=["gpu"], carbon_intensity_g_per_kwh=400.0)


def test_a_checkpoint_past_the_newest_reading_keeps_its_epoch_within_its_totals(sim_gpus, monkeypatch) -> None:
    """The totals took the moment's extrapolated figure, the epoch (read again once the next reading had
    fixed it higher) took more: 136.5 J against 134.8 J in CI, and the resumed run refused its checkpoint."""
    run = stepped_run(sim_gpus, [100.0, 500.0], 1.05)
    run.tracker.start_epoch(0)
    run.advance(1.0)  # readings every 0.1 s, at 100 W
    run.clock.advance(0.05)  # the checkpoint: extrapolated at 100 W; the board draws 500 W from here on
    reading_after_the_first_read(monkeypatch, run, 0.05)
    state = run.tracker.state_dict()
    run.tracker.end_fit(10)
    total_j = sum(state["energy_j"].values())
    assert total_j == pytest.approx(105.0, abs=2.0)  # 1.05 s at 100 W, within a counter update (1 J)
    assert state["epoch"]["energy_j"] == pytest.approx(total_j)  # the same moment's figure: the fit is the epoch
    EnergyTracker(devices=["gpu"]).load_state_dict(state)  # its own checkpoint, taken


def test_a_checkpoint_just_after_an_epoch_end_is_taken_again(sim_gpus, monkeypatch) -> None:
    """Lightning's checkpoint runs after the monitor's epoch end: the next epoch starts at a moment the
    sampler has not fixed yet. Read apart from the checkpoint's moment, it was fixed higher: -33.2 J."""
    run = stepped_run(sim_gpus, [100.0, 2000.0], 1.04)
    run.tracker.start_epoch(0)
    run.advance(1.0)
    run.clock.advance(0.03)
    run.tracker.end_epoch(step=0, epoch=0)  # at 1.03 s: epoch 1 starts at this unfixed moment
    run.clock.advance(0.01)  # the epoch-end checkpoint; the board draws 2 kW from 1.04 s
    reading_after_the_first_read(monkeypatch, run, 0.06)
    state = run.tracker.state_dict()
    run.tracker.end_fit(10)
    assert 0.0 <= state["epoch"]["energy_j"] <= 1.0 + 0.01 * 100.0  # 10 ms at 100 W, within a counter update
    EnergyTracker(devices=["gpu"]).load_state_dict(state)


def test_an_epoch_shorter_than_a_reading_interval_is_never_below_zero(sim_gpus, monkeypatch) -> None:
    run = stepped_run(sim_gpus, [100.0, 2000.0], 1.04)
    run.advance(1.0)
    run.clock.advance(0.03)
    run.tracker.start_epoch(0)  # at 1.03 s, unfixed
    run.clock.advance(0.01)
    reading_after_the_first_read(monkeypatch, run, 0.06)
    metrics = run.tracker.end_epoch(step=1, epoch=0)
    run.tracker.end_fit(10)
    assert metrics["energy/epoch_kwh"] * 3.6e6 == pytest.approx(1.0, abs=1.0)  # 10 ms at 100 W, +-1 counter update


def test_an_epoch_that_began_with_the_fit_is_never_more_than_its_totals(sim_gpus) -> None:
    """A tracker measuring alone (a budget, a target, a time shift) has no epochs of its own: its epoch part
    is the totals' joules, summed per source (pairwise from 8 sources on) where the totals sum per kind.
    1 in 5 checkpoints came out a last bit over the total, refused at the next fit's start."""
    clock = ManualClock()
    sim_gpus(*[SimGpu(f"GPU-{i}", Constant(173.3 + 41.7 * i), counter_period_s=0.01) for i in range(8)], clock=clock)
    run = manual_run(clock, devices=["gpu"], carbon_intensity_g_per_kwh=400.0)
    states = []
    for _ in range(20):
        run.advance(0.3)
        clock.advance(0.0137)
        states.append(run.tracker.state_dict())
    run.tracker.end_fit(step=0)
    for state in states:
        assert state["epoch"]["energy_j"] <= sum(state["energy_j"].values())
        budget = BudgetRun(BudgetRule(max_kwh=1.0), MeasureOptions.of("EnergyBudget", {"devices": ["gpu"]}))
        budget.load_state_dict({"guard": {}, "tracker": state})
        budget.bind(None, Ranks(), step=0)  # where its own tracker loads it
        budget.close()


# ----------------------------------------------------------------- a job, faked in one process
class Job(Ranks):
    """Two ranks alike, every sum doubled; rank 0 alone also carries ``carried`` J of a checkpoint."""

    carried = 0.0

    def sum_by_name(self, values, per_rank={}):  # noqa: B006 - as Ranks.sum_by_name
        sums, by_rank = super().sum_by_name(values, per_rank)
        if "energy_j.gpu" in sums and self.rank != 0:
            sums["energy_j.gpu"] += self.carried
        return sums, by_rank


CHECKPOINT = {  # a job's checkpoint taken mid-epoch 0: 1000 J so far, 400 J of it in epoch 0
    "version": 1, "energy_j": {"gpu": 1000.0}, "stage_j": {"val": 0.0, "test": 0.0, "predict": 0.0},
    "samples": 0, "tokens": 0, "fit_s": 10.0, "co2e_kg": 0.0001, "cost": 0.0, "energy_err": {"gpu": 0.0},
    "stage_err": {"val": 0.0, "test": 0.0, "predict": 0.0}, "co2e_err": 0.0, "cost_err": 0.0,
    "epoch": {"energy_j": 400.0, "energy_err": 0.0, "seconds": 4.0, "epoch": 0},
}  # fmt: skip


def test_a_resumed_rank_that_does_not_carry_the_checkpoint_writes_an_epoch_within_its_totals(sim_gpus) -> None:
    """The epoch was taken out of the job's totals from this process's share of the checkpoint (none of it,
    on rank 1): 1600 J of epoch in 1200 J of totals."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(100.0), counter_period_s=0.01), clock=clock)
    ranks = Job(rank=1, world_size=2, sum=lambda values: [2 * v for v in values], gather=lambda obj: [obj, obj])
    object.__setattr__(ranks, "carried", 1000.0)
    tracker = EnergyTracker(sample_interval_s=60, devices=["gpu"], carbon_intensity_g_per_kwh=400.0)
    tracker.meter.clock = clock
    tracker.load_state_dict(CHECKPOINT, own_share=ranks.leads_job)
    tracker.join(ranks)
    tracker.start_fit(step=0, resumed=True)
    deadline = time.monotonic() + 30
    while len(tracker.meter.sampler.buffer) == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # the sampler thread's first reading
    tracker.start_epoch(0)  # the resumed epoch goes on
    for _ in range(10):
        clock.advance(0.1)
        tracker.meter.sampler.sample_once()
    tracker.window(step=1)  # the job's totals: 1000 J + 2 x 100 J
    state = tracker.state_dict()
    tracker.end_fit(step=1)
    assert sum(state["energy_j"].values()) == pytest.approx(1200.0, abs=4.0)
    assert state["epoch"]["energy_j"] == pytest.approx(400.0 + 200.0, abs=4.0)  # the checkpoint's part, and this fit's
    EnergyTracker(devices=["gpu"]).load_state_dict(state, own_share=False)


def test_a_loaded_state_is_given_back_as_it_was_on_every_rank() -> None:
    """Loaded as rank 1 of a job (own_share=False), before the next fit: the totals given back were this
    process's share (none of the energy) and the epoch part the job's, which no tracker would take."""
    tracker = EnergyTracker(devices=["gpu"])
    tracker.load_state_dict(CHECKPOINT, own_share=False)
    state = tracker.state_dict()
    assert state == CHECKPOINT
    EnergyTracker(devices=["gpu"]).load_state_dict(state, own_share=False)


# ----------------------------------------------------------------- the fit's first reading interval
def fit_started_after_the_first_reading(sim_gpus, state: dict | None = None) -> tuple[EnergyTracker, ManualClock]:
    """As in real time: the sampler's first reading, then (10 ms later here) the fit's start, a moment the
    sampler fixes only at its second reading."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(100.0), counter_period_s=0.01), clock=clock)
    tracker = EnergyTracker(sample_interval_s=60, devices=["gpu"], carbon_intensity_g_per_kwh=400.0)
    tracker.meter.clock = clock
    if state is not None:
        tracker.load_state_dict(state)
    tracker.meter.open()  # what start_fit's own opening does: a first reading, waited for
    clock.advance(0.01)
    tracker.start_fit(step=0, resumed=state is not None)
    return tracker, clock


def test_a_checkpoint_in_the_fit_s_first_reading_interval_is_taken_again(sim_gpus, monkeypatch) -> None:
    """The totals read the fit's start apart from the checkpoint's moment: fixed in between, it came out
    above it, a fit of -1.0 J, which the run's own load refused."""
    tracker, clock = fit_started_after_the_first_reading(sim_gpus)
    clock.advance(0.02)
    reading_after_the_first_read(monkeypatch, ManualRun(tracker, clock), 0.07)
    state = tracker.state_dict()
    tracker.end_fit(1)
    assert sum(state["energy_j"].values()) >= 0.0 and state["epoch"]["energy_j"] >= 0.0
    EnergyTracker(devices=["gpu"]).load_state_dict(state)


def test_a_resumed_tracker_s_totals_never_go_below_the_checkpoint_s(sim_gpus, monkeypatch) -> None:
    """The same, resumed: 999 J of totals against the 1000 J resumed from."""
    resumed = {**CHECKPOINT, "epoch": {"energy_j": 1000.0, "energy_err": 0.0, "seconds": 10.0, "epoch": None}}
    tracker, clock = fit_started_after_the_first_reading(sim_gpus, resumed)
    clock.advance(0.02)
    reading_after_the_first_read(monkeypatch, ManualRun(tracker, clock), 0.07)
    state = tracker.state_dict()
    tracker.end_fit(1)
    assert sum(state["energy_j"].values()) >= 1000.0
    assert state["epoch"]["energy_j"] == pytest.approx(sum(state["energy_j"].values()))  # no fit of its own ran


def test_a_second_fit_of_a_tracker_measuring_alone_goes_on_from_the_first(sim_gpus) -> None:
    """A budget (target, time shift) measuring alone took its checkpoint again at every fit start: a second
    fit in the same process went back to the checkpoint's totals, and lost the first fit's."""
    sim_gpus(SimGpu("GPU-a", Constant(100.0), counter_period_s=0.01))
    options = MeasureOptions.of("EnergyBudget", {"devices": ["gpu"], "sample_interval_s": 0.02})
    budget = BudgetRun(BudgetRule(max_kwh=1.0), options)
    budget.load_state_dict({"guard": {}, "tracker": CHECKPOINT})
    budget.bind(None, Ranks(), step=0, resumed=True)
    time.sleep(0.2)  # a short first fit: a few readings at 100 W
    budget.finish(step=10)
    after_first = budget.share.tracker.resumed_totals.total_j
    budget.bind(None, Ranks(), step=10)
    assert budget.share.tracker.resumed_totals.total_j == after_first > 1000.0
    budget.finish(step=20)
    budget.close()
