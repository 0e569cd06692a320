"""Plots and the self-contained HTML page of ``energy-report`` (matplotlib, Agg backend)."""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from energy_core.carbon.location import CarbonIntensity, co2e_kg, country_intensity, region_intensity, world_average
from energy_core.notices import printable
from energy_core.output.record import WINDOW
from energy_core.report import targets
from energy_core.report.runs import Run
from energy_core.report.when import WHAT_IF_HEAD, computing, intensity_used

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


def series(run: Run) -> dict[str, list[float]]:
    """Step, seconds, kWh, W, the intensity in force (g/kWh) and loss from a run's window lines."""
    points = run.points
    shown = [i for i in points.rows(WINDOW) if not math.isnan(points.kwh[i])]
    out = {name: [getattr(points, column)[i] for i in shown] for name, column in SERIES.items()}
    with_loss = [i for i in shown if not math.isnan(points.loss[i])]
    out["loss_kwh"] = [points.kwh[i] for i in with_loss]
    out["loss"] = [points.loss[i] for i in with_loss]
    out["seconds"] = [0.0 if math.isnan(t) else t for t in out["seconds"]]
    return out


SERIES = {
    "step": "step",
    "seconds": "seconds",
    "kwh": "kwh",
    "kwh_err": "kwh_err",
    "watts": "watts",
    "watts_err": "watts_err",
    "intensity": "intensity",
}
BANDS = {"kwh": "kwh_err", "watts": "watts_err"}  # a figure's bound, shaded around its curve


# One PNG per view: file name, x series, y series, x label, y label, title.
VIEWS = (
    ("energy_vs_step.png", "step", "kwh", "optimizer step", "energy (kWh)", "Energy against optimizer step"),
    ("energy_vs_time.png", "seconds", "kwh", "training time (s)", "energy (kWh)", "Energy against training time"),
    (
        "power_vs_step.png",
        "step",
        "watts",
        "optimizer step",
        "mean power over the window (W)",
        "Power against optimizer step",
    ),
    (
        "power_vs_time.png",
        "seconds",
        "watts",
        "training time (s)",
        "mean power over the window (W)",
        "Power against training time",
    ),
    ("loss_vs_kwh.png", "loss_kwh", "loss", "energy (kWh)", "loss", "Loss against energy"),
)
INTENSITY_PLOT = ("intensity_vs_power.png", "Grid intensity against power over the run")
TITLES = {name: title for name, *_, title in (*VIEWS, INTENSITY_PLOT, targets.METRIC_PLOT)}


