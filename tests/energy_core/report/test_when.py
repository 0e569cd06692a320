"""energy-report's "when": the same run started at another hour, and intensity against power.

Run records come from the real tracker on a simulated 300 W GPU and a manual clock (hours
of training in a second); the report reads them back as a user's would.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from energy_core import J_PER_KWH
from energy_core.carbon.factor import Series
from energy_core.output.record import read_runs
from energy_core.report import cli as report
from energy_core.report import plots as report_plots
from energy_core.report import when as report_when
from energy_core.report.runs import Run
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import manual_run

GPU_W = 300.0
DAY = datetime(2026, 6, 1, tzinfo=timezone.utc)


def day_series(path: Path) -> Path:
    """A clean morning (100 g/kWh, 00:00-11:59 UTC) and a dirty afternoon (400 g/kWh)."""
    rows = "".join(f"{(DAY + timedelta(hours=h)).isoformat()},{100.0 if h < 12 else 400.0}\n" for h in range(24))
    path.write_text("datetime,carbon_intensity\n" + rows)
    return path


def two_hour_run(tmp_path: Path, sim_gpus, **options: object) -> Path:
    """Two hours at 300 W on the manual clock, a window every 10 minutes; returns the record."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(GPU_W), counter_period_s=0.02), clock=clock)
    record = tmp_path / "energy.jsonl"
    run = manual_run(clock, devices=["gpu"], record_path=record, **options)
    for step in range(1, 13):
        run.advance(600.0, every=5.0)
        run.tracker.window(step)
    run.tracker.end_fit(12)
    run.tracker.close()
    return record


def grams_of(text: str) -> float:
    """A mass as the report shows it ("720 g", "1.44 kg"), in grams."""
    number, unit = text.split(" ")
    return float(number.replace(",", "")) * {"mg": 1e-3, "g": 1.0, "kg": 1e3, "t": 1e6}[unit]


def test_the_same_run_started_at_each_hour_of_a_series(tmp_path, sim_gpus) -> None:
    record = two_hour_run(tmp_path, sim_gpus, pue=1.5, carbon_intensity_g_per_kwh=250.0)
    run = Run.of(read_runs(record)[0][0])
    hour_kwh = GPU_W * 3600 / J_PER_KWH
    assert sum(s.kwh for s in report_when.slices(run)) == pytest.approx(2 * hour_kwh, rel=1e-3)
    rows = report_when.started_at_other_hours(run, Series(day_series(tmp_path / "day.csv"), "series", "g/kWh"))
    assert [r[0] for r in rows[1:4]] == ["2026-06-01 00:00 UTC", "2026-06-01 01:00 UTC", "2026-06-01 02:00 UTC"]
    grams = {r[0][11:16]: grams_of(r[1]) for r in rows[1:]}  # shown in the unit that fits, 3 digits
    assert grams["00:00"] == pytest.approx(2 * hour_kwh * 1.5 * 100, rel=5e-3)  # all morning
    assert grams["11:00"] == pytest.approx(hour_kwh * 1.5 * (100 + 400), rel=5e-3)  # one hour each
    assert grams["12:00"] == pytest.approx(2 * hour_kwh * 1.5 * 400, rel=5e-3)  # all afternoon
    change = float(rows[13][2].rstrip("%")) / 100  # against the run as it ran
    assert change == pytest.approx(grams["12:00"] / grams_of(rows[0][1]) - 1, abs=0.02)


def test_energy_report_shows_the_hours_and_the_intensity_curve(tmp_path, sim_gpus, capsys) -> None:
    changes = [(datetime.now(timezone.utc) - timedelta(hours=1), 100.0)]
    changes.append((changes[0][0] + timedelta(hours=2), 300.0))  # one hour into the run
    series = tmp_path / "live.csv"
    series.write_text("datetime,g\n" + "".join(f"{t.isoformat()},{v}\n" for t, v in changes))
    record = two_hour_run(tmp_path, sim_gpus, carbon_intensity_series=series)
    out = tmp_path / "report"
    assert (
        report.main([str(record), "--intensity-series", str(day_series(tmp_path / "day.csv")), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "the same run started at another hour" in printed and "2026-06-01 12:00" in printed
    page = (out / "report.html").read_text()
    assert 'id="other-hours"' in page and "2026-06-01 23:00" in page
    png = (out / "intensity_vs_power.png").read_bytes()
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and width > 600 and height > 300
    assert b"Grid intensity against power" in png  # its title, stored as a text chunk
    run = Run.of(read_runs(record)[0][0])
    intensity = [g for _, g in report_plots.logged_intensity(run)]  # what the plot draws
    assert intensity[:5] == [100.0] * 5 and intensity[-5:] == [300.0] * 5
    assert report_plots.series(run)["seconds"][-1] / 3600 == pytest.approx(2.0, abs=1e-6)


def test_a_fixed_intensity_draws_no_intensity_curve(tmp_path, sim_gpus) -> None:
    record = two_hour_run(tmp_path, sim_gpus, carbon_intensity_g_per_kwh=250.0)
    assert report.main([str(record), "--out", str(tmp_path / "report")]) == 0
    assert not (tmp_path / "report" / "intensity_vs_power.png").exists()
    assert (tmp_path / "report" / "power_vs_time.png").exists()
    assert 'id="other-hours"' not in (tmp_path / "report" / "report.html").read_text()


def test_a_bad_intensity_series_is_one_message(tmp_path, sim_gpus, capsys) -> None:
    record = two_hour_run(tmp_path, sim_gpus, carbon_intensity_g_per_kwh=250.0)
    (tmp_path / "bad.csv").write_text("datetime,g\n2026-06-01T00:00:00,100\n")
    assert report.main([str(record), "--intensity-series", str(tmp_path / "bad.csv")]) == 2
    assert "--intensity-series: line 2" in capsys.readouterr().err


def test_a_time_shifted_run_shows_when_it_computed(tmp_path, sim_gpus, monkeypatch) -> None:
    """The record of a paused job (the manual-clock job of tests/energy_core/shift) gives the stretches the
    intensity plot shades: from the start to the pause, and from the resume to the end."""
    from energy_core import TimeShiftRun
    from energy_core.report.runs import Run
    from energy_core.report.when import computing
    from tests.energy_core.shift.manual_job import HOUR, STEP_S, STEPS, Job, deadline_in

    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="pause"))
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    (lines,) = read_runs(job.record)[0]
    stretches = computing(Run.of(lines))
    assert [(round(a, 6), round(b, 6)) for a, b in stretches] == [(0.0, 3 * STEP_S), (2 * HOUR, job.step_times[-1])]
    out = tmp_path / "report"
    assert report.main([str(job.record), "--out", str(out)]) == 0
    assert (out / "intensity_vs_power.png").exists()
    assert computing(Run.of(line for line in lines if line["type"] != "shift")) == []  # never paused: no shading
