"""energy-report on crafted records: each case was a traceback, a wrong figure or a blow-up before.

Records are written by hand (the fields the writer writes), then damaged the way another
user could, and read by ``energy-report`` in this process.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from energy_core.carbon.factor import Series
from energy_core.output import units_text as show
from energy_core.report import plots, when
from energy_core.report.cli import main, run_row
from energy_core.report.runs import MAX_RUNS, Run, read

RUN = "abc123abc123"


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


def header(**fields: Any) -> dict[str, Any]:
    return {
        "type": "header", "run": RUN, "time": 1_796_000_000.0, "host": "vm", "argv": ["train.py"],
        "hardware": {"cpu": "EPYC", "sources": [{"name": "gpu0", "kind": "gpu", "method": "nvml-energy-counter",
                                                  "estimated": False, "detail": "H100"}]},
        "carbon": {"g_per_kwh": 56.0, "source": "FRA", "pue": 1.0},
        **fields,
    }  # fmt: skip


def window(step: int, kwh: float, watts: float, **fields: Any) -> dict[str, Any]:
    return {
        "type": "window", "run": RUN, "time": 1_796_000_000.0 + 10 * step, "step": step, "steps": 1,
        "seconds": 10.0, "elapsed_s": 10.0 * step, "extra": {"loss": 1.0 / step},
        "metrics": {"energy/total_kwh": kwh, "energy/gpu_kwh": kwh, "power/total_w": watts,
                    "carbon/co2e_kg": kwh * 0.056},
        **fields,
    }  # fmt: skip


def summary(kwh: float = 0.003, **fields: Any) -> dict[str, Any]:
    return {
        "type": "summary", "run": RUN, "time": 1_796_000_031.0, "step": 3, "status": "completed",
        "metrics": {"energy/total_kwh": kwh, "energy/gpu_kwh": kwh, "carbon/co2e_kg": kwh * 0.056},
        "seconds": 30.0, "mean_power_w": 360.0, "j_per_sample": 12.0, "j_per_token": None,
        "carbon": {"g_per_kwh": 56.0, "source": "FRA", "pue": 1.0},
        **fields,
    }  # fmt: skip


def good() -> list[dict[str, Any]]:
    return [header(), window(1, 0.001, 360.0), window(2, 0.002, 360.0), window(3, 0.003, 360.0), summary()]


def write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def report(tmp_path: Path, lines: list[Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path = write(tmp_path / "energy.jsonl", lines)
    code = main([str(path), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    return code, out, err


def cell(out: str, name: str) -> str:
    """The first run's cell of the summary line ``name``."""
    line = next(x for x in out.splitlines() if x.startswith(f"│ {name} "))
    return line.split("│")[2].strip()


# --------------------------------------------------------------- fields the reader does not check
def _set(index: int, change) -> list[dict[str, Any]]:
    lines = good()
    change(lines[index])
    return lines


HUGE = 10**400
UNCHECKED = {
    "a window's steps": lambda: _set(1, lambda x: x.update(steps=HUGE)),
    "a window's loss": lambda: _set(1, lambda x: x["extra"].update(loss=HUGE)),
    "the summary's stage_kwh": lambda: _set(4, lambda x: x.update(stage_kwh={"val": HUGE})),
    "a target's value": lambda: [*good()[:4], {"type": "target", "run": RUN, "event": "reached", "step": 3,
                                                "metric": "acc", "energy_kwh": 0.003, "value": HUGE}, good()[4]],
    "a shift's time": lambda: [*good()[:4], {"type": "shift", "run": RUN, "event": "pause", "at": HUGE}, good()[4]],
}  # fmt: skip


