"""Carbon where and when: intensity and price over time, charged reading by reading; a live API on a local server.

Runs use a manual clock (virtual hours in a second) on a simulated 300 W GPU; the live
intensity comes from a real HTTP server on localhost replaying Electricity Maps' answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_core import J_PER_KWH, EnergyTracker, MeasureOptions
from energy_core.accounting import accounts as accounts_module
from energy_core.budget.guard import BudgetGuard
from energy_core.budget.rule import BudgetRule
from energy_core.carbon import electricity_maps as live
from energy_core.carbon.electricity_maps import ElectricityMaps
from energy_core.carbon.factor import Fixed, Series
from tests.doubles.power_traces import Constant, Square
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import manual_run
from tests.helpers.records import read_record

GPU_W = 300.0


def write_series(path: Path, rows: list[tuple[datetime, float]], header: str = "datetime,g_per_kwh") -> Path:
    path.write_text(header + "\n" + "".join(f"{t.isoformat()},{v}\n" for t, v in rows))
    return path


def at(minutes: float) -> datetime:
    return datetime.now(timezone.utc) + timedelta(minutes=minutes)


# ----------------------------------------------------------------------------- a recorded series
def test_the_value_in_force_is_the_latest_row_at_or_before(tmp_path) -> None:
    base = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
    paris = timezone(timedelta(hours=2))
    rows = [(base, 100.0), (base.astimezone(paris) + timedelta(hours=1), 200.0), (base + timedelta(hours=3), 50.0)]
    series = Series(write_series(tmp_path / "s.csv", rows), "carbon_intensity_series", "g/kWh")
    t0 = base.timestamp()
    assert series.at(t0).value == 100.0  # exactly at a row: that row
    assert series.at(t0 + 3599).value == 100.0
    assert series.at(t0 + 3600).value == 200.0  # written as 14:00+02:00, read as 12:00 UTC + 1 h
    assert series.at(t0 + 3 * 3600 + 1).value == 50.0
    assert series.take_notices() == []
    assert series.at(t0 - 60).value == 100.0  # before the first row: the first value, said once
    series.at(t0 - 120)
    assert [n.text for n in series.take_notices()] == [
        "carbon_intensity_series: the run is before the series' first row; its first value is used."
    ]
    assert series.at(t0 + 10 * 3600).value == 50.0  # past the last row (and its step): the last value
    assert "past the series' last row" in series.take_notices()[0].text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datetime,g\n", ".*has no rows after its header"),
        ("datetime,g\n2026-06-01T12:00:00,100\n", "line 2 .* has no UTC offset"),
        ("datetime,g\n2026-06-01T12:00:00+00:00,-5\n", "line 2 .* not in \\[0, 2000\\]"),
        ("datetime,g\nyesterday,100\n", "line 2 .* must be an ISO 8601 timestamp"),
    ],
)
def test_a_bad_series_is_a_value_error_naming_the_argument_and_line(tmp_path, text, message) -> None:
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(ValueError, match=f"carbon_intensity_series: {message}"):
        MeasureOptions(carbon_intensity_series=tmp_path / "s.csv")
    with pytest.raises(ValueError, match="give one of carbon_intensity_g_per_kwh, carbon_intensity_series"):
        MeasureOptions(carbon_intensity_series=tmp_path / "s.csv", carbon_intensity_g_per_kwh=100)


def test_co2e_is_charged_at_the_intensity_in_force_when_the_energy_was_used(tmp_path, sim_gpus) -> None:
    series = write_series(tmp_path / "s.csv", [(at(-60), 100.0), (at(30), 300.0)])  # it changes 30 min in
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"], carbon_intensity_series=series, pue=1.2,
                     price_per_kwh=0.25, record_path=tmp_path / "energy.jsonl")  # fmt: skip
    intensities = []
    for step in range(1, 61):  # an hour, a window a minute
        run.advance(60.0, every=1.0)
        intensities.append(run.tracker.window(step)["carbon/intensity_g_per_kwh"])
    metrics = run.tracker.end_fit(60)
    assert intensities[:29] == [100.0] * 29 and intensities[-29:] == [300.0] * 29  # the curve W&B shows
    half_kwh = GPU_W * 1800 / J_PER_KWH
    expected = 1.2 * (half_kwh * 100 + half_kwh * 300) / 1000
    # Each reading's energy is charged at the intensity in force when it was used: exact but for the moment
    # the fit started after the series was written (the change is 30 minutes after that; 5 s allowed).
    slack_kg = 1.2 * GPU_W * 5 / J_PER_KWH * (300 - 100) / 1000
    assert metrics["carbon/co2e_kg"] == pytest.approx(expected, abs=slack_kg)
    assert metrics["carbon/co2e_kg"] != pytest.approx(1.2 * 2 * half_kwh * 300 / 1000, rel=0.1)  # not one figure
    assert metrics["cost/total"] == pytest.approx(1.2 * 2 * half_kwh * 0.25, rel=1e-3)  # kWh x PUE x price
    lines = read_record(tmp_path / "energy.jsonl")
    summary = lines[-1]
    assert summary["carbon"]["g_per_kwh"] == pytest.approx(200.0, abs=200 / 30)  # the energy-weighted mean
    assert summary["cost"] == {"total": pytest.approx(metrics["cost/total"]), "currency": "EUR"}
    factors = [(x["factor"], x["value"]) for x in lines if x["type"] == "factor"]
    assert factors == [("carbon_g_per_kwh", 100.0), ("price_per_kwh", 0.25), ("carbon_g_per_kwh", 300.0)]


def test_the_record_names_each_value_once_in_time_order_whichever_thread_asks(tmp_path, sim_gpus) -> None:
    # The training thread asks for the intensity now; the sampler charges readings that trail it. Around a
    # row change the history, and the record's factor lines, read 100, 500, 100, 500: the intensity seemed
    # to go back. And where the sampler had fallen behind, a row charged between was left out.
    rows = [(at(-60), 100.0), (at(1.5 / 60), 500.0), (at(2.5 / 60), 300.0)]  # changes 1.5 s and 2.5 s from now
    series = write_series(tmp_path / "s.csv", rows)
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"], carbon_intensity_series=series, record_path=tmp_path / "energy.jsonl")
    run.advance(1.0)  # readings up to 1 s, before the changes (the fit began within 0.5 s of the series)
    clock.advance(2.0)  # then none for 2 s: the training thread's "now" is past both changes
    run.tracker.window(step=1)
    run.tracker.per_kwh_now()  # a budget's forecast asks too
    run.advance(2.0)  # the readings across both changes: their energy before, between and after them
    run.tracker.window(step=2)
    run.tracker.end_fit(step=2)
    run.tracker.close()
    assert [v.value for v in run.tracker.factors.carbon.history] == [100.0, 500.0, 300.0]
    lines = read_record(tmp_path / "energy.jsonl")
    assert [x["value"] for x in lines if x["type"] == "factor"] == [100.0, 500.0, 300.0]


def test_a_budget_stops_on_co2e_under_a_rising_intensity(tmp_path, sim_gpus) -> None:
    rows = [(at(-1), 100.0), (at(10), 200.0), (at(20), 400.0)]  # the grid gets dirtier every 10 minutes
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"], carbon_intensity_series=write_series(tmp_path / "s.csv", rows))
    kwh_per_10_min = GPU_W * 600 / J_PER_KWH
    limit = kwh_per_10_min * (100 + 200) / 1000 + kwh_per_10_min / 2 * 400 / 1000  # reached 25 minutes in
    guard = BudgetGuard(BudgetRule(max_co2e_kg=limit), run.tracker, total_steps=None)
    for minute in range(1, 41):
        run.advance(60.0, every=1.0)
        run.tracker.window(minute)  # the budget watches every reading's charges
        if guard.crossed():
            break
    assert minute == 25  # with a fixed first figure (100 g/kWh) it would have run to minute 60
    run.tracker.end_fit(minute)


# ----------------------------------------------------------------------------- intensity steps inside a window
WALL0 = 1_800_000_000.0  # unix time at the fit's start (the accounts' clock, pinned)


@dataclass
class Alternating:
    """A tracker on a simulated board and a manual clock, charged on a series that alternates between
    100 and 1,000 g/kWh every ``period`` seconds from the fit's start; the test takes every reading."""

    tracker: EnergyTracker
    clock: ManualClock
    sim: Any
    t0: float
    reading_s: float
    readings: int = 0

    @classmethod
    def build(cls, tmp_path, sim_gpus, monkeypatch, trace, period: float, reading_s: float, counter_s: float, **more):
        monkeypatch.setattr(accounts_module, "time", SimpleNamespace(time=lambda: WALL0))
        rows = [(datetime.fromtimestamp(WALL0 - period + k * period, timezone.utc), (100.0, 1000.0)[k % 2])
                for k in range(int(200 / period) + 2)]  # fmt: skip
        clock = ManualClock()
        sim = sim_gpus(SimGpu("GPU-a", trace, counter_period_s=counter_s), clock=clock)
        series = write_series(tmp_path / "alternating.csv", rows)
        tracker = EnergyTracker(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=series, **more)
        tracker.meter.clock = clock
        tracker.start_fit(0)
        return cls(tracker, clock, sim, clock.now, reading_s)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, with a reading at every multiple of ``reading_s`` from the start."""
        target = self.clock.now + seconds
        while self.t0 + (self.readings + 1) * self.reading_s <= target:
            self.readings += 1
            self.clock.now = self.t0 + self.readings * self.reading_s
            self.tracker.meter.sampler.sample_once()
        self.clock.now = target

    def exact_kg(self, until: float, pue: float = 1.0) -> tuple[float, float]:
        """The true CO2e from the fit's start to ``until`` (the integral of power x intensity), and the
        sum of the intensity's jumps (g/kWh) on the way."""
        series = self.tracker.factors.carbon
        inside = [t - WALL0 + self.t0 for t in series.times if WALL0 < t < WALL0 + until - self.t0]
        edges = [self.t0, *inside, until]
        grams = sum(
            self.sim.exact_joules(self.sim.gpus[0], a, b) * series.peek(WALL0 + (a + b) / 2 - self.t0).value
            for a, b in zip(edges, edges[1:])
        )
        return grams / J_PER_KWH * pue / 1000.0, 900.0 * (len(edges) - 2)

    def close(self) -> None:
        self.tracker.close()


