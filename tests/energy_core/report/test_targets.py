"""energy-report compares runs by energy to target: the column, and the metric-against-energy
plot read back by its data; the records come from targets on simulated GPUs of known power."""

from __future__ import annotations

import io
import json

import matplotlib
import pytest
from PIL import Image

from energy_core import J_PER_KWH, MeasureOptions, Ranks, TargetRule
from energy_core.output import units_text as show
from energy_core.report import targets
from energy_core.report.cli import main
from energy_core.report.plots import TITLES, plot_runs
from energy_core.report.runs import Run
from energy_core.target.run import TargetRun
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.manual import manual_run

matplotlib.use("Agg")
import matplotlib.pyplot as plt

EPOCH_S = 1.25  # a second of training and a quarter second of validation, per evaluation


def record(path, sim_gpus, watts: float, curve: list[float], metric: str = "val_acc") -> list[float]:
    """A run at ``watts`` with one evaluation per epoch scoring ``curve``; the kWh at each."""
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(watts), counter_period_s=1 / 16), clock=clock)
    run = manual_run(clock, devices=["gpu"], record_path=path, carbon_intensity_g_per_kwh=100.0)
    target = TargetRun(TargetRule(metric, 0.9, stop=False), MeasureOptions())
    target.bind(run.tracker, Ranks(), step=0)
    for i, value in enumerate(curve, start=1):
        run.advance(EPOCH_S, every=0.125)
        target.evaluate(10 * i, value)
    run.tracker.end_fit(10 * len(curve))
    run.tracker.close()
    return [watts * EPOCH_S * i / J_PER_KWH for i in range(1, len(curve) + 1)]


@pytest.fixture
def two_setups(tmp_path, sim_gpus):
    """A big batch at 300 W reaching 0.9 at its third evaluation; a small one at 200 W at its fourth."""
    big, small = tmp_path / "big-batch.jsonl", tmp_path / "small-batch.jsonl"
    big_kwh = record(big, sim_gpus, 300.0, [0.5, 0.8, 0.91, 0.95])
    small_kwh = record(small, sim_gpus, 200.0, [0.3, 0.6, 0.8, 0.9, 0.93])
    return (big, big_kwh), (small, small_kwh)


def test_the_column_gives_each_runs_energy_to_its_target(two_setups, tmp_path, capsys, monkeypatch) -> None:
    (big, big_kwh), (small, small_kwh) = two_setups
    plain = tmp_path / "plain.jsonl"
    lines = [x for x in map(json.loads, small.read_text().splitlines()) if x["type"] != "target"]
    plain.write_text("".join(json.dumps(x) + "\n" for x in lines))  # the same run without its target
    monkeypatch.setenv("COLUMNS", "250")
    assert main([str(big), str(small), str(plain), "--out", str(tmp_path / "report")]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("│ energy to target"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[1] == f"{show.energy_kwh(big_kwh[2])} (val_acc >= 0.9, step 30)"  # 3 x 1.25 s at 300 W
    assert cells[2] == f"{show.energy_kwh(small_kwh[3])} (val_acc >= 0.9, step 40)"  # 4 x 1.25 s at 200 W
    assert cells[3] == "-"
    page = (tmp_path / "report" / "report.html").read_text().replace("<wbr>", "")
    assert "energy to target" in page and f"{show.energy_kwh(big_kwh[2])} (val_acc &gt;= 0.9, step 30)" in page
    assert "Metric against energy (metric_vs_kwh.png)" in page


def test_the_plot_draws_each_run_against_its_energy_with_the_target(two_setups, tmp_path) -> None:
    (big, big_kwh), (small, small_kwh) = two_setups
    runs = [(path.stem, Run.of(json.loads(x) for x in path.read_text().splitlines())) for path in (big, small)]
    figure = targets.metric_figure(plt, runs, lambda label, run: label)
    (axes,) = figure.axes
    curves = [line for line in axes.lines if line.get_linestyle() == "-"]
    assert [line.get_label() for line in curves] == ["big-batch", "small-batch"]
    assert axes.get_xlabel() == "energy since fit start (J)"  # ~1,500 J: joules, not 4.2e-04 kWh
    joules = [kwh * J_PER_KWH for kwh in big_kwh]
    assert list(curves[0].get_xdata()) == pytest.approx(joules, rel=1e-12)
    assert list(curves[0].get_ydata()) == [0.5, 0.8, 0.91, 0.95]
    assert list(curves[1].get_xdata()) == pytest.approx([kwh * J_PER_KWH for kwh in small_kwh], rel=1e-12)
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in axes.lines if line.get_marker() == "*"]
    assert stars == [(pytest.approx(joules[2]), 0.91), (pytest.approx(small_kwh[3] * J_PER_KWH), 0.9)]
    (dashed,) = [line for line in axes.lines if line.get_linestyle() == "--"]
    assert list(dashed.get_ydata()) == [0.9, 0.9]  # the common target
    assert axes.get_title() == "Metric against energy" and axes.get_ylabel() == "val_acc"
    plt.close(figure)
    drawn = dict(plot_runs(runs))
    assert "metric_vs_kwh.png" in drawn and TITLES["metric_vs_kwh.png"] == "Metric against energy"
    assert Image.open(io.BytesIO(drawn["metric_vs_kwh.png"])).text["Title"] == "Metric against energy"


def test_names_from_a_record_are_shown_plain_and_bad_lines_are_left_out(tmp_path, sim_gpus) -> None:
    path = tmp_path / "odd.jsonl"
    metric = "acc\x1b[31m\x07" + "x" * 100
    record(path, sim_gpus, 300.0, [0.2, 0.4], metric=metric)
    with path.open("a") as file:
        run = json.loads(path.read_text().splitlines()[0])["run"]
        for odd in ({"energy_kwh": "lots", "value": 1.0}, {"energy_kwh": 1.0, "value": 1.0, "metric": 7},
                    {"energy_kwh": 1.0, "value": True}):  # fmt: skip
            file.write(json.dumps({"type": "target", "run": run, "metric": metric, "target": 0.9, **odd}) + "\n")
    run = Run.of(json.loads(x) for x in path.read_text().splitlines())
    found = targets.evaluations(run)
    assert len(found) == 3 and found[-1]["value"] is None  # a bool is not a value; "lots" is not an energy
    cell = targets.energy_to_target(run)
    assert cell.startswith("not reached (acc\\x1b[31m\\x07xxx") and "\x1b" not in cell and "\x07" not in cell
    assert cell.endswith("… >= 0.9; best 0.4)")
