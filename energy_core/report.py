"""The ``energy-report`` command: summarise run records, restore power limits.

    energy-report RECORD [RECORD ...]        # a summary of each run in the records
    energy-report --restore-power-limits     # put back limits left by killed runs

Records that are missing, empty or foreign give a one-line error; a truncated record
(a crashed run) is summarised as far as it goes, with a note. The exit status is non-zero
only when nothing could be read. (Plots and the HTML page are not written yet.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from energy_core.tracker import J_PER_KWH


def read_runs(path: Path) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The runs in a record (each a list of lines, header first) and notes on what was wrong."""
    notes: list[str] = []
    runs: list[list[dict[str, Any]]] = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            notes.append(f"line {number} is not JSON (a crash mid-write?): skipped")
            continue
        if not isinstance(line, dict) or "type" not in line:
            notes.append(f"line {number} is not a run-record line: skipped")
            continue
        if line["type"] == "header":
            runs.append([line])
        elif runs:
            runs[-1].append(line)
    return runs, notes


def summarise(run: list[dict[str, Any]]) -> str:
    """A few lines on one run: energy, CO2e with its factor, power, work, devices."""
    header = run[0]
    summary = next((x for x in reversed(run) if x["type"] == "summary"), None)
    last = summary or next((x for x in reversed(run) if "metrics" in x), header)
    metrics = last.get("metrics", {})
    kwh = metrics.get("energy/total_kwh", 0.0)
    carbon = header.get("carbon", {})
    lines = [f"Run on {header.get('host', '?')} ({header.get('framework', '?')}), "
             + ("completed" if summary and summary.get("status") == "completed"
                else f"ended: {summary['status']}" if summary else "INCOMPLETE: no summary line (crashed or running)")]  # fmt: skip
    lines.append(f"  energy   {kwh:.6g} kWh ({kwh * J_PER_KWH:,.0f} J)")
    shares = {k.split("/")[1][:-4]: v for k, v in metrics.items()
              if k.startswith("energy/") and k.endswith("_kwh") and k.split("/")[1][:-4] in ("gpu", "cpu", "dram")}  # fmt: skip
    if kwh > 0 and shares:
        estimated = header.get("estimated", [])
        lines.append("  by device " + ", ".join(
            f"{kind} {100 * v / kwh:.1f}%" + (" (estimated)" if any(e.startswith(kind) for e in estimated) else "")
            for kind, v in shares.items()))  # fmt: skip
    lines.append(f"  CO2e     {metrics.get('carbon/co2e_kg', 0.0) * 1000:.4g} g at {carbon.get('g_per_kwh', '?')} g/kWh "
                 f"x PUE {carbon.get('pue', '?')} ({carbon.get('source', '?')})")  # fmt: skip
    if summary:
        if summary.get("mean_power_w") is not None:
            lines.append(f"  power    {summary['mean_power_w']:.1f} W mean over {summary['seconds']:.1f} s")
        if summary.get("j_per_sample") is not None:
            lines.append(f"  work     {summary['samples']:,} samples, {summary['j_per_sample']:.4g} J/sample"
                         + (f"; {summary['tokens']:,} tokens, {summary['j_per_token']:.4g} J/token"
                            if summary.get("j_per_token") is not None else ""))  # fmt: skip
    caps = [x for x in run if x["type"] == "power_cap"]
    if caps:
        lines.append("  power cap " + ", ".join(f"GPU {c['gpu']} {c['cap_w']:g} W" for c in caps[-1]["caps"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="energy-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("records", nargs="*", type=Path, help="run-record files (JSON lines)")
    parser.add_argument("--restore-power-limits", action="store_true",
                        help="restore GPU power limits left behind by killed runs (journal), then exit")  # fmt: skip
    args = parser.parse_args(argv)
    if args.restore_power_limits:
        from energy_core.power_cap import PowerLimits, journal_path

        import pynvml

        try:
            messages = PowerLimits().recover()
        except pynvml.NVMLError as err:
            print(f"energy-report: cannot reach NVML ({err}); nothing restored", file=sys.stderr)
            return 1
        print("\n".join(messages) or f"No power limits to restore (journal: {journal_path()}).")
        return 0
    if not args.records:
        parser.error("give at least one RECORD, or --restore-power-limits")
    readable = 0
    for path in args.records:
        if not path.is_file():
            print(f"energy-report: {path}: no such file", file=sys.stderr)
            continue
        runs, notes = read_runs(path)
        if not runs:
            print(f"energy-report: {path}: no run record in it (empty, or not written by energy-callbacks)",
                  file=sys.stderr)  # fmt: skip
            continue
        readable += 1
        print(f"== {path}")
        for run in runs:
            print(summarise(run))
        for note in notes:
            print(f"  note: {note}")
    return 0 if readable else 1


if __name__ == "__main__":
    raise SystemExit(main())
