"""energy-report shows each run's bound: a table column, and shaded bands on the energy and power plots."""

from __future__ import annotations

import json

import pytest

from energy_core import J_PER_KWH
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.report import plots
from energy_core.report.cli import SUMMARY_HEAD, run_row
from energy_core.report.runs import read
from tests.energy_core.report.test_html import run_record


def without_bounds(path, out) -> None:
    """The same record with every ``_err`` figure taken out (a record written before bounds)."""
    lines = []
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        if isinstance(line.get("metrics"), dict):
            line["metrics"] = {k: v for k, v in line["metrics"].items() if not k.endswith("_err")}
        lines.append(json.dumps(line))
    out.write_text("\n".join(lines) + "\n")


def test_the_table_and_the_plots_carry_the_bound(tmp_path) -> None:
    path = tmp_path / "run.jsonl"
    run_record(path, 300.0)
    [run], _ = read(path)
    lines = [line for line in map(json.loads, path.read_text().splitlines())]
    drawn = [x for x in lines if x["type"] in ("window", "epoch", "summary") and keys.TOTAL_KWH in x["metrics"]]
    shown = plots.series(run)  # every cumulative figure drawn carries its recorded bound
    assert shown["joules_err"] == pytest.approx([x["metrics"][keys.err(keys.TOTAL_KWH)] * J_PER_KWH for x in drawn])
    # a window's power bound is its energy's bound over its seconds; short windows fold in, bounds and all
    windows = [x for x in lines if x["type"] == "window"]
    window_err_j = sum(w["metrics"][keys.err(keys.STEP_J)] * w["steps"] for w in windows)
    assert len(shown["watts_err"]) == len(shown["watts"]) and all(e > 0 for e in shown["watts_err"])
    assert max(shown["watts_err"]) <= window_err_j / min(w["seconds"] for w in windows)
    row = dict(zip(SUMMARY_HEAD, run_row("run", run)))
    kwh, kwh_err = run.metrics[keys.TOTAL_KWH], run.metrics[keys.err(keys.TOTAL_KWH)]
    assert row["energy bound"] == f"± {show.rounded(100 * kwh_err / kwh)} % ({show.energy_kwh(kwh_err)})"
    # The bands: the same record without its bounds draws the same curves and no shading.
    bare = tmp_path / "bare.jsonl"
    without_bounds(path, bare)
    [plain], _ = read(bare)
    assert dict(zip(SUMMARY_HEAD, run_row("run", plain)))["energy bound"] == "-"
    banded, unbanded = dict(plots.plot_runs([("run", run)])), dict(plots.plot_runs([("run", plain)]))
    for name in ("energy_vs_step.png", "power_vs_time.png"):
        assert banded[name] != unbanded[name], name
    assert banded["loss_vs_kwh.png"] == unbanded["loss_vs_kwh.png"]  # no bound there


@pytest.mark.parametrize("damage", [-1e-6, 1e308], ids=["negative", "huge"])
def test_a_bound_that_cannot_be_one_is_shown_as_none(tmp_path, damage) -> None:
    # A record another user could have edited: a negative bound showed as "± -8.45 %", 1e308 kWh as "± - %".
    path, damaged = tmp_path / "run.jsonl", tmp_path / "damaged.jsonl"
    run_record(path, 300.0)
    lines = []
    for raw in path.read_text().splitlines():
        line = json.loads(raw)
        if isinstance(line.get("metrics"), dict):
            line["metrics"] = {k: (damage if k.endswith("_err") else v) for k, v in line["metrics"].items()}
        lines.append(json.dumps(line))
    damaged.write_text("\n".join(lines) + "\n")
    [run], _ = read(damaged)
    assert dict(zip(SUMMARY_HEAD, run_row("run", run)))["energy bound"] == "-"
    shown = plots.series(run)
    assert shown["joules_err"] and all(e != e for e in shown["joules_err"])  # NaN: no band
    assert all(e != e for e in shown["watts_err"])