def plot_runs(runs: list[tuple[str, Run]]) -> list[tuple[str, bytes]]:
    """One titled PNG per view, every run drawn in it: (file name, PNG) of each.

    The title is drawn above the plot and stored as the PNG's ``Title`` text chunk.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(label, series(run)) for label, run in runs]
    drawn_views = []
    for name, x, y, x_label, y_label, title in VIEWS:
        drawn = [(label, s) for label, s in data if s[x] and s[y]]
        if not drawn:
            continue
        figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=150)
        for label, s in drawn:
            line = axes.plot(s[x], s[y], marker=".", label=label)[0]
            _band(axes, s[x], s[y], s.get(BANDS.get(y, ""), []), line.get_color())
        axes.set_title(title)
        axes.set_xlabel(x_label)
        axes.set_ylabel(y_label)
        axes.grid(alpha=0.3)
        if len(drawn) > 1:
            axes.legend(fontsize="small")
        figure.tight_layout()
        drawn_views.append((name, _png(plt, figure, title)))
    metric = targets.metric_figure(plt, runs)
    if metric is not None:
        drawn_views.append((targets.METRIC_PLOT[0], _png(plt, metric, targets.METRIC_PLOT[1])))
    return drawn_views + _intensity_plot(plt, runs)


def _band(axes: Any, xs: list[float], ys: list[float], errors: list[float], color: Any) -> None:
    """Shade the interval that holds the true value around a curve (where the record has the bounds)."""
    if not errors or any(math.isnan(e) for e in errors):
        return
    axes.fill_between(xs, [y - e for y, e in zip(ys, errors)], [y + e for y, e in zip(ys, errors)],
                      color=color, alpha=0.2, linewidth=0)  # fmt: skip


def _png(plt: Any, figure: Any, title: str) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", metadata={"Title": title})
    plt.close(figure)
    return out.getvalue()


def _intensity_plot(plt: Any, runs: list[tuple[str, Run]]) -> list[tuple[str, bytes]]:
    """Power (left axis) and the intensity in force (right axis, a step curve) against time,
    for the runs whose intensity changed; nothing when it never did. For a time-shifted run,
    the stretches it computed are shaded, and the intensity is drawn through its pauses too
    (from the record's ``factor`` lines)."""
    drawn = []
    for label, run in runs:
        s, stretches = series(run), computing(run)
        curve = intensity_used(run) if stretches else list(zip(s["seconds"], s["intensity"]))
        if len({g for _, g in curve if g == g}) > 1:  # NaN: not logged
            drawn.append((label, s, stretches, curve))
    if not drawn:
        return []
    name, title = INTENSITY_PLOT
    figure, power_axes = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    intensity_axes = power_axes.twinx()
    for label, s, stretches, curve in drawn:
        hours = [seconds / 3600 for seconds in s["seconds"]]
        line = power_axes.plot(hours, s["watts"], marker=".", label=f"{label}: power")[0]
        at, values = [t / 3600 for t, _ in curve], [g for _, g in curve]
        if stretches:  # the last value holds to the run's end
            at, values = [*at, max(at[-1], stretches[-1][1] / 3600)], [*values, values[-1]]
        intensity_axes.step(at, values, where="post", linestyle="--", label=f"{label}: intensity")
        for i, (begin, end) in enumerate(stretches):  # a time shift: when the job computed
            power_axes.axvspan(begin / 3600, end / 3600, color=line.get_color(), alpha=0.12, linewidth=0,
                               label=f"{label}: computing" if i == 0 else None)  # fmt: skip
    power_axes.set_title(title)
    power_axes.set_xlabel("training time (h)")
    power_axes.set_ylabel("mean power over the window (W)")
    intensity_axes.set_ylabel("grid intensity (g CO2e/kWh)")
    power_axes.grid(alpha=0.3)
    lines = power_axes.get_legend_handles_labels()
    more = intensity_axes.get_legend_handles_labels()
    power_axes.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small")
    figure.tight_layout()
    return [(name, _png(plt, figure, title))]


NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-$")


def _numeric_columns(rows: list[list[str]], width: int) -> list[bool]:
    """Which columns hold only numbers (or '-' for none): those are right-aligned."""
    return [bool(rows) and all(NUMBER.match(row[i].strip()) for row in rows) for i in range(width)]


def _text(text: str) -> str:
    """Text from the records for the page: control characters written out (`printable`), then escaped."""
    return html.escape(printable(text))


def _breakable(text: str) -> str:
    """Escaped text that may break after '/' and '_' (run labels are paths, sources file names)."""
    return re.sub(r"([/_])", r"\1<wbr>", _text(text))


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; columns of numbers are marked ``num`` (right-aligned)."""
    numeric = _numeric_columns(rows, len(head))

    def cell(tag: str, i: int, text: str) -> str:
        if numeric[i]:
            return f'<{tag} class="num">{_text(text)}</{tag}>'
        return f"<{tag}>{_breakable(text)}</{tag}>"

    cells = "".join(cell("th", i, h) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table></div>'


# Laid out for a laptop screen: the page uses up to 90rem; plots and the per-run tables
# flow in a grid of columns at least 34rem (plots) / 30rem (tables) wide, so a 1366 px
# screen shows two side by side and a phone one. Text is left-aligned (long words break),
# numbers right-aligned; a table still wider than the screen scrolls on its own.
STYLE = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d1d1f;
  margin:0 auto;max-width:90rem;padding:1rem 1.5rem 2rem;text-align:left}
h1{font-size:1.6rem;margin:.5rem 0}h2{font-size:1.25rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:.25rem 0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.25rem 0 1rem}
th,td{border:1px solid #c8c8cc;padding:.25rem .6rem;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:#f2f2f5;font-weight:600;overflow-wrap:normal}
.num{text-align:right;font-variant-numeric:tabular-nums}
td.num{white-space:nowrap}
.grid{display:grid;gap:1rem 1.5rem;align-items:start}
#plots{grid-template-columns:repeat(auto-fill,minmax(min(100%,34rem),1fr))}
#elsewhere{grid-template-columns:repeat(auto-fill,minmax(min(100%,30rem),1fr))}
figure{margin:0}
figure img{display:block;width:100%;height:auto;border:1px solid #e0e0e4}
figcaption{font-size:.9rem;color:#555;margin-top:.25rem}
"""


def write_html(
    summary_head: list[str],
    summary_rows: list[list[str]],
    elsewhere: list[tuple[str, list[list[str]]]],
    plots: list[tuple[str, bytes]],
    notes: list[str],
    other_hours: Sequence[tuple[str, list[list[str]]]] = (),
) -> str:
    """A self-contained page: tables, the plots (file name, PNG) inlined as data URIs, notes;
    with ``other_hours``, the what-if of each run's start hour (`energy_core.report.when`)."""

    def caption(name: str) -> str:
        return html.escape(TITLES.get(name, Path(name).stem.replace("_", " ")))

    images = "".join(
        f'<figure><img alt="{caption(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{caption(name)} ({html.escape(name)})</figcaption></figure>"
        for name, png in plots
    )
    regions = "".join(
        f"<section><h3>{_text(label)}: the same energy elsewhere (g CO2e)</h3>"
        + _table(["grid", "g/kWh", *PUES], rows)
        + "</section>"
        for label, rows in elsewhere
    )
    hours = "".join(
        f"<section><h3>{_text(label)}: started at another hour</h3>" + _table(WHAT_IF_HEAD, rows) + "</section>"
        for label, rows in other_hours
    )
    hours_part = (
        f'<h2>The same run at another hour</h2><div id="other-hours" class="grid">{hours}</div>' if hours else ""
    )
    note_items = "".join(f"<li>{_text(n)}</li>" for n in notes)
    plots_part = f'<div id="plots" class="grid">{images}</div>' if plots else "<p>No plots (see the console).</p>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>energy-report</title>
<style>{STYLE}</style>
</head><body>
<h1>Energy report</h1>
<h2>Runs</h2>{_table(summary_head, summary_rows)}
<h2>Plots</h2>{plots_part}
<h2>The same energy elsewhere</h2><div id="elsewhere" class="grid">{regions}</div>
{hours_part}
{f"<h2>Notes</h2><ul>{note_items}</ul>" if notes else ""}
<script>
for (const img of document.querySelectorAll("#plots img")) {{
  const mark = () => img.setAttribute("data-size", img.naturalWidth + "x" + img.naturalHeight);
  if (img.complete) mark(); else img.addEventListener("load", mark);
}}
</script>
</body></html>
"""
    return page
