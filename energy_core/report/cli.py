"""energy-report: summarise and compare run records, restore GPU power limits.

  energy-report RECORD [RECORD ...] [--out DIR]
      one summary per run, PNG plots and one HTML page (report.html)
  energy-report --restore-power-limits
      put back the GPU power limits left behind by killed runs

For each run: its energy, CO2e with its factor and source, mean power, time,
energy per sample and per token, share by device, validation energy, what is
estimated (and how far off it can be) and what is not counted, the energy to
its target (when a target was set); where, when and how it ran (start, host,
command, CPU, GPUs, software); and what the same energy would emit on other
grids (codecarbon's data) at hyperscale and average PUE. Every figure is in the
unit that fits (J, Wh, kWh; mg, g, kg). Plots: energy and power against step
and against time, CO2e against time, energy by device, loss against energy
where loss was logged, the monitored metric against energy where a target
watched it; epoch ends marked; several runs are drawn together, so setups can
be compared. The HTML page holds the tables and the plots (self-contained).
Tables follow the terminal's width (or COLUMNS).

A RECORD is a JSON-lines file written with record_path=...; a directory is
not read: its *.jsonl files are listed, to pass them instead. A missing, empty
or foreign file gives a one-line error; a truncated record (a crashed run) is
reported as far as it goes, and a damaged line is skipped with a note naming
it (the first three of each kind; the others are counted in one more note).
Files are read one line at a time. A RECORD that is a symbolic link is not
read (one line says so). Text from the records is shown with its control
characters written out (\\x1b), never sent to the terminal as is. The plots
and the page go to RECORD.report/ beside the first record when that is a
folder of yours alone (made if missing), else to a fresh folder, which a note
names; no link is followed. The exit status is non-zero when nothing could be
read or written.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from energy_core.devices import DEVICE_KINDS
from energy_core.notices import printable
from energy_core.output import keys
from energy_core.output import units_text as show
from energy_core.output.summary import ESTIMATES, GUIDE, STAGE_NAMES, estimate_mark
from energy_core.report import targets
from energy_core.report.folder import FolderError, ReportFolder
from energy_core.report.runs import Run, amount, bound_of, pue, utc
from energy_core.report.runs import read as read_record
from energy_core.units import MAX_CO2E_KG, MAX_COST, MAX_G_PER_KWH, MAX_JOULES, MAX_KWH, MAX_RUN_W, MAX_SECONDS

SUMMARY_HEAD = [
    "run",
    "status",
    "energy",
    "CO2e",
    "g/kWh x PUE",
    "cost",
    "mean power",
    "time",
    "per sample",
    "per token",
    "by device",
    "of which not training",
    "estimated",
    "not counted",
    "power cap",
    "energy to target",
    "carbon factor source",
    "energy bound",
]
CONTEXT_HEAD = ["run", "started", "host", "command", "CPU", "GPUs", "devices measured", "framework", "software"]


def run_row(label: str, run: Run) -> list[str]:
    """One run's column of the summary (`SUMMARY_HEAD`): every figure in the unit that fits."""
    header, summary, metrics = run.header, run.summary or {}, run.metrics
    kwh, total = run.kwh, amount(metrics, keys.TOTAL_KWH, MAX_KWH)
    carbon = {**(header.get("carbon") or {}), **(summary.get("carbon") or {})}  # the run's mean intensity
    cost = summary.get("cost") or {}
    status = str(summary.get("status", "?")) if run.summary else "INCOMPLETE (no summary: crashed or running)"
    estimated = run.estimated_kinds
    shares = []
    for kind in DEVICE_KINDS:
        value = amount(metrics, keys.kind_kwh(kind), MAX_KWH)
        if value is not None and kwh > 0:
            mark = " (estimated)" if kind in estimated else ""
            shares.append(f"{kind} {100 * value / kwh:.1f}%{mark}")
    cap = ", ".join(f"GPU {_gpu(c)} {c['cap_w']:g} W" for c in run.caps if amount(c, "cap_w") is not None)

    def shown(values: dict[str, Any], key: str, how: Callable[[float], str], most: float = math.inf) -> str:
        value = amount(values, key, most)  # a negative figure is damage, never shown
        return how(value) if value is not None else "-"

    stage_kwh = summary.get("stage_kwh") if isinstance(summary.get("stage_kwh"), dict) else {}
    stages = [(name, amount(stage_kwh, stage, MAX_KWH) or amount(metrics, keys.stage_kwh(stage), MAX_KWH))
              for stage, name in STAGE_NAMES.items()]  # fmt: skip
    g_per_kwh, run_pue = amount(carbon, "g_per_kwh", MAX_G_PER_KWH), pue(carbon)
    kinds_measured = [k for k in DEVICE_KINDS if amount(metrics, keys.kind_kwh(k), MAX_KWH) is not None]
    total_mark = estimate_mark(kinds_measured, estimated)
    return [
        label,
        status,
        show.energy_kwh(total) + total_mark if total is not None else "-",
        shown(metrics, keys.CO2E_KG, show.mass, MAX_CO2E_KG),
        f"{'?' if g_per_kwh is None else f'{g_per_kwh:.4g}'} x {'?' if run_pue is None else run_pue}",
        shown(cost, "total", lambda total: show.money(total, printable(str(cost.get("currency") or ""))), MAX_COST),
        shown(summary, "mean_power_w", show.power, MAX_RUN_W),
        shown(summary, "seconds", show.duration, MAX_SECONDS),
        shown(summary, "j_per_sample", show.energy, MAX_JOULES),
        shown(summary, "j_per_token", show.energy, MAX_JOULES),
        ", ".join(shares) or "-",
        ", ".join(f"{name} {show.energy_kwh(value)}" for name, value in stages if value) or "-",
        "; ".join(f"{kind}: {ESTIMATES.get(kind, 'a model, not a reading')} ({GUIDE})" for kind in estimated) or "-",
        "; ".join(f"{kind} ({why})" for kind, why in run.not_counted.items()) or "-",
        cap or "-",
        targets.energy_to_target(run),
        str(carbon.get("source", "?")),
        bound(kwh, bound_of(metrics, keys.TOTAL_KWH)),
    ]