@pytest.mark.parametrize("window_s", [0.25, 4.0, 30.0])
def test_co2e_is_exact_however_many_intensity_steps_a_window_spans(tmp_path, sim_gpus, monkeypatch, window_s) -> None:
    # The case: 250 W, 100 and 1,000 g/kWh alternating every second. A 4 s window was charged at one
    # intensity (its midpoint's): -81.8 %. Readings every 1/8 s and a counter ticking every 1/64 s read
    # the board exactly, so the charges are exact to floating-point precision whatever the window.
    # The price alternates too, between 0.1 and 0.5 per kWh every 1.5 s: the cost is exact the same way.
    price_rows = [(datetime.fromtimestamp(WALL0 - 1.5 + k * 1.5, timezone.utc), (0.1, 0.5)[k % 2]) for k in range(50)]
    prices = write_series(tmp_path / "price.csv", price_rows, header="datetime,eur_per_kwh")
    run = Alternating.build(
        tmp_path, sim_gpus, monkeypatch, Constant(250.0), 1.0, 0.125, 1 / 64, pue=1.2, price_per_kwh=str(prices)
    )
    try:
        for step in range(1, round(60 / window_s) + 1):
            run.advance(window_s)
            logged = run.tracker.window(step)
            true_kg, _ = run.exact_kg(run.clock.now, pue=1.2)
            assert logged["carbon/co2e_kg"] == pytest.approx(true_kg, rel=1e-9), step
            seconds = run.clock.now - run.t0  # 250 W: the cost is 250 W x PUE x the price's integral
            paid = sum(0.5 * min(1.5, max(0.0, seconds - 1.5 * k)) for k in range(0, 41, 2))
            paid += sum(0.1 * min(1.5, max(0.0, seconds - 1.5 * k)) for k in range(1, 41, 2))
            assert logged["cost/total"] == pytest.approx(250.0 * 1.2 * paid / J_PER_KWH, rel=1e-9), step
        assert true_kg == pytest.approx(1.2 * 250.0 * 60 * 550 / J_PER_KWH / 1000, rel=1e-3)  # a mean of 550 g/kWh
    finally:
        run.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    window_s=st.floats(0.05, 12.0),
    period=st.floats(0.2, 5.0),
    reading_s=st.floats(0.02, 0.5),
    aligned=st.booleans(),
)
def test_co2e_is_within_the_counter_bound_for_any_window_and_intensity_step(
    tmp_path, sim_gpus, monkeypatch, window_s, period, reading_s, aligned
) -> None:
    # A board alternating between 80 and 420 W every 0.7 s; boundaries on a reading (aligned) or between two.
    # With E the true energy and Ê the readings' (linear between them), CO2e - the truth is the integral of
    # the intensity against Ê - E: at most I_max |Ê - E| at the end plus, at each jump of the intensity,
    # the jump times |Ê - E| there. |Ê - E| is at most a counter period's energy (q) where a reading is,
    # q + the chord's miss between two readings, and q + the power's change over one interval past the last.
    low_w, high_w, counter_s = 80.0, 420.0, 0.02
    q = high_w * counter_s + 1e-3
    between = reading_s * (high_w - low_w) / 4 + q
    past = reading_s * (high_w - low_w) + 2 * q
    run = Alternating.build(tmp_path, sim_gpus, monkeypatch, Square(low_w, high_w, 0.7), period, reading_s, counter_s)
    try:
        for step in range(1, 4):
            run.advance(window_s)
            if aligned:
                run.tracker.meter.sampler.sample_once()
            logged = run.tracker.window(step)
            if "carbon/co2e_kg" not in logged:  # before the second reading: no figure yet, not a false one
                continue
            true_kg, jumps = run.exact_kg(run.clock.now)
            end_err = 2 * q if aligned else between + past
            bound_kg = (1000.0 * end_err + jumps * 2 * between) / J_PER_KWH / 1000.0
            assert abs(logged["carbon/co2e_kg"] - true_kg) <= bound_kg + 1e-15, (step, logged, true_kg)
            # and the bound the run logs with it holds the truth, wherever in the window the energy's error lies
            assert abs(logged["carbon/co2e_kg"] - true_kg) <= logged["carbon/co2e_kg_err"], (step, logged, true_kg)
    finally:
        run.close()


