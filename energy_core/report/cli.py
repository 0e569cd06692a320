"""energy-report: summarise and compare run records, restore GPU power limits.

  energy-report RECORD [RECORD ...] [--out DIR]
      one summary per run, PNG plots and one HTML page (report.html)
  energy-report --restore-power-limits
      put back the GPU power limits left behind by killed runs

For each run: total kWh, CO2e with its factor and source, mean power, J per
sample and per token, time, share by device, the energy to its target (when a
target was set), and what the same energy would emit on other grids
(codecarbon's data) at hyperscale and average PUE. Plots: energy and power
against step and against time, loss against kWh where loss was logged, the
monitored metric against kWh where a target watched it; several runs are
drawn together, so setups can be compared. The
HTML page holds the tables and the plots (self-contained). Tables follow the
terminal's width (or COLUMNS).

A RECORD is a JSON-lines file written with record_path=...; a directory is
not read: its *.jsonl files are listed, to pass them instead. A missing, empty
or foreign file gives a one-line error; a truncated record (a crashed run) is
reported as far as it goes, with a note. The exit status is non-zero only when
nothing could be read.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from energy_core.devices import DEVICE_KINDS
from energy_core.output import keys
from energy_core.output.record import POWER_CAP, SUMMARY, read_runs
from energy_core.report import targets

SUMMARY_HEAD = [
    "run",
    "status",
    "kWh",
    "CO2e (g)",
    "g/kWh x PUE",
    "cost",
    "mean W",
    "time (s)",
    "J/sample",
    "J/token",
    "by device",
    "power cap",
    "energy to target",
    "carbon factor source",
]


def run_row(label: str, run: list[dict[str, Any]]) -> tuple[list[str], float]:
    """One table row for a run, and its total kWh."""
    header = run[0]
    summary = next((x for x in reversed(run) if x["type"] == SUMMARY), None)
    last = summary or next((x for x in reversed(run) if "metrics" in x), header)
    metrics = last.get("metrics", {})
    kwh = metrics.get(keys.TOTAL_KWH, 0.0)
    carbon = {**header.get("carbon", {}), **((summary or {}).get("carbon") or {})}  # the run's mean intensity
    cost = (summary or {}).get("cost") or {}
    status = summary.get("status", "?") if summary else "INCOMPLETE (no summary: crashed or running)"
    estimated = header.get("estimated", [])
    shares = []
    for kind in DEVICE_KINDS:
        value = metrics.get(keys.kind_kwh(kind))
        if value is not None and kwh > 0:
            mark = " (estimated)" if any(e.startswith(kind) for e in estimated) else ""
            shares.append(f"{kind} {100 * value / kwh:.1f}%{mark}")
    caps = [x for x in run if x["type"] == POWER_CAP]
    cap = ", ".join(f"GPU {c['gpu']} {c['cap_w']:g} W" for c in caps[-1]["caps"]) if caps else "-"

    def number(key: str, fmt: str) -> str:
        value = summary.get(key) if summary else None
        return format(value, fmt) if value is not None else "-"

    row = [
        label,
        status,
        f"{kwh:.6g}",
        f"{metrics.get(keys.CO2E_KG, 0.0) * 1000:.4g}",
        f"{carbon.get('g_per_kwh', 0):.4g} x {carbon.get('pue', '?')}",
        f"{cost['total']:.4g} {cost.get('currency', '')}".strip() if "total" in cost else "-",
        number("mean_power_w", ".1f"),
        number("seconds", ".1f"),
        number("j_per_sample", ".4g"),
        number("j_per_token", ".4g"),
        ", ".join(shares) or "-",
        cap,
        targets.energy_to_target(run),
        str(carbon.get("source", "?")),
    ]
    return row, kwh


def console() -> Console:
    """A console as wide as the terminal (rich reads COLUMNS, else the terminal's size, else 80).

    Text from the records (labels, sources, notes) is printed as it is: no markup, no emoji codes.
    """
    return Console(highlight=False, markup=False, emoji=False)


def print_runs(head: list[str], rows: list[list[str]], title: str) -> None:
    """The run summaries, one column per run and one line per figure, so any width holds them."""
    table = Table()
    table.add_column(head[0], overflow="fold", style="bold")
    for row in rows:
        table.add_column(row[0], overflow="fold")
    for i, field in enumerate(head[1:], start=1):
        table.add_row(field, *(row[i] for row in rows))
    out = console()
    out.print(title)
    out.print(table)


def print_table(head: list[str], rows: list[list[str]], title: str, right: int = 1) -> None:
    """A table with text columns left-aligned and the columns from ``right`` on right-aligned."""
    table = Table()
    for i, h in enumerate(head):
        table.add_column(h, overflow="fold", justify="right" if i >= right else "left")
    for row in rows:
        table.add_row(*row)
    out = console()
    out.print(title)
    out.print(table)


def directory_hint(path: Path, shown: int = 5) -> str:
    """What to pass instead of a directory: the run records under it, if any."""
    found = sorted(path.rglob("*.jsonl"))
    if not found:
        return "no *.jsonl run record in it"
    names = " ".join(shlex.quote(str(p)) for p in found[:shown])
    more = f" (and {len(found) - shown} more)" if len(found) > shown else ""
    return f"pass its run records instead: {names}{more}"


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
        print(f"energy-report: {err}", file=sys.stderr)
        return 2

    runs: list[tuple[str, list[dict[str, Any]]]] = []
    read: list[Path] = []
    notes: list[str] = []
    for path in paths:
        if path.is_dir():
            print(f"energy-report: {path}: is a directory; {directory_hint(path)}", file=sys.stderr)
            continue
        if not path.is_file():
            print(f"energy-report: {path}: no such file", file=sys.stderr)
            continue
        found, file_notes = read_runs(path)
        if not found:
            print(
                f"energy-report: {path}: no run record in it (empty, or not written by energy-callbacks)",
                file=sys.stderr,
            )
            continue
        read.append(path)
        notes += [f"{path.name}: {n}" for n in file_notes]
        for i, run in enumerate(found):
            name = f"{path.parent.name}/{path.stem}" if path.parent.name else path.stem
            runs.append((name if len(found) == 1 else f"{name}#{i + 1}", run))
    if not runs:
        return 1
    rows, elsewhere = [], []
    for label, run in runs:
        row, kwh = run_row(label, run)
        rows.append(row)
        elsewhere.append((label, plots.elsewhere_rows(kwh)))
        if row[1].startswith("INCOMPLETE"):
            notes.append(f"{label}: the record has no summary line; figures are those of its last window")
    print_runs(SUMMARY_HEAD, rows, "Energy report")
    for label, table in elsewhere:
        print_table(["grid", "g/kWh", *plots.PUES], table, f"{label}: the same energy elsewhere (g CO2e)")
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
    for note in notes:
        console().print(f"note: {note}")
    out_dir = out_dir or read[0].with_suffix(".report")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        images = plots.plot_runs(runs, out_dir)
    except ImportError as err:  # matplotlib is a dependency; this is a damaged install
        print(
            f"energy-report: no plots: {err.name or 'matplotlib'} is missing (pip install matplotlib)", file=sys.stderr
        )
        images = []
    page = out_dir / "report.html"
    plots.write_html(page, SUMMARY_HEAD, rows, elsewhere, images, notes, other_hours)
    print(f"plots and page: {page}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="energy-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("records", nargs="*", type=Path, help="run-record files (JSON lines)")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for the PNG plots and report.html (default: RECORD.report/ beside the first record read)",
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