def context_row(label: str, run: Run) -> list[str]:
    """One run's column of the context (`CONTEXT_HEAD`): when, where and how it ran, from its header."""
    header = run.header
    hardware = _mapping(header.get("hardware"))
    listed = hardware.get("sources")
    sources = [s for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
    gpus = [f"{s.get('name', '?')}: {s.get('detail') or '?'}" for s in sources if s.get("kind") == "gpu"]
    drivers = _mapping(hardware.get("drivers"))
    measured = [f"{s.get('name', '?')} ({s.get('method', '?')}{', estimated' if s.get('estimated') is True else ''})"
                for s in sources]  # fmt: skip
    argv = header.get("argv")
    command = shlex.join(str(a) for a in argv) if isinstance(argv, list) else "?"
    software = _mapping(header.get("software"))
    framework = str(header.get("framework") or "?")
    settings = next((_mapping(header[k]) for k in ("trainer", "args", "loop") if isinstance(header.get(k), dict)), {})
    started = run.started
    return [
        label,
        utc(started) if started is not None else "?",
        f"{header.get('host', '?')} ({header.get('platform', '?')})",
        command,
        f"{hardware.get('cpu', '?')} x {hardware.get('cpu_sockets', '?')} socket(s)",
        "; ".join(gpus) + (f" (driver {', '.join(f'{k} {v}' for k, v in drivers.items())})" if drivers else "")
        if gpus
        else "none measured",
        ", ".join(measured) or "none",
        framework + (": " + ", ".join(f"{k}={v}" for k, v in settings.items()) if settings else ""),
        ", ".join(f"{k} {v}" for k, v in software.items()) or "?",
    ]


def _gpu(cap: dict[str, Any]) -> str:
    """How a capped GPU is named: its index, or its UUID where the process that capped it did not see
    it (another rank's board, capped by the node's leader: ``"gpu": null``)."""
    gpu = cap.get("gpu")
    return str(gpu) if gpu is not None else str(cap.get("uuid") or "?")


def _mapping(value: Any) -> dict[str, Any]:
    """A header's object, or an empty one where the record holds something else."""
    return value if isinstance(value, dict) else {}


def bound(kwh: float, kwh_err: float | None) -> str:
    """``± 0.3 % (3.7 Wh)``: the total's bound, as a share and in the unit that fits; "-" where the
    record has none."""
    if kwh_err is None:
        return "-"
    return f"{show.share(kwh, kwh_err) or '±'} ({show.energy_kwh(kwh_err)})"


def console() -> Console:
    """A console as wide as the terminal (rich reads COLUMNS, else the terminal's size, else 80).

    Text from the records (labels, sources, notes) is printed as characters: no markup, no
    emoji codes, control characters written out (`say`, `printable`).
    """
    return Console(highlight=False, markup=False, emoji=False)


def say(text: str, error: bool = False) -> None:
    """One line for the user (on stderr with ``error``), its control characters written out."""
    print(printable(text), file=sys.stderr if error else sys.stdout)


def print_runs(head: list[str], rows: list[list[str]], title: str) -> None:
    """The run summaries, one column per run and one line per figure, so any width holds them."""
    table = Table()
    table.add_column(head[0], overflow="fold", style="bold")
    for row in rows:
        table.add_column(printable(row[0]), overflow="fold")
    for i, field in enumerate(head[1:], start=1):
        table.add_row(field, *(printable(row[i]) for row in rows))
    out = console()
    out.print(title)
    out.print(table)


def print_table(head: list[str], rows: list[list[str]], title: str, right: int = 1) -> None:
    """A table with text columns left-aligned and the columns from ``right`` on right-aligned."""
    table = Table()
    for i, h in enumerate(head):
        table.add_column(h, overflow="fold", justify="right" if i >= right else "left")
    for row in rows:
        table.add_row(*map(printable, row))
    out = console()
    out.print(printable(title))
    out.print(table)


def directory_hint(path: Path, shown: int = 5) -> str:
    """What to pass instead of a directory: the run records under it, if any (a link among them is
    left out and counted: it would be refused)."""
    found, links = [], 0
    for record in sorted(path.rglob("*.jsonl")):  # (a link to a folder is not entered)
        if record.is_symlink():
            links += 1  # refused if passed: not listed
        else:
            found.append(record)
    left = f"; {links} symbolic link{'s' if links > 1 else ''} left out (not followed)" if links else ""
    if not found:
        return "no *.jsonl run record in it" + left
    names = " ".join(shlex.quote(str(p)) for p in found[:shown])
    more = f" (and {len(found) - shown} more)" if len(found) > shown else ""
    return f"pass its run records instead: {names}{more}{left}"


def report(paths: list[Path], out_dir: Path | None, intensity_series: Path | None = None) -> int:
    """Summarise, plot and compare the runs in ``paths``; returns the exit status.

    With ``intensity_series`` (a recorded series, as for ``carbon_intensity_series``), each
    run is also priced as if it had started at each hour of that series.
    """
    from energy_core.carbon.factor import Series
    from energy_core.report import plots, when

    try:
        series = Series(intensity_series, "--intensity-series", "g/kWh") if intensity_series else None
    except ValueError as err:
        say(f"energy-report: {err}", error=True)
        return 2

    runs: list[tuple[str, Run]] = []
    read: list[Path] = []
    notes: list[str] = []
    for path in paths:
        if path.is_symlink():  # another user's link to a record of yours would put its text in the report
            say(
                f"energy-report: {path}: it is a symbolic link, which is not followed; nothing read from it", error=True
            )
            continue
        if path.is_dir():
            say(f"energy-report: {path}: is a directory; {directory_hint(path)}", error=True)
            continue
        if not path.is_file():
            what = "not a regular file" if path.exists() else "no such file"
            say(f"energy-report: {path}: {what}", error=True)
            continue
        try:
            found, file_notes = read_record(path)
        except OSError as err:
            say(f"energy-report: {path}: cannot be read ({err.strerror})", error=True)
            continue
        if not found:
            say(f"energy-report: {path}: no run record in it (empty, or not written by energy-callbacks)", error=True)
            continue
        read.append(path)
        notes += [f"{path.name}: {n}" for n in file_notes]
        for run in found:
            name = f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
            runs.append((name if len(found) == 1 and run.number == 0 else f"{name}#{run.number + 1}", run))
    if not runs:
        return 1
    try:
        folder, moved = (ReportFolder.given(out_dir), None) if out_dir else ReportFolder.beside(read[0])
    except FolderError as err:
        say(f"energy-report: --out {err}; nothing written", error=True)
        return 2
    notes += [moved] if moved else []
    rows, context, elsewhere = [], [], []
    for label, run in runs:
        row = run_row(label, run)
        rows.append(row)
        context.append(context_row(label, run))
        if run.kwh > 0:  # no energy figure: no CO2e to compare (not 0 mg everywhere)
            elsewhere.append((label, plots.elsewhere_rows(run.kwh)))
        if row[1].startswith("INCOMPLETE"):
            notes.append(f"{label}: the record has no summary line; figures are those of its last window")
    print_runs(SUMMARY_HEAD, rows, "Energy report")
    print_runs(CONTEXT_HEAD, context, "How and where each run ran")
    for label, table in elsewhere:
        print_table(plots.ELSEWHERE_HEAD, table, f"{label}: the same energy elsewhere (CO2e)")
    other_hours = []
    for label, run in runs if series is not None else []:
        table = when.started_at_other_hours(run, series)  # type: ignore[arg-type]  # series is set here
        if table:
            other_hours.append((label, table))
            print_table(when.WHAT_IF_HEAD, table, f"{label}: the same run started at another hour")
    if other_hours:
        notes.append(
            f"started at another hour: the runs' energy slices moved in time and priced on {intensity_series} "
            "(each slice at its midpoint's intensity; beyond the series' ends, its end values)"
        )
    try:
        images = plots.plot_runs(runs, notes)
    except ImportError as err:  # matplotlib is a dependency; this is a damaged install
        say(f"energy-report: no plots: {err.name or 'matplotlib'} is missing (pip install matplotlib)", error=True)
        images = []
    out = console()
    for note in notes:
        out.print(printable(f"note: {note}"))
    page = plots.write_html((SUMMARY_HEAD, rows), (CONTEXT_HEAD, context), elsewhere, images, notes, other_hours)
    written = 0
    try:
        for name, data in [*images, ("report.html", page.encode("utf-8"))]:
            try:
                folder.write(name, data)
                written += 1
            except FolderError as err:
                say(f"energy-report: {err}", error=True)
    finally:
        folder.close()
    say(f"plots and page: {folder.path / 'report.html'}")
    return 0 if written == len(images) + 1 else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="energy-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("records", nargs="*", type=Path, help="run-record files (JSON lines)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the PNG plots and report.html, made if missing; it must be yours alone (default: "
        "RECORD.report/ beside the first record read, or a fresh folder when that is not yours)",
    )
    parser.add_argument(
        "--intensity-series",
        type=Path,
        default=None,
        metavar="CSV",
        help="a recorded grid-intensity series (timestamp with UTC offset, g/kWh): price each run as if "
        "started at each hour of it",
    )
    parser.add_argument(
        "--restore-power-limits",
        action="store_true",
        help="restore GPU power limits left behind by this user's killed runs (from their journal), then exit",
    )
    args = parser.parse_args(argv)
    if args.restore_power_limits:
        from energy_core.devices import DeviceError
        from energy_core.power import JournalError, PowerLimits

        limits = PowerLimits()
        try:
            messages = limits.recover()
        except JournalError as err:
            print(f"energy-report: {err} Nothing restored.", file=sys.stderr)
            return 1
        except DeviceError as err:
            print(f"energy-report: cannot reach the GPU driver ({err}); nothing restored", file=sys.stderr)
            return 1
        print("\n".join(messages) or f"No power limits to restore (journal: {limits.journal.path}).")
        return 0
    if not args.records:
        parser.error("give at least one RECORD, or --restore-power-limits")
    return report(args.records, args.out, args.intensity_series)


if __name__ == "__main__":
    raise SystemExit(main())
