"""energy-report: summaries of run records (complete, truncated, foreign), terminal widths,
directories, a damaged install, --help, and power-limit recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from energy_core import EnergyTracker
from energy_core.output import units_text as show
from energy_core.power import journal_path
from energy_core.report.cli import main
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import simulate
from tests.helpers import ROOT


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Content checks read whole cells: a wide console unless a test says otherwise."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.fixture(scope="module")
def written() -> str:
    """A run's record (one window at 200 W, half a second): written once by a real tracker."""
    with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory() as folder:
        simulate(monkeypatch, "nvml", [SimGpu("GPU-1", Constant(200.0))])
        path = Path(folder) / "energy.jsonl"
        tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="FRA", record_path=path)
        tracker.start_fit(0)
        tracker.add_batch(__import__("torch").ones(16, 4))
        time.sleep(0.5)
        tracker.window(1)
        tracker.end_fit(1)
        tracker.close()
        return path.read_text()


def write_record(path: Path, written: str) -> None:
    path.write_text(written)


def test_summary_of_a_complete_record(tmp_path, written, capsys) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, written)
    assert main([str(record)]) == 0
    out = capsys.readouterr().out
    summary = json.loads(record.read_text().splitlines()[-1])
    assert "completed" in out and f"│ {show.energy_kwh(summary['metrics']['energy/total_kwh'])} " in out
    assert "gpu 100.0%" in out and "France (FRA" in out and f"│ {show.energy(summary['j_per_sample'])} " in out


def test_truncated_record_is_reported_as_far_as_it_goes(tmp_path, written, capsys) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, written)
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])  # crashed while writing the summary
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())  # notes are wrapped to the terminal's width
    assert "INCOMPLETE" in out and "is not JSON" in out and "figures are those of its last window" in out


def test_missing_empty_and_foreign_files(tmp_path, capsys) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "foreign.jsonl").write_text('{"hello": 1}\nnot json\n')
    assert main([str(tmp_path / "nope.jsonl"), str(tmp_path / "empty.jsonl"), str(tmp_path / "foreign.jsonl")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and "no such file" in err[0] and "no run record" in err[1] and "no run record" in err[2]


@pytest.mark.parametrize("columns", [80, 100])
def test_console_follows_the_terminal_width(tmp_path, written, capsys, monkeypatch, columns: int) -> None:
    records = [tmp_path / "uncapped.jsonl", tmp_path / "capped.jsonl"]
    for record in records:
        write_record(record, written)
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.chdir(tmp_path)  # short relative paths: the last line prints the page's path whole
    assert main(["uncapped.jsonl", "capped.jsonl", "--out", "report"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= columns
    # the summary has one line per figure and one column per run, so each number stays whole
    summary = json.loads(records[1].read_text().splitlines()[-1])
    energy_line = next(line for line in lines if line.startswith("│ energy "))
    assert show.energy_kwh(summary["metrics"]["energy/total_kwh"]) in energy_line
    assert any(line.startswith("│ status") and line.count("completed") == 2 for line in lines)


def test_wide_terminal_keeps_cells_on_one_line(tmp_path, written, capsys, monkeypatch) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, written)
    monkeypatch.setenv("COLUMNS", "160")
    assert main([str(record)]) == 0
    lines = capsys.readouterr().out.splitlines()
    source = next(line for line in lines if "carbon factor source" in line)
    assert "codecarbon global_energy_mix.json: France (FRA" in source
    assert max(len(line) for line in lines[:-1]) <= 160


def test_a_directory_lists_the_records_to_pass(tmp_path, written, capsys) -> None:
    runs = tmp_path / "runs"
    (runs / "quickstart").mkdir(parents=True)
    write_record(runs / "quickstart" / "energy.jsonl", written)
    (tmp_path / "empty").mkdir()
    assert main([str(runs), str(tmp_path / "empty")]) == 1  # nothing was read
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"energy-report: {runs}: is a directory; pass its run records instead: {runs}/quickstart/energy.jsonl",
        f"energy-report: {tmp_path / 'empty'}: is a directory; no *.jsonl run record in it",
    ]
    # beside a readable record, a directory is skipped and the report is made
    assert main([str(runs), str(runs / "quickstart" / "energy.jsonl")]) == 0
    assert (runs / "quickstart" / "energy.report" / "report.html").is_file()


def test_many_records_in_a_directory_are_listed_briefly(tmp_path, capsys) -> None:
    for i in range(7):
        (tmp_path / f"run{i}.jsonl").write_text("")
    assert main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"{tmp_path}/run4.jsonl (and 2 more)" in err[0] and "run5" not in err[0]


def test_without_matplotlib_the_tables_print_and_one_line_says_why_no_plots(tmp_path, written) -> None:
    record = tmp_path / "energy.jsonl"
    write_record(record, written)
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from energy_core.report.cli import main\n"
        f"sys.exit(main([{str(record)!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stdout and "the same energy elsewhere" in done.stdout
    assert done.stderr.splitlines() == ["energy-report: no plots: matplotlib is missing (pip install matplotlib)"]
    page = (tmp_path / "energy.report" / "report.html").read_text()
    assert "No plots" in page and "data:image/png" not in page and "completed" in page


def test_help_is_plain_text_within_80_columns(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "energy-report RECORD [RECORD ...] [--out DIR]" in text
    assert "--restore-power-limits" in text and "a directory is" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_restore_power_limits_from_the_journal(sim_gpus, capsys) -> None:
    sim = sim_gpus(SimGpu("GPU-1", default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000))
    sim._store_limit(sim.gpus[0], 250_000)  # left behind by a killed run
    journal_path().parent.mkdir(parents=True, exist_ok=True)
    journal_path().write_text(
        json.dumps(
            {"GPU-1": {"previous_mw": 330_000, "set_mw": 250_000, "pid": 2**22 + 9, "host": os.uname().nodename}}
        )
    )
    assert main(["--restore-power-limits"]) == 0
    assert "Restored the power limit of GPU-1 to 330 W" in capsys.readouterr().out
    assert sim.limit_mw(sim.gpus[0]) == 330_000
    assert json.loads(journal_path().read_text()) == {}


def test_the_help_sends_no_control_character_to_the_terminal(capsys) -> None:
    # Its own text said control characters are written out, with a real ESC byte in the sentence.
    from energy_core.report.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "written out (\\x1b)" in out
    assert not [c for c in out if ord(c) < 32 and c not in "\n\t"]
