"""Plots and the self-contained HTML page of ``energy-report`` (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from energy_core import keys
from energy_core.carbon import CarbonIntensity, co2e_kg, country_intensity, region_intensity, world_average
from energy_core.record import WINDOW

OTHER_GRIDS = (
    ("FRA", None),
    ("SWE", "SE3"),
    ("DEU", None),
    ("USA", "CA"),
    ("USA", "WV"),
    ("CHN", None),
    ("IND", None),
    ("AUS", None),
)
PUES = {"hyperscale (1.1)": 1.1, "industry average (1.58)": 1.58}


def other_grids() -> list[tuple[str, CarbonIntensity]]:
    """A few contrasting grids from codecarbon's data, and the world average."""
    grids = []
    for country, region in OTHER_GRIDS:
        intensity = region_intensity(country, region) if region else country_intensity(country)
        grids.append((f"{country}/{region}" if region else country, intensity))
    return [*grids, ("world", world_average())]


def elsewhere_rows(kwh: float) -> list[list[str]]:
    """What ``kwh`` would emit on other grids, at each typical PUE (grams CO2e)."""
    return [
        [
            name,
            f"{intensity.g_per_kwh:.0f}",
            *(f"{co2e_kg(kwh, pue, intensity.g_per_kwh) * 1000:.4g}" for pue in PUES.values()),
        ]
        for name, intensity in other_grids()
    ]


def series(run: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Step, seconds, kWh, W and loss from a run's window lines."""
    out: dict[str, list[float]] = {"step": [], "seconds": [], "kwh": [], "watts": [], "loss_kwh": [], "loss": []}
    for line in run:
        if line.get("type") != WINDOW:
            continue
        metrics = line.get("metrics", {})
        if keys.TOTAL_KWH not in metrics:
            continue
        out["step"].append(line.get("step", 0))
        out["seconds"].append(line.get("elapsed_s", 0.0))
        out["kwh"].append(metrics[keys.TOTAL_KWH])
        out["watts"].append(metrics.get(keys.TOTAL_W, float("nan")))
        losses = [v for k, v in (line.get("extra") or {}).items() if "loss" in k and v is not None]
        if losses:
            out["loss_kwh"].append(metrics[keys.TOTAL_KWH])
            out["loss"].append(losses[0])
    return out


def plot_runs(runs: list[tuple[str, list[dict[str, Any]]]], out_dir: Path) -> list[Path]:
    """One PNG per view, every run drawn in it; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    views = [
        ("energy_vs_step.png", "step", "kwh", "optimizer step", "energy (kWh)"),
        ("energy_vs_time.png", "seconds", "kwh", "training time (s)", "energy (kWh)"),
        ("power_vs_step.png", "step", "watts", "optimizer step", "mean power over the window (W)"),
        ("power_vs_time.png", "seconds", "watts", "training time (s)", "mean power over the window (W)"),
        ("loss_vs_kwh.png", "loss_kwh", "loss", "energy (kWh)", "loss"),
    ]
    data = [(label, series(run)) for label, run in runs]
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, x, y, x_label, y_label in views:
        drawn = [(label, s) for label, s in data if s[x] and s[y]]
        if not drawn:
            continue
        figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=100)
        for label, s in drawn:
            axes.plot(s[x], s[y], marker=".", label=label)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(alpha=0.3)
        if len(drawn) > 1:
            axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(out_dir / name)
        plt.close(figure)
        written.append(out_dir / name)
    return written


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def write_html(
    path: Path,
    summary_head: list[str],
    summary_rows: list[list[str]],
    elsewhere: list[tuple[str, list[list[str]]]],
    plots: list[Path],
    notes: list[str],
) -> None:
    """A self-contained page: tables, the plots inlined as data URIs, notes."""
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        f"<figcaption>{p.stem.replace('_', ' ')}</figcaption></figure>"
        for p in plots
    )
    regions = "".join(
        f"<h3>{html.escape(label)}: the same energy elsewhere (g CO2e)</h3>" + _table(["grid", "g/kWh", *PUES], rows)
        for label, rows in elsewhere
    )
    note_items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>energy-report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:70em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:right}}figure{{display:inline-block;margin:.5em}}</style>
</head><body>
<h1>Energy report</h1>
<h2>Runs</h2>{_table(summary_head, summary_rows)}
<h2>Plots</h2><div id="plots">{images}</div>
<h2>Elsewhere</h2>{regions}
{f"<h2>Notes</h2><ul>{note_items}</ul>" if notes else ""}
<script>
for (const img of document.querySelectorAll("#plots img")) {{
  const mark = () => img.setAttribute("data-size", img.naturalWidth + "x" + img.naturalHeight);
  if (img.complete) mark(); else img.addEventListener("load", mark);
}}
</script>
</body></html>
"""
    path.write_text(page, encoding="utf-8")
