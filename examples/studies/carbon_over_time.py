"""Study 6 (Patterson et al. 2021, "when"): a long run's CO2e from a fixed grid figure and from an intensity series.

    python examples/studies/carbon_over_time.py [--hours 30] [--series day.csv] [--record energy.jsonl]
        [--out runs/studies/carbon_over_time]

A 30-hour training job (virtual time: 350 W training, a 20-minute 150 W evaluation every
3 hours) is priced the way the monitors price it: each 10-minute slice's kWh x PUE at the
grid intensity in force at its midpoint. Once with one fixed figure (the series' mean, what
a location lookup gives), and once with the series itself, for every start hour of the day.
The default series is a synthetic solar-heavy grid (about 450 g/kWh at night, 150 at
midday, UTC); pass ``--series`` for a recorded one (timestamp with UTC offset, g/kWh:
the format of ``carbon_intensity_series``), and ``--record`` to price a real run record's
measured slices instead of the synthetic job. report.md has the table.
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

from study_kit import markdown_table, write_report

from energy_core import J_PER_KWH
from energy_core.carbon.factor import Fixed, Series
from energy_core.output.record import read_runs
from energy_core.report.runs import Run
from energy_core.report.when import Slice, co2e_g, slices, start_hours

PUE = 1.2
SLICE_S = 600.0
COLUMNS = {
    "start": "start (UTC)",
    "series_kg": "CO2e, series (kg)",
    "fixed_kg": "CO2e, fixed figure (kg)",
    "difference": "fixed vs series",
}


def synthetic_day(path: Path, days: int = 3) -> Path:
    """Hourly intensity of a solar-heavy grid: 450 g/kWh at night, down to 150 at 12:00 UTC."""
    start = datetime(2026, 6, 1, tzinfo=timezone.utc)
    rows = []
    for hour in range(24 * days):
        sun = max(0.0, math.cos((hour % 24 - 12) / 12 * math.pi * 1.5))  # daylight from ~6:00 to ~18:00
        rows.append(f"{(start + timedelta(hours=hour)).isoformat()},{450 - 300 * sun:.0f}\n")
    path.write_text("datetime,carbon_intensity_g_per_kwh\n" + "".join(rows))
    return path


def synthetic_job(hours: float) -> list[Slice]:
    """The job's energy in 10-minute slices from t=0: 350 W, but 150 W in the first 20
    minutes of every third hour (evaluation)."""
    found = []
    for i in range(int(hours * 3600 / SLICE_S)):
        t = i * SLICE_S
        watts = 150.0 if (t % (3 * 3600)) < 1200 else 350.0
        found.append(Slice(t, t + SLICE_S, watts * SLICE_S / J_PER_KWH))
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=30.0, help="length of the synthetic job")
    parser.add_argument("--series", type=Path, default=None, help="a recorded intensity series (CSV)")
    parser.add_argument("--record", type=Path, default=None, help="price this run record's slices instead")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/carbon_over_time"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    series = Series(args.series or synthetic_day(args.out / "synthetic_day.csv"), "--series", "g/kWh")
    job = slices(Run.of(read_runs(args.record)[0][-1])) if args.record else synthetic_job(args.hours)
    if not job:
        parser.error(f"{args.record}: no energy slices in its last run")
    began = job[0].start
    starts = start_hours(series)
    one_day = [v for t, v in zip(series.times, series.values) if t < starts[0] + 86400]
    fixed = Fixed(sum(one_day) / len(one_day), "the series' mean over its first day")
    rows = []
    for moment in starts:
        with_series = co2e_g(job, series, PUE, moment - began) / 1000
        with_fixed = co2e_g(job, fixed, PUE, moment - began) / 1000
        start = datetime.fromtimestamp(moment, timezone.utc).strftime("%H:%M")
        rows.append({"start": start, "series_kg": with_series, "fixed_kg": with_fixed,
                     "difference": f"{(with_fixed / with_series - 1) * 100:+.0f}%"})  # fmt: skip
    best = min(rows, key=lambda r: r["series_kg"])
    worst = max(rows, key=lambda r: r["series_kg"])
    kwh = sum(s.kwh for s in job)
    result = {"kwh": kwh, "pue": PUE, "fixed_g_per_kwh": fixed.value.value, "rows": rows,
              "best_start": best["start"], "worst_start": worst["start"]}  # fmt: skip
    lines = [
        "# A long run's CO2e: fixed figure against an intensity series",
        "",
        f"{kwh:.2f} kWh over {(job[-1].end - job[0].start) / 3600:.1f} h, PUE {PUE}; fixed figure "
        f"{fixed.value.value:.0f} g/kWh ({fixed.value.source}).",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        f"Best start {best['start']} UTC ({best['series_kg']:.2f} kg), worst {worst['start']} UTC "
        f"({worst['series_kg']:.2f} kg): {(worst['series_kg'] / best['series_kg'] - 1) * 100:.0f}% more for the "
        "same energy. The fixed figure gives the same CO2e at every hour.",
    ]
    write_report(args.out, result, lines, [args.record] if args.record else [])
    return result


if __name__ == "__main__":
    main()
