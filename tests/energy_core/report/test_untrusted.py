"""energy-report on what another user could have written: damaged lines, escape sequences, planted links.

Records sit in shared folders and root reads them. Each test writes a real record (two runs
of real trackers appending to one file, on a simulated GPU), then damages it or the folder
beside it the way another user could (files and links handed to uid 65534 with ``chown``),
and runs ``energy-report`` in this process.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

from energy_core import EnergyTracker
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.report.cli import main
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import simulate
from tests.helpers.records import read_record

OTHER_UID = 65534  # nobody: the other user


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A world-writable sticky folder, like /tmp or a team's scratch space."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    return folder


@pytest.fixture(scope="module")
def written() -> str:
    """Two runs on one record file (a 200 W and a 300 W board), each with windows, a cap line and
    a summary: written once by real trackers, for every test of this file to damage a copy of."""
    with pytest.MonkeyPatch.context() as monkeypatch, tempfile.TemporaryDirectory() as folder:
        simulate(monkeypatch, "nvml", [SimGpu("GPU-1", Constant(200.0)), SimGpu("GPU-2", Constant(300.0))])
        path = Path(folder) / "energy.jsonl"
        for gpu in (0, 1):
            tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="FRA", record_path=path)
            tracker.meter.assign([gpu], node_devices=False)
            tracker.start_fit(0)
            tracker.write_record("power_cap", event="applied", caps=[{"gpu": gpu, "cap_w": 150.0}], table=None)
            for step in (1, 2):
                tracker.add_batch(torch.ones(8, 4))
                time.sleep(0.15)
                tracker.window(step, extra={"loss": 1.0 / step})
            tracker.end_fit(2)
            tracker.close()
        return path.read_text()


def two_runs(path: Path, written: str) -> list[dict]:
    """The two runs' record, at ``path``."""
    path.write_text(written)
    return read_record(path)


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines()


def replace_line(path: Path, number: int, text: str) -> None:
    lines = lines_of(path)
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def edited(line: str, change) -> str:
    entry = json.loads(line)
    change(entry)
    return json.dumps(entry)


def second_summary_line(path: Path) -> int:
    return max(i for i, line in enumerate(lines_of(path), 1) if '"type": "summary"' in line)


