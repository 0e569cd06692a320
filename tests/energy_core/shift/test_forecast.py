"""Where a time shift's forecast comes from: the run's series, Electricity Maps' forecast endpoint
(the local stand-in server), or none (one notice, and the run trains at once)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from energy_core import TimeShiftRun
from energy_core.carbon.electricity_maps import fetch_forecast
from tests.doubles.electricity_maps import Answer, forecast_body
from tests.energy_core.shift.manual_job import BASE, CLEAN, DIRTY, HOUR, HOURS, STEPS, Job, deadline_in
from tests.helpers.records import read_record


def hourly_points(values: list[float]) -> list[tuple[str, object]]:
    return [((BASE + timedelta(hours=h)).isoformat().replace("+00:00", "Z"), v) for h, v in enumerate(values)]


def test_the_forecast_endpoint_is_read_bounded_and_checked(electricity_maps) -> None:
    electricity_maps.forecasts = [Answer(body=forecast_body(hourly_points([300, 120.5])))]
    points, why = fetch_forecast("DE")
    assert why == "" and points == [(BASE.timestamp(), 300.0), (BASE.timestamp() + HOUR, 120.5)]
    assert electricity_maps.paths[-1] == "/v3/carbon-intensity/forecast?zone=DE&horizonHours=72"
    assert electricity_maps.tokens[-1] == "secret-token-123"

    electricity_maps.forecasts = [Answer(body=forecast_body(hourly_points([300, -1])))]
    points, why = fetch_forecast("DE")
    assert points == [] and "carbonIntensity -1 is not a number in [0, 2000]" in why  # refused whole
    electricity_maps.forecasts = [Answer(401, "{}")]
    assert fetch_forecast("DE") == ([], "the token was refused (401)")
    electricity_maps.forecasts = [Answer(body='{"forecast": "secret-token-123"}')]
    points, why = fetch_forecast("DE")
    assert points == [] and "secret-token-123" not in why


def test_a_live_zone_plans_on_its_forecast(sim_gpus, monkeypatch, tmp_path, electricity_maps) -> None:
    electricity_maps.forecasts = [Answer(body=forecast_body(hourly_points(HOURS)))]
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause")
    loop = job.start(shift, carbon_intensity_series=None, electricity_maps_zone="DE")
    with loop:
        job.wait_first_reading()
        shift.forecast.wait(5.0)  # the fetch runs on its own thread: let it answer before the plan is due
        job.train(loop, STEPS)
    plans = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "plan"]
    assert plans and plans[0]["plan"]["runs"][0][0] == pytest.approx(BASE.timestamp() + 2 * HOUR)
    assert all(2 * HOUR < t <= 4 * HOUR for t in job.step_times[3:])  # trained in the forecast's clean hours
    assert DIRTY > CLEAN


@pytest.mark.parametrize(
    ("measure", "why"),
    [
        ({"carbon_intensity_series": None, "country": "FRA"}, "the carbon intensity is one fixed figure"),
        ({"carbon_intensity_series": None, "electricity_maps_zone": "DE"}, "the token was refused (401)"),
    ],
)
def test_without_a_forecast_it_trains_at_once_and_says_so_once(sim_gpus, monkeypatch, tmp_path, electricity_maps,
                                                                measure, why) -> None:  # fmt: skip
    electricity_maps.forecasts = [Answer(401, "{}")]
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause")
    loop = job.start(shift, **measure)
    with pytest.warns(UserWarning, match="Time shift: no intensity forecast") as caught, loop:
        job.wait_first_reading()
        shift.forecast.wait(5.0)
        job.train(loop, 40)
    said = [str(w.message) for w in caught if "Time shift" in str(w.message)]
    assert len(said) == 1 and why in said[0] and "secret-token-123" not in said[0]
    assert job.step_times[-1] == pytest.approx(40 * 36.0)  # never paused
    assert loop.last_metrics["carbon/paused_s"] == 0.0
    assert loop.last_metrics["carbon/saved_kg"] == pytest.approx(0.0, abs=1e-12)
    assert not [x for x in read_record(job.record) if x["type"] == "shift"]
