"""Study 7 (Patterson et al. 2021, "when", acted on): how much time shifting saves, planned and realised.

    python examples/studies/time_shifting.py [--series data/solar_grid_30d.csv ...] [--every-h 23]
        [--out runs/studies/time_shifting]

For 4-hour jobs with 20 hours of slack, 8-hour jobs with 16 and 24-hour jobs with 24, submitted
every ``--every-h`` hours through a recorded hourly series, and for each mode of
`energy_core.plan_time_shift` (``wait``, ``pause``, ``requeue``), it compares three savings
against starting at once: the oracle's (the plan made with the true series: the optimum of
that mode's cost model), the plan's own (made with a forecast off by up to 10% each hour, as
the plan expects it) and the one that plan realises on the true series. A GPU draws 700 W busy
and 70 W idle; a requeue's restart costs 5 minutes at busy power.

The series shipped in ``data/`` are synthetic (generated and shipped with the study, by
tests/helpers/grid_series.py, seeded): 30 days of a grid with much solar and of one with
much wind. ``--series`` takes recorded ones (the format of ``carbon_intensity_series``).

Then a real run: a small model trained with ``EnergyLoop(time_shift=TimeShiftRun(...))`` on
the first day of the first series compressed in time (one hour = 0.5 s), which pauses
through the dirty hours; its run record and `energy-report` page (the intensity plot shades
when it computed) are in ``--out``. report.md has the tables.
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import torch
from study_kit import markdown_table, quiet, write_report
from torch import nn

from energy_core import EnergyLoop, TimeShiftRun, plan_time_shift
from energy_core.carbon.factor import Series

HERE = Path(__file__).parent
SERIES = [HERE / "data" / "solar_grid_30d.csv", HERE / "data" / "wind_grid_30d.csv"]
JOBS = [(4, 20), (8, 16), (24, 24)]  # hours of work, hours of slack
MODES = ("wait", "pause", "requeue")
BUSY_W, IDLE_W, RESUME_S = 700.0, 70.0, 300.0
ERROR = 0.10  # the forecast's error: up to this much, each hour on its own
COMPRESSED_HOUR_S = 0.5
COLUMNS = {
    "series": "series",
    "job": "job (work + slack, h)",
    "mode": "mode",
    "jobs": "jobs",
    "oracle": "oracle saving",
    "planned": "planned saving (forecast)",
    "realised": "realised saving",
    "share": "realised / oracle",
}


def points(series: Series) -> list[tuple[datetime, float]]:
    return [(datetime.fromtimestamp(t, timezone.utc), v) for t, v in zip(series.times, series.values)]


def priced(truth: list[tuple[datetime, float]], plan, mode: str) -> float:
    """What a plan's runs emit on the true series, in its mode's cost model (kg)."""
    times = np.array([t.timestamp() for t, _ in truth])
    values = np.array([v for _, v in truth])

    def integral(a: float, b: float) -> float:
        edges = np.concatenate(([a], times[(times > a) & (times < b)], [b]))
        at = values[np.clip(np.searchsorted(times, edges[:-1], side="right") - 1, 0, None)]
        return float((at * np.diff(edges)).sum())

    runs = [(a.timestamp(), b.timestamp()) for a, b in plan.runs]
    busy = sum(integral(a, b) for a, b in runs)
    held = 0.0 if mode == "requeue" else IDLE_W * (integral(plan.start.timestamp(), runs[-1][1]) - busy)
    return (BUSY_W * busy + held) / 3.6e6 / 1000.0


def savings(series: Series, every_h: float, seed: int = 0) -> list[dict]:
    """One row per job and mode: the savings summed over the submits."""
    truth = points(series)
    rng = np.random.default_rng(seed)
    forecast = [(t, v * f) for (t, v), f in zip(truth, rng.uniform(1 - ERROR, 1 + ERROR, len(truth)))]
    first, last = truth[0][0], truth[-1][0]
    rows = []
    for work_h, slack_h in JOBS:
        submits = []
        at = first
        while at + timedelta(hours=work_h + slack_h) <= last:
            submits.append(at)
            at += timedelta(hours=every_h)
        for mode in MODES:
            sums = dict.fromkeys(("now", "oracle", "planned", "planned_now", "realised"), 0.0)
            resume_s = RESUME_S if mode == "requeue" else 0.0
            for start in submits:
                deadline = start + timedelta(hours=work_h + slack_h)
                arguments = {"work_s": work_h * 3600.0, "start": start, "deadline": deadline, "busy_w": BUSY_W,
                             "idle_w": IDLE_W, "resume_s": resume_s, "mode": mode}  # fmt: skip
                oracle = plan_time_shift(truth, **arguments)
                blind = plan_time_shift(forecast, **arguments)
                sums["now"] += oracle.run_now_co2e_kg
                sums["oracle"] += oracle.co2e_kg
                sums["planned"] += blind.co2e_kg
                sums["planned_now"] += blind.run_now_co2e_kg
                sums["realised"] += priced(truth, blind, mode)
            oracle_saving = 1 - sums["oracle"] / sums["now"]
            realised = 1 - sums["realised"] / sums["now"]
            rows.append({
                "series": series.path.split("/")[-1],
                "job": f"{work_h} + {slack_h}",
                "mode": mode,
                "jobs": len(submits),
                "oracle": f"{oracle_saving:.1%}",
                "planned": f"{1 - sums['planned'] / sums['planned_now']:.1%}",
                "realised": f"{realised:.1%}",
                "share": f"{realised / oracle_saving:.0%}" if oracle_saving > 0.005 else "-",
                "oracle_saving": oracle_saving,
                "realised_saving": realised,
                "kg_now": sums["now"],
            })  # fmt: skip
    return rows


def compressed_run(series: Series, out: Path) -> tuple[Path, dict[str, float]]:
    """A real training loop with `TimeShiftRun`, on the series' first day compressed in time."""
    torch.manual_seed(0)
    begin = time.time()
    day = list(zip(series.times, series.values))[:24]
    grid = out / "compressed_day.csv"
    start = datetime.fromtimestamp(begin, timezone.utc)
    rows = [f"{(start + timedelta(seconds=i * COMPRESSED_HOUR_S)).isoformat()},{v}\n" for i, (_, v) in enumerate(day)]
    grid.write_text("datetime,g_per_kwh\n" + "".join(rows))
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(512, 32)
    y = x[:, :4].sum(1, keepdim=True)
    steps = 40  # of 10 ms and more: under an hour of the compressed day, a few on a loaded machine
    deadline = start + timedelta(seconds=22 * COMPRESSED_HOUR_S)
    record = out / "energy.jsonl"
    if record.exists():
        record.unlink()
    # idle_w: a paused process is measured by the CPU estimate (CPU time x 4 W per thread) as drawing nothing;
    # said here, so that the plan made before the first pause does not assume a quarter of the busy power
    shift = TimeShiftRun(deadline=deadline, mode="pause", idle_w=0.0)
    with EnergyLoop(carbon_intensity_series=str(grid), record_path=str(record), time_shift=shift, total_steps=steps,
                    log_every_n_steps=4, sample_interval_s=0.05) as energy:  # fmt: skip
        for i in range(steps):
            time.sleep(0.01)
            batch = slice(16 * (i % 32), 16 * (i % 32) + 16)
            optimizer.zero_grad()
            nn.functional.mse_loss(model(x[batch]), y[batch]).backward()
            optimizer.step()
            energy.step({"input_ids": x[batch]})
    return record, dict(energy.last_metrics)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=Path, nargs="+", default=SERIES, help="recorded hourly series (CSV)")
    parser.add_argument("--every-h", type=float, default=23.0, help="hours between two submits")
    parser.add_argument("--out", type=Path, default=Path("runs/studies/time_shifting"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    quiet()
    recorded = [Series(path, "--series", "g/kWh") for path in args.series]
    rows = [row for series in recorded for row in savings(series, args.every_h)]
    record, metrics = compressed_run(recorded[0], args.out)
    result = {
        "rows": rows,
        "busy_w": BUSY_W,
        "idle_w": IDLE_W,
        "resume_s": RESUME_S,
        "forecast_error": ERROR,
        "compressed_run": {
            "paused_s": metrics.get("carbon/paused_s"),
            "saved_kg": metrics.get("carbon/saved_kg"),
            "co2e_kg": metrics.get("carbon/co2e_kg"),
        },  # fmt: skip
    }
    lines = [
        "# Time shifting: planned and realised savings",
        "",
        f"Jobs of 4, 8 and 24 h with 20, 16 and 24 h of slack, submitted every {args.every_h:g} h; {BUSY_W:g} W busy, "
        f"{IDLE_W:g} W idle, {RESUME_S:g} s per restart; forecasts off by up to {ERROR:.0%} each hour. Savings against "
        "starting at once, summed over the jobs.",
        "",
        *markdown_table(rows, COLUMNS),
        "",
        f"A real loop on the first day compressed ({COMPRESSED_HOUR_S:g} s an hour) paused "
        f"{result['compressed_run']['paused_s']:.2f} s and saved {result['compressed_run']['saved_kg'] * 1e6:.3g} mg "
        "CO2e against starting at once; its record and report are beside this file.",
    ]
    write_report(args.out, result, lines, [record])
    return result


if __name__ == "__main__":
    main()
