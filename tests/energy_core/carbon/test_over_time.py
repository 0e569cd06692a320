"""Carbon where and when: intensity and price over time, charged slice by slice; a live API on a local server.

Runs use a manual clock (virtual hours in a second) on a simulated 300 W GPU; the live
intensity comes from a real HTTP server on localhost replaying Electricity Maps' answers.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from energy_core import J_PER_KWH, EnergyTracker, MeasureOptions
from energy_core.budget.guard import BudgetGuard
from energy_core.budget.rule import BudgetRule
from energy_core.carbon import electricity_maps as live
from energy_core.carbon.electricity_maps import ElectricityMaps
from energy_core.carbon.factor import Fixed, Series
from tests.doubles.power_traces import Constant
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


def test_co2e_is_charged_window_by_window_at_the_intensity_in_force(tmp_path, sim_gpus) -> None:
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
    # a slice is charged at its midpoint's intensity: the window straddling the change is off by half of it
    window_kg = 1.2 * GPU_W * 60 / J_PER_KWH * (300 - 100) / 1000
    assert metrics["carbon/co2e_kg"] == pytest.approx(expected, abs=window_kg / 2)
    assert metrics["carbon/co2e_kg"] != pytest.approx(1.2 * 2 * half_kwh * 300 / 1000, rel=0.1)  # not one figure
    assert metrics["cost/total"] == pytest.approx(1.2 * 2 * half_kwh * 0.25, rel=1e-3)  # kWh x PUE x price
    lines = read_record(tmp_path / "energy.jsonl")
    summary = lines[-1]
    assert summary["carbon"]["g_per_kwh"] == pytest.approx(200.0, abs=200 / 30)  # the energy-weighted mean
    assert summary["cost"] == {"total": pytest.approx(metrics["cost/total"]), "currency": "EUR"}
    factors = [(x["factor"], x["value"]) for x in lines if x["type"] == "factor"]
    assert factors == [("carbon_g_per_kwh", 100.0), ("price_per_kwh", 0.25), ("carbon_g_per_kwh", 300.0)]


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
        run.tracker.window(minute)  # boundaries charge the slices; readings between them preview
        if guard.crossed():
            break
    assert minute == 25  # with a fixed first figure (100 g/kWh) it would have run to minute 60
    run.tracker.end_fit(minute)


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