def test_a_co2e_budget_stops_at_the_reading_where_the_true_co2e_crosses_it(tmp_path, sim_gpus, monkeypatch) -> None:
    # No logging boundary for a minute: the budget watches each reading. Priced from the last boundary at one
    # intensity, its figure was off by up to the whole swing between 100 and 1,000 g/kWh, and it stopped late.
    run = Alternating.build(tmp_path, sim_gpus, monkeypatch, Constant(250.0), 1.0, 0.125, 1 / 64)
    try:
        limit = run.exact_kg(run.t0 + 20.3)[0]  # reached 20.3 s in, in a 1,000 g/kWh second
        guard = BudgetGuard(BudgetRule(max_co2e_kg=limit), run.tracker, total_steps=None)
        while not guard.crossed() and run.clock.now < run.t0 + 60:
            run.advance(0.125)
        assert run.clock.now - run.t0 == pytest.approx(20.375)  # the first reading past the crossing
    finally:
        run.close()


# ----------------------------------------------------------------------------- a live API, served locally
def test_live_intensity_keeps_the_last_figure_through_every_failure(electricity_maps) -> None:
    answer = electricity_maps.answer
    electricity_maps.script = [(200, answer(120.0), 0), (401, "{}", 0), (429, "{}", 0), (500, "{}", 0),
                               (200, "not json", 0), (200, answer(80.0), 2.0), (200, answer(90.0), 0)]  # fmt: skip
    factor = ElectricityMaps("FR", Fixed(56.0, "codecarbon: France"))
    assert factor.at(time.time()).value == 56.0  # before the first answer: the location lookup
    seen = []
    for _ in range(7):
        factor.fetch()
        seen.append(factor.at(time.time()).value)
    assert seen == [120.0, 120.0, 120.0, 120.0, 120.0, 120.0, 90.0]  # the slow answer timed out
    texts = [n.text for n in factor.take_notices()]
    assert len(texts) == 1 and "the token was refused (401)" in texts[0] and "using the last figure" in texts[0]
    assert set(electricity_maps.tokens) == {"secret-token-123"}  # sent as auth-token, and in no message
    assert "Electricity Maps FR at 2026-11-24T10:00:00+00:00 (estimated)" == factor.at(time.time()).source