# (what is damaged, which line: "summary" = the second run's summary, or a line number; the new text)
CORRUPTIONS = {
    "nested 100,000 deep": ("summary", lambda line: "[" * 100_000 + "]" * 100_000),
    "a list as run id": ("summary", lambda line: edited(line, lambda e: e.update(run=["x"]))),
    "carbon as a string": ("summary", lambda line: edited(line, lambda e: e.update(carbon="lots"))),
    "metrics as a list": ("summary", lambda line: edited(line, lambda e: e.update(metrics=[1, 2]))),
    "cap_w as a string": ("cap", lambda line: edited(line, lambda e: e["caps"][0].update(cap_w="150"))),
    "mean_power_w as a string": ("summary", lambda line: edited(line, lambda e: e.update(mean_power_w="300"))),
    "a number of 400 digits": ("summary", lambda line: edited(line, lambda e: e.update(seconds=10**400))),
    "NaN, which JSON does not have": ("summary", lambda line: line.replace('"seconds": ', '"seconds": NaN, "x": ')),
    "a line of 2 MiB": ("summary", lambda line: line[:-1] + ', "pad": "' + "x" * (2 << 20) + '"}'),
    "half a line": ("summary", lambda line: line[: len(line) // 2]),
    "a JSON list": ("summary", lambda line: "[1, 2, 3]"),
}


# Each case writes a whole report (its plots take about half a second): most of them in the slow run (the
# reader's notes for every kind of damage are checked without plots in tests/energy_core/output/test_record.py).
SLOW_CORRUPTIONS = {"a line of 2 MiB", "nested 100,000 deep", "a number of 400 digits", "a list as run id",
                    "metrics as a list", "carbon as a string", "a JSON list", "cap_w as a string",
                    "mean_power_w as a string"}  # fmt: skip


@pytest.mark.parametrize(
    "damage", [pytest.param(d, marks=pytest.mark.slow) if d in SLOW_CORRUPTIONS else d for d in sorted(CORRUPTIONS)]
)
def test_a_damaged_line_is_named_and_every_good_run_is_reported(shared, written, capsys, damage) -> None:
    # 7 of these killed the whole report with a traceback (RecursionError, TypeError, ValueError).
    record = shared / "runs.jsonl"
    good = two_runs(record, written)
    where, change = CORRUPTIONS[damage]
    caps = [i for i, line in enumerate(lines_of(record), 1) if '"type": "power_cap"' in line]
    number = second_summary_line(record) if where == "summary" else caps[1]
    replace_line(record, number, change(lines_of(record)[number - 1]))
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    first_kwh = [x for x in good if x["type"] == "summary"][0]["metrics"][keys.TOTAL_KWH]
    assert f"│ {show.energy_kwh(first_kwh)} │" in out  # the first run, whole
    assert "shared/runs#2" in out  # the second run, as far as its good lines go
    assert f"runs.jsonl: line {number} " in out and "skipped" in out  # the bad line, named
    assert (shared / "runs.report" / "report.html").is_file()


def test_a_null_figure_is_shown_as_none(shared, written, capsys) -> None:
    record = shared / "runs.jsonl"
    two_runs(record, written)
    number = second_summary_line(record)  # co2e null: what the writer writes for a figure it cannot give
    replace_line(
        record, number, edited(lines_of(record)[number - 1], lambda e: e["metrics"].update({keys.CO2E_KG: None}))
    )
    assert main([str(record)]) == 0
    out = capsys.readouterr().out
    assert "note:" not in out and "completed" in out


def test_figures_that_cannot_be_true_are_dashes_and_names_are_drawn_as_written(shared, written, capsys) -> None:
    # A header time of 1e18 (or -1e15), a logged loss of 1e308, a name holding "$...$" (math markup to
    # matplotlib) each killed the whole report with a traceback; a mean power or a cost of 1e300 was shown as
    # a figure of 300 digits; a cost of 1.9e-05 EUR was shown in exponent notation.
    from PIL import Image

    record = shared / "runs.jsonl"
    two_runs(record, written)
    lines = [json.loads(line) for line in lines_of(record)]
    first, second = [line["run"] for line in lines if line["type"] == "header"]
    for line in lines:
        if line["type"] == "header" and line["run"] == second:
            line["time"] = 1e18
        if line["type"] == "window":
            line["extra"] = {"loss $\\foo$": 1e308 if line["run"] == second else 0.5 * line["step"]}
        if line["type"] == "summary":
            big = line["run"] == second
            line["cost"] = {"total": 1e300 if big else 1.9e-05, "currency": "EUR"}
            line["mean_power_w"] = 1e300 if big else 200.0
    record.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "│ cost │ 0.000019 EUR │ - │" in out and "│ mean power │ 200 W │ - │" in out
    assert "not drawn" not in out
    folder = shared / "runs.report"
    drawn = {path.name for path in folder.glob("*.png")}
    assert {"energy_vs_step.png", "loss_vs_kwh.png", "power_vs_time.png"} <= drawn
    text = Image.open(folder / "loss_vs_kwh.png").text["Description"]
    assert "loss (loss $\\foo$)" in text and "runs#2" not in text  # as written; the other run's cannot be true
    legend = Image.open(folder / "energy_vs_step.png").text["Description"].split("legend: ")[1]
    assert legend.endswith("shared/runs#2")  # its start cannot be true: no date


def test_a_view_that_cannot_be_drawn_is_named_and_the_rest_are_written(shared, written, capsys, monkeypatch) -> None:
    from energy_core.report import plots, targets

    def broken(*args):
        raise ValueError("cannot draw this")

    monkeypatch.setattr(plots, "_devices_plot", broken)
    record = shared / "runs.jsonl"
    two_runs(record, written)
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"note: {plots.DEVICES_PLOT[0]} not drawn: ValueError: cannot draw this" in out
    folder = shared / "runs.report"
    assert "energy_vs_step.png" in {path.name for path in folder.glob("*.png")}
    assert "cannot draw this" in (folder / "report.html").read_text()
    assert targets.METRIC_PLOT[0] not in out


def test_escape_sequences_in_a_record_never_reach_the_terminal_or_the_page(shared, written, capsys) -> None:
    record = shared / "runs.jsonl"
    two_runs(record, written)
    number = second_summary_line(record)
    hostile = "\x1b[2J\x1b]0;owned\x07\x9b31m\u202e"  # clear screen, window title, C1 CSI, right-to-left override

    def plant(entry: dict) -> None:
        entry["status"] = "completed" + hostile
        entry["carbon"]["source"] = "grid" + hostile

    replace_line(record, number, edited(lines_of(record)[number - 1], plant))
    assert main([str(record)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\x9b\u202e")
    assert "completed\\x1b[2J\\x1b]0;owned\\x07\\x9b31m\\u202e" in " ".join(out.split())  # shown, as text
    page = (shared / "runs.report" / "report.html").read_text()
    assert not any(c in page for c in "\x1b\x07\x9b\u202e") and "grid\\x1b[2J" in page


def test_an_existing_file_named_record_report_leads_to_a_fresh_folder(shared, written, capsys) -> None:
    record = shared / "runs.jsonl"
    two_runs(record, written)
    (shared / "runs.report").write_text("not a folder")  # gave FileExistsError
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    [fresh] = [p for p in shared.iterdir() if p.name.startswith("runs.report-")]
    assert (fresh / "report.html").is_file() and (fresh / "energy_vs_step.png").is_file()
    assert f"the report is in {fresh} instead" in out and (shared / "runs.report").read_text() == "not a folder"


def test_links_planted_in_another_users_report_folder_are_not_followed(shared, written, capsys, tmp_path) -> None:
    # Root's energy-report wrote through run.report/report.html -> /root/victim.txt (and a plot's name).
    record = shared / "runs.jsonl"
    two_runs(record, written)
    victims = [tmp_path / "victim.txt", tmp_path / "victim.png"]
    for victim in victims:
        victim.write_text("precious")
    planted = shared / "runs.report"
    planted.mkdir()
    (planted / "report.html").symlink_to(victims[0])
    (planted / "energy_vs_step.png").symlink_to(victims[1])
    for path in (planted, planted / "report.html", planted / "energy_vs_step.png"):
        os.lchown(path, OTHER_UID, OTHER_UID)
    assert main([str(record)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert [v.read_text() for v in victims] == ["precious", "precious"]
    assert f"owned by uid {OTHER_UID}, not you" in out
    [fresh] = [p for p in shared.iterdir() if p.name.startswith("runs.report-")]
    assert (fresh / "report.html").is_file() and not (fresh / "report.html").is_symlink()
    assert fresh.stat().st_uid == os.geteuid() and fresh.stat().st_mode & 0o077 == 0  # made by mkdtemp: 0700


def test_a_link_in_a_folder_of_ones_own_is_refused_not_followed(shared, written, capsys, tmp_path) -> None:
    record = shared / "runs.jsonl"
    two_runs(record, written)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    mine = shared / "runs.report"
    mine.mkdir(mode=0o755)
    (mine / "report.html").symlink_to(victim)
    assert main([str(record)]) == 2  # the page could not be written
    err = " ".join(capsys.readouterr().err.split())
    assert "report.html in" in err and "a link is not followed" in err and victim.read_text() == "precious"
    assert (mine / "energy_vs_step.png").is_file()  # the other files are written


@pytest.mark.parametrize("owner", ["another user", "writable by others"])
def test_out_must_be_a_folder_of_ones_own(shared, written, capsys, owner) -> None:
    record = shared / "runs.jsonl"
    two_runs(record, written)
    out_dir = shared / "out"
    out_dir.mkdir()
    if owner == "another user":
        os.chown(out_dir, OTHER_UID, OTHER_UID)
    else:
        out_dir.chmod(0o777)
    assert main([str(record), "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err
    assert "is not a folder of yours alone" in err and "nothing written" in err and list(out_dir.iterdir()) == []


def group_writable_folder(shared: Path, written: str) -> tuple[Path, Path]:
    """The two runs' record, and a folder of one's own that one's own group may write to."""
    record = shared / "runs.jsonl"
    two_runs(record, written)
    out_dir = shared / "out"
    out_dir.mkdir()
    os.chown(out_dir, os.geteuid(), os.getegid())
    out_dir.chmod(0o775)
    return record, out_dir


def test_a_folder_writable_by_ones_own_group_is_ones_own(shared, written) -> None:
    # (umask 002 with a group per user: every folder a user makes is group-writable)
    record, out_dir = group_writable_folder(shared, written)
    assert main([str(record), "--out", str(out_dir)]) == 0
    assert (out_dir / "report.html").is_file()


def test_a_file_another_user_left_in_ones_folder_is_replaced_not_rewritten(shared, written) -> None:
    # A member of one's group left report.html in one's folder: the report rewrote it in place, and the page
    # (with its script) stayed that user's to edit after the fact.
    record, out_dir = group_writable_folder(shared, written)
    planted = out_dir / "report.html"
    planted.write_text("their notes")
    os.chown(planted, OTHER_UID, OTHER_UID)
    assert main([str(record), "--out", str(out_dir)]) == 0
    page = out_dir / "report.html"
    assert page.stat().st_uid == os.geteuid() and "Energy report" in page.read_text()
    assert sorted(p.name for p in out_dir.iterdir() if p.name.startswith(".")) == []  # no fresh file left over


def test_a_fifo_given_as_a_record_is_not_read(shared, capsys) -> None:
    fifo = shared / "runs.jsonl"
    os.mkfifo(fifo)
    assert main([str(fifo)]) == 1  # not opened: reading a FIFO would wait for a writer for ever
    assert "not a regular file" in capsys.readouterr().err


@pytest.fixture
def private_record(tmp_path: Path, written: str) -> Path:
    """A record of one's own in a private folder, its command line holding a key."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    record = folder / "energy.jsonl"
    record.write_text(written.replace('"argv": [', '"argv": ["--api-key=SECRET123", ', 2))
    assert record.read_text().count("SECRET123") == 2
    return record


def test_a_record_given_as_a_link_is_refused_and_nothing_read_from_it(shared, private_record, capsys) -> None:
    # shared/energy.jsonl -> a private record: it was read, and its report (the key in it) written beside the link.
    link = shared / "energy.jsonl"
    link.symlink_to(private_record)
    os.lchown(link, OTHER_UID, OTHER_UID)
    assert main([str(link)]) == 1  # nothing read
    out, err = capsys.readouterr()
    assert err == f"energy-report: {link}: it is a symbolic link, which is not followed; nothing read from it\n"
    assert "SECRET123" not in out and sorted(p.name for p in shared.iterdir()) == ["energy.jsonl"]


def test_links_in_a_folder_given_are_not_offered_as_records(shared, written, private_record, capsys) -> None:
    runs = shared / "runs"
    runs.mkdir()
    (runs / "a.jsonl").write_text(written)
    (runs / "b.jsonl").symlink_to(private_record)  # a link to a record: left out, counted
    (runs / "c").symlink_to(private_record.parent, target_is_directory=True)  # a link to a folder: not entered
    assert main([str(runs)]) == 1
    assert capsys.readouterr().err == (
        f"energy-report: {runs}: is a directory; pass its run records instead: {runs}/a.jsonl; 1 symbolic link "
        "left out (not followed)\n"
    )