@pytest.mark.parametrize(  # each writes a whole report (plots: half a second); two in the slow run
    "where",
    [
        pytest.param(w, marks=pytest.mark.slow) if w in ("a window's loss", "a shift's time") else w
        for w in sorted(UNCHECKED)
    ],
)
def test_a_number_of_400_digits_where_the_reader_does_not_look_is_no_traceback(tmp_path, capsys, where) -> None:
    code, out, _ = report(tmp_path, UNCHECKED[where](), capsys)
    assert code == 0
    assert cell(out, "energy") == show.energy_kwh(0.003) == "3 Wh"
    assert (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize("sources", [5, [{"kind": ["gpu"], "estimated": True, "name": "x"}]])
def test_header_sources_of_another_shape_are_no_traceback(tmp_path, capsys, sources) -> None:
    lines = good()
    lines[0]["hardware"]["sources"] = sources
    code, out, _ = report(tmp_path, lines, capsys)
    assert code == 0
    assert cell(out, "energy") == "3 Wh"
    assert cell(out, "estimated") == "-"  # a kind that is not a name is no estimated kind


def test_an_argument_that_was_not_utf8_reaches_the_terminal_and_the_page_written_out(tmp_path, capsys) -> None:
    """Python holds a non-UTF-8 argument with lone surrogates; the writer writes them as ``\\udcff``."""
    lines = good()
    lines[0]["argv"] = ["train.py", "--data", "d\udcffta.csv"]
    lines[0]["host"] = "node\ud800"
    code, out, _ = report(tmp_path, lines, capsys)
    assert code == 0
    assert "train.py --data 'd\\udcffta.csv'" in out
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "d\\udcffta.csv" in page and "node\\ud800" in page


# --------------------------------------------------------------- impossible figures
def test_negative_figures_are_never_shown_as_figures(tmp_path, capsys) -> None:
    lines = good()
    lines[4]["metrics"] = {"energy/total_kwh": -5.0, "carbon/co2e_kg": -1.0, "energy/gpu_kwh": -5.0}
    lines[4].update(seconds=-3.0, mean_power_w=-360.0, j_per_sample=-12.0, stage_kwh={"val": -1.0})
    del lines[4]["carbon"]
    lines[0]["carbon"] = {"source": "FRA", "pue": 1.0}  # no intensity: "?", not 0
    lines.insert(1, {"type": "power_cap", "run": RUN, "caps": [{"gpu": 0, "cap_w": -150.0}]})
    code, out, _ = report(tmp_path, lines, capsys)
    assert code == 0
    for name in ("energy", "CO2e", "mean power", "time", "per sample", "of which not training", "power cap",
                 "by device"):  # fmt: skip
        assert cell(out, name) == "-", name
    assert cell(out, "g/kWh x PUE") == "? x 1.0"


def test_a_run_without_an_energy_figure_is_compared_with_no_other_grid(tmp_path, capsys) -> None:
    lines = good()
    for line in lines[1:]:
        line["metrics"].pop("energy/total_kwh", None)
    code, out, _ = report(tmp_path, lines, capsys)
    assert code == 0 and cell(out, "energy") == "-"
    assert "the same energy elsewhere" not in out  # it was a table of 0 mg on every grid
    assert "the same energy elsewhere" not in (tmp_path / "out" / "report.html").read_text()
    code, out, _ = report(tmp_path, good(), capsys)
    assert "the same energy elsewhere" in out


def test_an_energy_of_1e305_kwh_is_no_traceback_and_no_figure(tmp_path, capsys) -> None:
    lines = good()
    for line in lines[1:]:
        line["metrics"]["energy/total_kwh"] = 1e305
    lines.insert(4, {"type": "target", "run": RUN, "event": "reached", "step": 3, "metric": "acc",
                     "energy_kwh": 1e305, "value": 0.9})  # fmt: skip
    code, out, _ = report(tmp_path, lines, capsys)
    assert code == 0
    assert cell(out, "energy") == "-"
    assert cell(out, "energy to target") == "-"


def test_a_negative_elapsed_time_is_not_drawn_at_zero(tmp_path) -> None:
    lines = good()
    lines[4]["seconds"] = None  # the reader allows a null; the summary then has no time
    lines[2]["elapsed_s"] = -20.0
    run = Run.of(lines)
    curves = plots.series(run)
    assert curves["joules"] == pytest.approx([3600.0, 7200.0, 10800.0, 10800.0])
    assert curves["seconds"][0] == 10.0 and curves["seconds"][2] == 30.0
    assert math.isnan(curves["seconds"][1]) and math.isnan(curves["seconds"][3])  # not at 0 s
    assert [name for name, _ in plots.plot_runs([("r", run)])][:2] == ["energy_vs_step.png", "energy_vs_time.png"]


def test_power_of_windows_without_their_length_is_each_windows_own(tmp_path) -> None:
    lines = [header(), window(1, 0.001, 100.0), window(2, 0.002, 200.0), window(3, 0.003, 300.0)]
    for line in lines[1:]:
        del line["seconds"]
    assert plots.series(Run.of(lines))["watts"] == [100.0, 200.0, 300.0]


# --------------------------------------------------------------- memory, files, folders
def test_a_file_of_headers_alone_keeps_the_last_runs_only(tmp_path, capsys) -> None:
    count = 20_000
    path = write(tmp_path / "energy.jsonl", ['{"type": "header"}'] * count + [json.dumps(x) for x in good()])
    tracemalloc.start()
    try:
        runs, notes = read(path)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(runs) == MAX_RUNS and held < 5e6  # 40 MB before: 2 KB a run
    assert runs[-1].number == count and runs[0].number == count + 1 - MAX_RUNS
    assert runs[-1].kwh == 0.003
    assert notes == [f"the first {count + 1 - MAX_RUNS} runs are not reported: at most {MAX_RUNS} runs of a file "
                     "are, the last ones"]  # fmt: skip
    assert main([str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert f"energy#{count + 1}" in out and "energy#1 " not in out


def test_a_fifo_passed_to_the_reader_is_refused_not_waited_on(tmp_path) -> None:
    fifo = tmp_path / "energy.jsonl"
    os.mkfifo(fifo)
    code = f"""
from energy_core.output.record import read_runs
try:
    read_runs({str(fifo)!r})
except OSError as err:
    print("refused:", err.strerror)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).parents[3])  # fmt: skip
    assert done.stdout.strip() == "refused: not a regular file (a FIFO, a device or a socket)"


def test_with_umask_0_the_report_folder_made_is_still_ones_own(tmp_path, capsys) -> None:
    path = write(tmp_path / "energy.jsonl", good())
    old = os.umask(0)
    try:
        code = main([str(path)])
    finally:
        os.umask(old)
    assert code == 0, capsys.readouterr().err
    folder = tmp_path / "energy.report"
    assert (folder / "report.html").is_file()
    assert not folder.stat().st_mode & (stat.S_IWOTH | stat.S_IWGRP)


# --------------------------------------------------------------- damaged lines by the thousand
def test_a_file_of_damaged_lines_gives_a_few_notes_on_the_terminal_and_the_page(tmp_path, capsys, monkeypatch) -> None:
    # 100,000 lines "x" took 18 s and 140 MB: a note each, each printed, each in an 8 MB page.
    monkeypatch.setattr(plots, "plot_runs", lambda runs, notes=None: [])  # the notes, not the plots (half a second)
    stranger = json.dumps({**window(4, 0.004, 360.0), "run": "another0run0"})
    code, out, _ = report(tmp_path, [*good(), *["x"] * 5_000, *[stranger] * 500], capsys)
    assert code == 0 and cell(out, "energy") == "3 Wh"
    assert [x for x in out.splitlines() if x.startswith("note: ")] == [
        "note: energy.jsonl: line 6 is not JSON (a crash mid-write?): skipped",
        "note: energy.jsonl: line 7 is not JSON (a crash mid-write?): skipped",
        "note: energy.jsonl: line 8 is not JSON (a crash mid-write?): skipped",
        "note: energy.jsonl: 4,997 more lines skipped for the same reason as line 8, the last of them line 5005",
        "note: energy.jsonl: line 5006 belongs to a run whose header is not in this file: skipped",
        "note: energy.jsonl: line 5007 belongs to a run whose header is not in this file: skipped",
        "note: energy.jsonl: line 5008 belongs to a run whose header is not in this file: skipped",
        "note: energy.jsonl: 497 more lines skipped for the same reason as line 5008, the last of them line 5505",
    ]
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<li>") == 8 and "4,997 more lines skipped for the same reason as line 8" in page


# --------------------------------------------------------------- the same run at another hour
def hourly_series(path: Path, first: float, hours: int = 30) -> Series:
    """An intensity of 100 g/kWh in the hour that holds ``first``, 10 more each hour after."""
    start = first - first % 3600
    rows = "".join(f"{datetime.fromtimestamp(start + 3600 * h, timezone.utc).isoformat()},{100 + 10 * h}\n"
                   for h in range(hours))  # fmt: skip
    path.write_text("time,g\n" + rows)
    return Series(path, "--intensity-series", "g/kWh")


@pytest.mark.parametrize("value", [-1000.0, 1e300, 0.0, 0.5, 10.5])
def test_a_pue_that_cannot_be_one_gives_no_co2e_at_another_hour(tmp_path, value) -> None:
    # PUE -1000 gave "-51.8 g", 1e300 a figure of 300 digits, 0 was taken as 1.0.
    lines = good()
    for line in (lines[0], lines[4]):
        line["carbon"]["pue"] = value
    (run,), notes = read(write(tmp_path / "energy.jsonl", lines))
    assert notes == []  # a number: the reader keeps the line; the report checks the figure
    rows = when.started_at_other_hours(run, hourly_series(tmp_path / "g.csv", run.started or 0.0))
    assert len(rows) == 1 + when.HOURS and rows[0][0] == "as run, 2026-11-30 00:53 UTC"
    assert [row[1:] for row in rows] == [["-", "-"]] * (1 + when.HOURS)
    assert run_row("r", run)[4] == "56 x ?"  # the summary's column says the same


@pytest.mark.parametrize("carbon", [{"g_per_kwh": 56.0, "pue": 1.5}, {"g_per_kwh": 56.0}])
def test_a_pue_that_can_be_one_prices_every_hour(tmp_path, carbon) -> None:
    lines = good()
    lines[0]["carbon"] = carbon  # without a PUE: 1.0
    (run,), _ = read(write(tmp_path / "energy.jsonl", lines))
    rows = when.started_at_other_hours(run, hourly_series(tmp_path / "g.csv", run.started or 0.0))
    kwh_pue = 0.003 * carbon.get("pue", 1.0)
    assert rows[0][1] == show.mass(kwh_pue * 100 / 1000)  # 3 Wh in the first hour, at 100 g/kWh
    assert rows[3][1:] == [show.mass(kwh_pue * 120 / 1000), "+20%"]  # started two hours later: 120 g/kWh


# --------------------------------------------------------------- many runs in one plot
@pytest.mark.parametrize("count", [12, 20])
def test_every_run_of_many_has_its_own_look_and_a_whole_legend_entry(count) -> None:
    # Runs 0 and 10 were drawn alike (ten colours, one marker), and past some 15 runs the legend ran
    # past the figure's edge.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(f"runs/r{n:02d}", run, plots.series(run)) for n in range(count) for run in [Run.of(good())]]
    figure = plots._view(plt, data, "step", "joules", plots.STEP_AXIS, plots.ENERGY_AXIS, "Energy")
    try:
        figure.canvas.draw()
        curves = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("runs/")]
        assert len(curves) == count
        assert len({(line.get_color(), line.get_marker()) for line in curves}) == count
        legend = figure.axes[0].get_legend()
        assert [t.get_text() for t in legend.get_texts()][-1] == f"runs/r{count - 1:02d}, 2026-11-30 00:53 UTC"
        inside = figure.bbox.padded(1)  # (a pixel's rounding)
        box = legend.get_window_extent()
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    finally:
        plt.close(figure)