def test_a_stale_figure_falls_back_to_the_location(electricity_maps, monkeypatch) -> None:
    now = [1_000_000.0]
    factor = ElectricityMaps("FR", Fixed(56.0, "codecarbon: France"), clock=lambda: now[0])
    factor.fetch()
    assert factor.at(now[0]).value == 55.0
    assert factor.at(now[0] + live.STALE_S + 1).value == 56.0
    assert "using codecarbon: France instead" in factor.take_notices()[0].text


def test_the_training_thread_never_waits_for_the_api(electricity_maps, sim_gpus, tmp_path) -> None:
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02))
    electricity_maps.script = [
        (200, electricity_maps.answer(70.0), 3.0)
    ]  # the first answer takes 3 s (the timeout is 0.5 s)
    tracker = EnergyTracker(devices=["gpu"], electricity_maps_zone="FR", record_path=tmp_path / "energy.jsonl")
    tracker.start_fit(0)
    slowest = 0.0
    for step in range(1, 21):
        time.sleep(0.02)
        t0 = time.perf_counter()
        metrics = tracker.window(step)
        slowest = max(slowest, time.perf_counter() - t0)
    tracker.end_fit(20)
    assert slowest < 0.5  # the refresh thread waits for the server, never the training thread
    assert metrics.get("carbon/intensity_g_per_kwh", 475.0) == 475.0  # the location lookup (world average) meanwhile
    assert "secret-token-123" not in (tmp_path / "energy.jsonl").read_text()
    assert "electricity_maps" in (tmp_path / "energy.jsonl").read_text()  # the header names the source kind


