"""A process's accounts (`energy_core.accounting.accounts.Accounts`) on a real meter over simulated GPUs.

What is tested: `Accounts.local` (energy by kind from the end joules the caller gives, work of the
closed windows plus the open one, seconds, stages, the checkpoint's share), the charges (each
reading's energy at the factors in force when it was used, split where they change; a figure
between readings adds the energy since the last one and charges nothing), `Accounts.spent`,
`Accounts.fit_seconds`, `Accounts.load` (own share or not, a checkpoint from before CO2e was
charged slice by slice) and `Accounts.end`.

The grid intensity steps in wall time (400 g/kWh, then 100 g/kWh from 12 s after the fit starts,
then 250 g/kWh from 18 s), so energy priced at any other moment than when it was used gives a
different figure; wall time is pinned by replacing the module's
``time`` (no dependence on the real clock). The meter's clock is a
`ManualClock` moved in binary steps, so the boards' counters read exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest

from energy_core import J_PER_KWH, Ranks, RunTotals
from energy_core.accounting import accounts as accounts_module
from energy_core.accounting.accounts import Accounts
from energy_core.carbon.charges import Charges
from energy_core.carbon.factor import Factor, Fixed, Value
from energy_core.carbon.run_factors import RunFactors
from energy_core.sampling.meter import EnergyMeter
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu

WALL0 = 1_800_000_000.0  # unix time when a fit begins (the module's time.time, pinned)
STEPS = ((18.0, 250.0), (12.0, 100.0))  # (seconds after the fit begins, g/kWh from then on); 400 g/kWh before
PUE = 1.5
PRICE = 0.25  # per kWh


class StepIntensity(Factor):
    """400 g/kWh until 12 s after `WALL0`, 100 g/kWh until 18 s, 250 g/kWh from then on."""

    def _lookup(self, when: float) -> Value:
        for since, g_per_kwh in STEPS:
            if when >= WALL0 + since:
                return Value(g_per_kwh, f"from {since:g} s", WALL0 + since)
        return Value(400.0, "at first", -math.inf)

    def changes(self, start: float, end: float) -> list[float]:
        return sorted(WALL0 + since for since, _ in STEPS if start < WALL0 + since < end)


def kg_per_kwh(g_per_kwh: float) -> float:
    return PUE * g_per_kwh / 1000.0


@dataclass
class Bench:
    clock: ManualClock
    meter: EnergyMeter
    accounts: Accounts

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.5)):
            self.clock.advance(0.5)
            self.meter.sampler.sample_once()


@pytest.fixture
def bench(sim_gpus, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    """Two boards at 300 W and 100 W; wall time pinned to `WALL0` whenever the accounts ask."""
    monkeypatch.setattr(accounts_module, "time", SimpleNamespace(time=lambda: WALL0))
    clock = ManualClock()
    sim_gpus(
        SimGpu("GPU-a", Constant(300.0), counter_period_s=1 / 64),
        SimGpu("GPU-b", Constant(100.0), counter_period_s=1 / 64),
        clock=clock,
    )
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=60, clock=clock)
    meter.open()
    factors = RunFactors(StepIntensity(), Fixed(PRICE, "given"), pue=PUE, currency="EUR")
    yield Bench(clock, meter, Accounts(meter, Charges(factors)))
    meter.close()


def begun(bench: Bench, after_s: float = 2.0):
    """Begin the fit ``after_s`` seconds into the traces (so its start joules are not zero); its start mark."""
    bench.advance(after_s)
    start = bench.meter.mark()
    bench.accounts.begin(start)
    return start


def at(bench: Bench, seconds: float):
    """A mark ``seconds`` after now (the clock moved there, with readings)."""
    bench.advance(seconds)
    return bench.meter.mark()


def test_before_a_fit_the_totals_are_the_checkpoints_share_alone(bench: Bench) -> None:
    accounts = bench.accounts
    assert accounts.local(bench.meter.mark(), np.zeros(2), (5, 5), {}) == RunTotals()
    carried = RunTotals({"gpu": 100.0}, samples=3, fit_s=4.0, co2e_kg=0.1)
    accounts.load(carried, own_share=True, co2_per_kwh=0.0)
    assert accounts.local(bench.meter.mark(), np.zeros(2), (5, 5), {"val": 9.0}) == carried


def test_local_totals_come_from_the_end_joules_given_minus_the_fit_start(bench: Bench) -> None:
    accounts = bench.accounts
    begun(bench, after_s=2.0)  # the boards' counters stand at 600 J and 200 J
    end = at(bench, 10.0)  # what the meter would say: 3600 J and 1200 J
    accounts.close_window(samples=40, tokens=900)
    accounts.close_window(samples=24, tokens=100)
    totals = accounts.local(end, np.array([600.0 + 2000.0, 200.0 + 500.0]), (8, 77), {"val": 12.5, "test": 0.0})
    assert totals.energy_j == {"gpu": 2500.0}  # both boards are GPUs; the given joules, not a reading
    assert totals.stage_j == {"val": 12.5, "test": 0.0}
    assert (totals.samples, totals.tokens) == (40 + 24 + 8, 900 + 100 + 77)
    assert totals.fit_s == 10.0
    assert totals.co2e_kg == pytest.approx(2500.0 / J_PER_KWH * kg_per_kwh(400.0), rel=1e-12)
    assert totals.cost == pytest.approx(2500.0 / J_PER_KWH * PUE * PRICE, rel=1e-12)


def exact_kg(watts: float, start_s: float, end_s: float) -> float:
    """CO2e (kg, PUE applied) of a steady ``watts`` from ``start_s`` to ``end_s`` seconds after the fit began."""
    edges = [(0.0, 400.0), (12.0, 100.0), (18.0, 250.0), (math.inf, 0.0)]
    grams = sum(
        g * max(0.0, min(end_s, b) - max(start_s, a)) for (a, g), (b, _) in zip(edges, edges[1:])
    )  # g/kWh x seconds
    return watts * grams / J_PER_KWH * PUE / 1000.0


def read_every(bench: Bench, seconds: float, every: float) -> None:
    """Let ``seconds`` pass with a reading every ``every`` seconds."""
    for _ in range(round(seconds / every)):
        bench.clock.advance(every)
        bench.meter.sampler.sample_once()


def test_each_reading_charges_its_energy_at_the_factors_in_force_when_it_was_used(bench: Bench) -> None:
    # 400 W in all. Readings every 5 s: the intensity changes at 12 s and 18 s, inside the readings 10-15 s and
    # 15-20 s; the energy between two readings is split where it changes. One window of 30 s priced at its
    # midpoint (15 s: 100 g/kWh) would be 56 % low; at each reading's midpoint, 3 % high.
    accounts = bench.accounts
    begun(bench)
    read_every(bench, 30.0, every=5.0)
    assert accounts.charges.charged_j == pytest.approx(400.0 * 30.0, rel=1e-12)
    assert accounts.charges.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 30.0), rel=1e-12)
    end = bench.meter.mark()
    totals = accounts.local(end, bench.meter.joules(end)[0], (0, 0), {})
    assert totals.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 30.0), rel=1e-12)
    assert totals.cost == pytest.approx(400.0 * 30.0 / J_PER_KWH * PUE * PRICE, rel=1e-12)


def test_a_figure_between_readings_prices_the_energy_since_the_last_one_and_charges_nothing(bench: Bench) -> None:
    accounts = bench.accounts
    begun(bench)
    read_every(bench, 10.0, every=5.0)
    bench.clock.advance(4.0)  # to 14 s, past the change at 12 s, no reading since 10 s
    end = bench.meter.mark()
    end_j = bench.meter.joules(end)[0]  # extrapolated at the last second's 400 W: exact here
    totals = accounts.local(end, end_j, (0, 0), {})
    assert totals.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 14.0), rel=1e-12)
    assert accounts.charges.charged_j == pytest.approx(4000.0, rel=1e-12)  # nothing charged past the reading
    assert accounts.charges.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 10.0), rel=1e-12)
    bench.meter.sampler.sample_once()  # a reading at 14 s: a figure asked for at 13 s takes the last second back
    back = bench.meter.mark()
    back.t -= 1.0
    earlier = accounts.local(back, end_j - np.array([300.0, 100.0]), (0, 0), {})  # a second of each board
    assert earlier.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 13.0), rel=1e-12)


def test_spent_adds_the_live_energy_to_the_checkpoints_share(bench: Bench) -> None:
    accounts = bench.accounts
    accounts.load(RunTotals({"gpu": 0.5 * J_PER_KWH}, co2e_kg=0.25, cost=1.0), own_share=True, co2_per_kwh=0.0)
    start = begun(bench)
    read_every(bench, 20.0, every=5.0)
    live_j = 400.0 * 20.0
    kwh, co2e, cost = accounts.spent(start.t + 20.0, live_j)  # at a reading: what the readings charged
    assert kwh == pytest.approx(0.5 + live_j / J_PER_KWH, rel=1e-12)
    assert co2e == pytest.approx(0.25 + exact_kg(400.0, 0.0, 20.0), rel=1e-12)
    assert cost == pytest.approx(1.0 + live_j / J_PER_KWH * PUE * PRICE, rel=1e-12)


def test_fit_seconds_add_the_checkpoints_seconds_to_the_live_fit(bench: Bench) -> None:
    accounts = bench.accounts
    accounts.load(RunTotals(fit_s=100.0), own_share=False, co2_per_kwh=0.0)  # every rank keeps the seconds
    assert accounts.fit_seconds() == 100.0
    begun(bench)
    end = at(bench, 7.5)
    assert accounts.fit_seconds(end) == 107.5
    bench.advance(1.0)
    assert accounts.fit_seconds() == 108.5  # now, without a mark


def test_loading_a_checkpoint_as_its_own_share_adds_it_to_the_live_totals(bench: Bench) -> None:
    accounts = bench.accounts
    carried = RunTotals({"gpu": 7200.0}, {"val": 360.0}, samples=10, tokens=20, fit_s=30.0, co2e_kg=0.5, cost=2.0)
    kept = accounts.load(carried, own_share=True, co2_per_kwh=99.0)
    assert kept == carried and accounts.resumed == carried and accounts.resumed_job == carried
    assert accounts.loaded
    begun(bench)
    end = at(bench, 4.0)
    totals = accounts.local(end, np.array([600.0 + 1800.0, 200.0 + 0.0]), (2, 3), {"val": 40.0})
    assert totals.energy_j == {"gpu": 7200.0 + 1800.0}
    assert totals.stage_j == {"val": 400.0}
    assert (totals.samples, totals.tokens, totals.fit_s) == (12, 23, 34.0)
    assert totals.co2e_kg == pytest.approx(0.5 + 1800.0 / J_PER_KWH * kg_per_kwh(400.0), rel=1e-12)
    assert totals.cost == pytest.approx(2.0 + 1800.0 / J_PER_KWH * PUE * PRICE, rel=1e-12)


def test_a_rank_without_its_own_share_keeps_only_the_seconds_of_a_checkpoint(bench: Bench) -> None:
    accounts = bench.accounts
    carried = RunTotals({"gpu": 7200.0}, {"val": 360.0}, samples=10, tokens=20, fit_s=30.0, co2e_kg=0.5, cost=2.0)
    kept = accounts.load(carried, own_share=False, co2_per_kwh=99.0)
    assert kept == RunTotals(fit_s=30.0) == accounts.resumed
    assert accounts.resumed_job == carried  # the job's figures are still known, for the job's kWh
    begun(bench)
    totals = accounts.local(at(bench, 2.0), np.array([600.0 + 100.0, 200.0]), (0, 0), {})
    assert totals.energy_j == {"gpu": 100.0} and totals.fit_s == 32.0


@pytest.mark.parametrize("own_share", [True, False])
def test_a_checkpoint_without_co2e_is_charged_at_the_factor_given(bench: Bench, own_share: bool) -> None:
    state = RunTotals({"gpu": 2 * J_PER_KWH, "cpu": J_PER_KWH}, fit_s=5.0).to_state()
    del state["co2e_kg"]  # written before CO2e was charged slice by slice
    old = RunTotals.from_state(state)
    assert math.isnan(old.co2e_kg)
    kept = bench.accounts.load(old, own_share, co2_per_kwh=0.6)
    assert bench.accounts.resumed_job.co2e_kg == pytest.approx(3 * 0.6, rel=1e-12)
    assert kept.co2e_kg == (pytest.approx(1.8, rel=1e-12) if own_share else 0.0)


def test_loading_again_replaces_the_earlier_checkpoint(bench: Bench) -> None:
    accounts = bench.accounts
    accounts.load(RunTotals({"gpu": 100.0}, samples=5), own_share=True, co2_per_kwh=0.0)
    accounts.load(RunTotals({"gpu": 30.0}, samples=2), own_share=True, co2_per_kwh=0.0)
    assert accounts.local(bench.meter.mark(), np.zeros(2), (0, 0), {}) == RunTotals({"gpu": 30.0}, samples=2)


def test_ending_a_fit_forgets_the_live_fit_and_the_jobs_sum(bench: Bench) -> None:
    accounts = bench.accounts
    begun(bench)
    end = at(bench, 3.0)
    accounts.close_window(samples=16, tokens=64)
    local = accounts.local(end, np.array([600.0 + 900.0, 200.0 + 300.0]), (0, 0), {})
    sums = accounts.sum(Ranks(), local)
    assert accounts.job is sums.totals  # kept
    assert sums.totals.energy_j == local.energy_j == {"gpu": 1200.0}  # one process: the identity
    assert (sums.totals.samples, sums.totals.tokens, sums.totals.fit_s) == (16, 64, 3.0)
    accounts.end()
    assert accounts.job is None and accounts.fit_start is None
    assert (accounts.samples, accounts.tokens) == (0, 0)
    assert accounts.fit_seconds() == 0.0
    assert accounts.local(at(bench, 1.0), np.array([5000.0, 5000.0]), (3, 3), {}) == RunTotals()


def test_a_new_fit_restarts_the_charges_at_its_own_start(bench: Bench) -> None:
    accounts = bench.accounts
    begun(bench)
    read_every(bench, 10.0, every=0.5)
    accounts.end()
    begun(bench, after_s=1.0)  # wall time pinned: this fit too starts at WALL0
    end = at(bench, 4.0)
    totals = accounts.local(end, bench.meter.joules(end)[0], (0, 0), {})
    assert totals.energy_j == {"gpu": 1600.0}
    assert totals.co2e_kg == pytest.approx(exact_kg(400.0, 0.0, 4.0), rel=1e-12)