def test_an_older_checkpoint_without_co2e_is_charged_at_the_current_intensity() -> None:
    tracker = EnergyTracker(carbon_intensity_g_per_kwh=400.0, pue=1.5)
    tracker.load_state_dict({"version": 1, "energy_j": {"gpu": J_PER_KWH}, "stage_j": {}, "samples": 0, "tokens": 0,
                             "fit_s": 1.0})  # fmt: skip
    assert tracker.totals()["carbon/co2e_kg"] == pytest.approx(1.0 * 1.5 * 400 / 1000)


def test_max_cost_needs_a_price_and_stops_when_spent(tmp_path, sim_gpus) -> None:
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02), clock=clock)
    run = manual_run(clock, devices=["gpu"])
    with pytest.raises(ValueError, match="max_cost needs a price"):
        BudgetGuard(BudgetRule(max_cost=1.0), run.tracker, total_steps=None)
    run.tracker.end_fit(0)
    priced = manual_run(clock, devices=["gpu"], price_per_kwh=2.0)
    limit = 2.0 * GPU_W * 100 / J_PER_KWH  # what 100 s cost
    guard = BudgetGuard(BudgetRule(max_cost=limit), priced.tracker, total_steps=None)
    priced.advance(99.0, every=1.0)
    assert not guard.crossed()
    priced.advance(2.0, every=1.0)
    assert guard.crossed()
    priced.tracker.end_fit(0)


@pytest.mark.parametrize("given", ["series", "nothing"])
def test_no_location_is_said_only_where_a_location_prices_the_run(tmp_path, sim_gpus, given) -> None:
    # With only a carbon_intensity_series, the run warned "No location given: CO2e uses the world-average grid
    # intensity (475 g/kWh)" while every figure was priced on the series.
    sim_gpus(SimGpu("GPU-1", Constant(300.0)))
    now = datetime.now(timezone.utc)
    series = write_series(tmp_path / "g.csv", [(now - timedelta(hours=1), 200.0), (now + timedelta(hours=1), 200.0)])
    tracker = EnergyTracker(devices=["gpu"], **({"carbon_intensity_series": str(series)} if given == "series" else {}))
    texts = [notice.text for notice in tracker.start_fit(step=0)]
    tracker.close()
    assert any(text.startswith("No location given") for text in texts) == (given == "nothing")
