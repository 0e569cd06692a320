"""Plots and the self-contained HTML page of ``energy-report`` (matplotlib, Agg backend).

Every axis shows its figures in the unit that fits the largest of them (`energy_core.output.units_text`:
J, Wh, kWh; mg, g, kg; W, kW; s, min, h), with no offset or exponent above the axis. Every plot has a
legend naming each run and its start (below the axes when it has more than `LEGEND_INSIDE` entries);
each run has a colour and marker of its own (`run_style`); a curve that rests on an estimate says so
in its legend entry.
Epoch ends are marked on the step and time axes. Power is drawn per logging window, a window shorter
than a quarter of the median window (the partial window an epoch's end closes: a few steps, whose mean
power is mostly noise or one burst) folded into the window before it, so it is no spike. The energy
curves run to the summary (the final evaluation included).

Each PNG stores its title (``Title``) and, as drawn, its axes' labels, tick labels and legend
(``Description``), so what a reader sees can be checked without reading pixels.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import statistics
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from energy_core.carbon.location import CarbonIntensity, co2e_kg, country_intensity, region_intensity, world_average
from energy_core.devices import DEVICE_KINDS
from energy_core.notices import printable
from energy_core.output import units_text as show
from energy_core.output.record import EPOCH, SUMMARY, WINDOW
from energy_core.report import targets
from energy_core.report.runs import Run, utc
from energy_core.report.when import WHAT_IF_HEAD, computing, intensity_used
from energy_core.units import J_PER_KWH

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
PUES = {"PUE 1.1 (hyperscale)": 1.1, "PUE 1.58 (industry average)": 1.58}
ELSEWHERE_HEAD = ["grid", "g/kWh", *(f"CO2e at {name}" for name in PUES)]
TIME = (("s", 1.0), ("min", 60.0), ("h", 3600.0))  # the time axis: the largest unit the run spans twice
SHORT_WINDOW = 0.25  # a window shorter than this share of the median window is folded into the one before


def other_grids() -> list[tuple[str, CarbonIntensity]]:
    """A few contrasting grids from codecarbon's data, and the world average."""
    grids = []
    for country, region in OTHER_GRIDS:
        intensity = region_intensity(country, region) if region else country_intensity(country)
        grids.append((f"{country}/{region}" if region else country, intensity))
    return [*grids, ("world", world_average())]


def elsewhere_rows(kwh: float) -> list[list[str]]:
    """What ``kwh`` would emit on other grids, at each typical PUE (`ELSEWHERE_HEAD`)."""
    return [
        [
            name,
            f"{intensity.g_per_kwh:.0f}",
            *(show.mass(co2e_kg(kwh, pue, intensity.g_per_kwh)) for pue in PUES.values()),
        ]
        for name, intensity in other_grids()
    ]


def series(run: Run) -> dict[str, list[float]]:
    """A run's curves, in base units (J, kg, W, s): the cumulative figures at every boundary (windows,
    epoch ends, the summary), power per window (short windows folded), loss against energy, epoch ends."""
    points = run.points
    shown = [i for i in points.rows(WINDOW, EPOCH, SUMMARY) if not math.isnan(points.kwh[i])]
    out: dict[str, list[float]] = {
        "step": [points.step[i] for i in shown],
        "seconds": [points.seconds[i] for i in shown],  # NaN where the line has none: not drawn
        "joules": [points.kwh[i] * J_PER_KWH for i in shown],
        "joules_err": [points.kwh_err[i] * J_PER_KWH for i in shown],  # NaN where the record has no bound
        "co2e": [points.co2e_kg[i] for i in shown],
    }
    for kind in DEVICE_KINDS:
        column = getattr(points, f"{kind}_kwh")
        out[f"{kind}_joules"] = [column[i] * J_PER_KWH for i in shown]
    out.update(_power(run))
    with_loss = [i for i in points.rows(WINDOW) if not math.isnan(points.kwh[i]) and not math.isnan(points.loss[i])]
    out["loss_joules"] = [points.kwh[i] * J_PER_KWH for i in with_loss]
    out["loss"] = [points.loss[i] for i in with_loss]
    epochs = [i for i in points.rows(EPOCH)]
    out["epoch_step"] = [points.step[i] for i in epochs if not math.isnan(points.step[i])]
    out["epoch_seconds"] = [points.seconds[i] for i in epochs if not math.isnan(points.seconds[i])]
    return out


def _seconds(value: float) -> float:
    return 0.0 if math.isnan(value) else value


BANDS = {"joules": "joules_err", "watts": "watts_err"}  # a curve's bound, shaded around it


def _power(run: Run) -> dict[str, list[float]]:
    """Mean power per window (``power_step``, ``power_seconds``, ``watts``); a window shorter than
    `SHORT_WINDOW` of the median one is folded into the one before it (their energy over their time), a
    short first one into the next."""
    points = run.points
    rows = [i for i in points.rows(WINDOW) if not math.isnan(points.watts[i])]
    lengths = [points.window_s[i] for i in rows if points.window_s[i] > 0]
    shortest = SHORT_WINDOW * statistics.median(lengths) if lengths else 0.0
    kept: list[list[float]] = []  # [step, seconds, joules, window seconds, joules' bound, the window's power]
    carried = [0.0, 0.0, 0.0]  # a short first window's (joules, seconds, bound), for the next
    for i in rows:
        span = points.window_s[i]
        span = span if span > 0 else 0.0
        joules, bound = points.watts[i] * span, points.watts_err[i] * span  # bounds add when folded
        if span >= shortest:
            kept.append([points.step[i], points.seconds[i], joules + carried[0], span + carried[1],
                         bound + carried[2], points.watts[i]])  # fmt: skip
            carried = [0.0, 0.0, 0.0]
        elif kept:  # folded into the window before it
            kept[-1][0], kept[-1][1] = points.step[i], points.seconds[i]
            kept[-1][2] += joules
            kept[-1][3] += span
            kept[-1][4] += bound
        else:
            carried = [carried[0] + joules, carried[1] + span, carried[2] + bound]
    return {
        "power_step": [k[0] for k in kept],
        "power_seconds": [k[1] for k in kept],
        "watts": [k[2] / k[3] if k[3] > 0 else k[5] for k in kept],  # no length recorded: the window's own
        "watts_err": [k[4] / k[3] if k[3] > 0 else math.nan for k in kept],  # NaN where the record has no bound
    }


# One PNG per view: file name, x series, y series, x axis, y axis, title. An axis is (label, ladder)
# where a ladder scales the figures to the unit that fits, or (label, None) for figures shown as logged.
ENERGY_AXIS = ("energy", show.ENERGY)
TIME_AXIS = ("training time", TIME)
STEP_AXIS = ("optimizer step", None)
POWER_AXIS = ("mean power over the window", show.POWER)
VIEWS = (
    ("energy_vs_step.png", "step", "joules", STEP_AXIS, ENERGY_AXIS, "Energy against optimizer step"),
    ("energy_vs_time.png", "seconds", "joules", TIME_AXIS, ENERGY_AXIS, "Energy against training time"),
    ("power_vs_step.png", "power_step", "watts", STEP_AXIS, POWER_AXIS, "Power against optimizer step"),
    ("power_vs_time.png", "power_seconds", "watts", TIME_AXIS, POWER_AXIS, "Power against training time"),
    ("loss_vs_kwh.png", "loss_joules", "loss", ENERGY_AXIS, ("loss", None), "Loss against energy"),
    ("co2e_vs_time.png", "seconds", "co2e", TIME_AXIS, ("CO2e", show.MASS), "CO2e against training time"),
)
DEVICES_PLOT = ("energy_by_device.png", "Energy by device against training time")
INTENSITY_PLOT = ("intensity_vs_power.png", "Grid intensity against power over the run")
TITLES = {name: title for name, *_, title in (*VIEWS, DEVICES_PLOT, INTENSITY_PLOT, targets.METRIC_PLOT)}
EPOCH_ENDS = {"power_step": "epoch_step", "step": "epoch_step", "power_seconds": "epoch_seconds",
              "seconds": "epoch_seconds"}  # fmt: skip


# A run's colour and marker in every plot: matplotlib's ten colours, then the ten again with the next
# marker (runs 0 and 10 looked the same): 80 runs before one repeats.
MARKERS = (".", "s", "^", "v", "D", "P", "X", "d")
LEGEND_INSIDE = 8  # entries a legend holds inside the axes; more go below them, the figure made taller


def run_style(index: int) -> dict[str, Any]:
    """The colour, marker and marker size of the run (or curve) ``index`` (0 for the first)."""
    marker = MARKERS[(index // 10) % len(MARKERS)]
    return {"color": f"C{index % 10}", "marker": marker, "markersize": 6.0 if marker == "." else 3.5}


def legend(axes: Any, handles: list[Any] | None = None, labels: list[str] | None = None) -> None:
    """The legend of ``axes`` (its own entries unless given): inside the axes for a few entries; for more
    (a legend of 15 runs ran past the figure's edge), below them, one entry a line, the figure made
    taller by the lines it takes, so every entry is drawn whole."""
    if handles is None or labels is None:
        handles, labels = axes.get_legend_handles_labels()
    if len(labels) <= LEGEND_INSIDE:
        axes.legend(handles, labels, fontsize="small")
        return
    figure = axes.figure
    width, height = figure.get_size_inches()  # (a figure of several panels: as tall as its longest legend needs)
    figure.set_size_inches(width, max(height, PLOT_HEIGHT_IN + LEGEND_LINE_IN * len(labels)))
    axes.legend(handles, labels, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)


LEGEND_LINE_IN = 0.16  # the height of one x-small legend entry, in inches
PLOT_HEIGHT_IN = 3.6  # a plot's height without a legend below it


def legend_label(label: str, run: Run) -> str:
    """A run as every plot's legend names it: its label, its start, and what of it is estimated."""
    started = f", {utc(run.started)}" if run.started is not None else ""
    estimated = f" ({', '.join(run.estimated_kinds)} estimated)" if run.estimated_kinds else ""
    return printable(label) + started + estimated


def unit_of(values: Sequence[float], axis: tuple[str, Any]) -> tuple[str, float]:
    """An axis's label and the factor its figures are divided by: the unit that fits the largest figure."""
    name, ladder = axis
    if ladder is None:
        return name, 1.0
    largest = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    if ladder is TIME:
        unit, size = next(((n, s) for n, s in reversed(TIME) if largest >= 2 * s), TIME[0])
    else:
        unit, size = show.unit_for(largest, ladder)
    return f"{name} ({unit})", size


def plot_runs(runs: list[tuple[str, Run]], notes: list[str] | None = None) -> list[tuple[str, bytes]]:
    """One titled PNG per view, every run drawn in it: (file name, PNG) of each. A name from a record
    is drawn as written (``$`` is text, never math markup). A view that cannot be drawn from these
    records is left out, with a note in ``notes``: the others are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(label, run, series(run)) for label, run in runs]
    drawn: list[tuple[str, bytes]] = []

    def draw(name: str, title: str, make: Callable[[], Any]) -> None:
        try:
            figure = make()
            if figure is not None:
                drawn.append((name, _png(plt, figure, title)))
        except Exception as err:  # noqa: BLE001 - one view the records break leaves the others and the page
            plt.close("all")
            if notes is not None:
                notes.append(f"{name} not drawn: {type(err).__name__}: {str(err)[:200]}")

    with matplotlib.rc_context({"text.parse_math": False}):
        for name, x, y, x_axis, y_axis, title in VIEWS:
            draw(name, title, partial(_view, plt, data, x, y, x_axis, y_axis, title))
        draw(*DEVICES_PLOT, lambda: _devices_plot(plt, data))
        draw(*targets.METRIC_PLOT, lambda: targets.metric_figure(plt, runs, legend_label, run_style, legend))
        draw(*INTENSITY_PLOT, lambda: _intensity_plot(plt, runs))
    return drawn


def _view(
    plt: Any,
    data: list[tuple[str, Run, dict[str, list[float]]]],
    x: str,
    y: str,
    x_axis: tuple[str, Any],
    y_axis: tuple[str, Any],
    title: str,
) -> Any:
    """One of `VIEWS`: each run's ``y`` against its ``x``, with its bound as a band; None when no run has both."""
    drawn = [(n, label, run, s) for n, (label, run, s) in enumerate(data) if s[x] and s[y]]
    if not drawn:
        return None
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    x_label, x_size = unit_of([v for *_, s in drawn for v in s[x]], x_axis)
    y_label, y_size = unit_of([v for *_, s in drawn for v in s[y]], y_axis)
    if y == "loss":
        y_label = _loss_label([run for _, _, run, _ in drawn])
    bands = []
    for n, label, run, s in drawn:
        errors = s.get(BANDS.get(y, ""), [])
        at = [i for i, (a, b) in enumerate(zip(s[x], s[y])) if math.isfinite(a) and math.isfinite(b)]
        xs, ys = [s[x][i] / x_size for i in at], [s[y][i] / y_size for i in at]  # a point without x is not drawn
        line = axes.plot(xs, ys, label=legend_label(label, run), **run_style(n))[0]
        bands.append((xs, ys, [errors[i] / y_size for i in at] if errors else [], line.get_color()))
        _epoch_ends(axes, s.get(EPOCH_ENDS.get(x, ""), []), x_size, line.get_color())
    limits = axes.get_ylim()  # the curves set the axis; a wide band runs past its edge rather than squash them
    for band in bands:
        _band(axes, *band)
    axes.set_ylim(limits)
    _finish(axes, title, x_label, y_label)
    return figure


def _loss_label(runs: list[Run]) -> str:
    names = list(dict.fromkeys(printable(run.points.loss_name) for run in runs if run.points.loss_name))
    return f"loss ({', '.join(names)})" if names else "loss"


def _epoch_ends(axes: Any, at: list[float], size: float, color: Any) -> None:
    """A dotted line at each epoch's end, in the run's colour, named once in the legend."""
    named = "epoch ends" in axes.get_legend_handles_labels()[1]
    for i, x in enumerate(at):
        label = "epoch ends" if i == 0 and not named else None
        axes.axvline(x / size, color=color, linestyle=":", linewidth=0.9, alpha=0.7, label=label)


def _finish(axes: Any, title: str, x_label: str, y_label: str) -> None:
    """Title, labels, grid, legend; plain tick labels (no offset, no exponent above the axis)."""
    axes.set_title(title)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.ticklabel_format(axis="both", style="plain", useOffset=False)
    axes.grid(alpha=0.3)
    legend(axes)
    axes.figure.tight_layout()


def _devices_plot(plt: Any, data: list[tuple[str, Run, dict[str, list[float]]]]) -> Any:
    """Each run's energy per device kind against time, an estimated kind named so (and dashed); None
    when no run measured more than one kind (the energy plot says it all)."""
    measured = [[k for k in DEVICE_KINDS if any(v == v for v in s[f"{k}_joules"])] for _, _, s in data]
    if all(len(kinds) < 2 for kinds in measured):
        return None
    curves = []
    for (label, run, s), kinds in zip(data, measured):
        for kind in kinds:
            mark = " (estimated)" if kind in run.estimated_kinds else ""
            pairs = [(t, j) for t, j in zip(s["seconds"], s[f"{kind}_joules"]) if j == j and t == t]
            curves.append((f"{printable(label)}: {kind}{mark}", pairs, bool(mark)))
    figure, axes = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    x_label, x_size = unit_of([t for _, pairs, _ in curves for t, _ in pairs], TIME_AXIS)
    y_label, y_size = unit_of([j for _, pairs, _ in curves for _, j in pairs], ENERGY_AXIS)
    for n, (name, pairs, estimated) in enumerate(curves):
        axes.plot([t / x_size for t, _ in pairs], [j / y_size for _, j in pairs],
                  linestyle="--" if estimated else "-", label=name, **run_style(n))  # fmt: skip
    _finish(axes, DEVICES_PLOT[1], x_label, y_label)
    return figure


def _band(axes: Any, xs: list[float], ys: list[float], errors: list[float], color: Any) -> None:
    """Shade the interval that holds the true value around a curve (where the record has the bounds)."""
    if not errors or any(math.isnan(e) for e in errors):
        return
    axes.fill_between(xs, [y - e for y, e in zip(ys, errors)], [y + e for y, e in zip(ys, errors)],
                      color=color, alpha=0.2, linewidth=0)  # fmt: skip


def _png(plt: Any, figure: Any, title: str) -> bytes:
    """The figure as a PNG, its title and (as drawn) its axes' text stored in it. Drawn once: the
    pixels of that drawing are written as they are (``savefig`` would draw the figure again)."""
    from PIL import Image, PngImagePlugin  # matplotlib's own dependency

    figure.canvas.draw()
    info = PngImagePlugin.PngInfo()
    for key, text in (("Title", title), ("Description", drawn_text(figure)), ("Software", "matplotlib")):
        info.add_text(key, text)
    out = io.BytesIO()
    image = Image.frombuffer("RGBA", figure.canvas.get_width_height(), bytes(figure.canvas.buffer_rgba()))
    image.save(out, format="png", pnginfo=info, dpi=(figure.dpi, figure.dpi))
    plt.close(figure)
    return out.getvalue()


def drawn_text(figure: Any) -> str:
    """The text of a drawn figure's axes, one line each: labels, tick labels, offset text, legend."""
    lines = []
    for axes in figure.axes:
        for name, axis in (("x", axes.xaxis), ("y", axes.yaxis)):
            ticks = [t.get_text() for t in axis.get_ticklabels() if t.get_text()]
            offset = axis.get_offset_text().get_text()
            if ticks or axis.get_label_text():
                lines.append(f"{name} axis: {axis.get_label_text()} | ticks: {', '.join(ticks)} | offset: {offset}")
        legend = axes.get_legend()
        if legend is not None:
            lines.append("legend: " + "; ".join(t.get_text() for t in legend.get_texts()))
    return "\n".join(lines)


def _intensity_plot(plt: Any, runs: list[tuple[str, Run]]) -> Any:
    """Power (left axis) and the intensity in force (right axis, a step curve) against time,
    for the runs whose intensity changed; nothing when it never did. For a time-shifted run,
    the stretches it computed are shaded, and the intensity is drawn through its pauses too
    (from the record's ``factor`` lines)."""
    drawn: list[Any] = []
    for n, (label, run) in enumerate(runs):
        s, stretches = series(run), computing(run)
        curve = intensity_used(run) if stretches else logged_intensity(run)
        if len({g for _, g in curve if g == g}) > 1:  # NaN: not logged
            drawn.append((n, label, run, s, stretches, curve))
    if not drawn:
        return None
    figure, power_axes = plt.subplots(figsize=(6.4, 3.6), dpi=150)
    intensity_axes = power_axes.twinx()
    power_label, power_size = unit_of([w for _, _, _, s, _, _ in drawn for w in s["watts"]], POWER_AXIS)
    for n, label, run, s, stretches, curve in drawn:
        hours = [seconds / 3600 for seconds in s["power_seconds"]]
        named, style = legend_label(label, run), run_style(n)
        line = power_axes.plot(hours, [w / power_size for w in s["watts"]], label=f"{named}: power", **style)[0]
        at, values = [t / 3600 for t, _ in curve], [g for _, g in curve]
        if stretches:  # the last value holds to the run's end
            at, values = [*at, max(at[-1], stretches[-1][1] / 3600)], [*values, values[-1]]
        intensity_axes.step(at, values, where="post", linestyle="--", color=style["color"],
                            label=f"{printable(label)}: intensity")  # fmt: skip
        for i, (begin, end) in enumerate(stretches):  # a time shift: when the job computed
            power_axes.axvspan(begin / 3600, end / 3600, color=line.get_color(), alpha=0.12, linewidth=0,
                               label=f"{printable(label)}: computing" if i == 0 else None)  # fmt: skip
    power_axes.set_title(INTENSITY_PLOT[1])
    power_axes.set_xlabel("training time (h)")
    power_axes.set_ylabel(power_label)
    intensity_axes.set_ylabel("grid intensity (g CO2e/kWh)")
    for axes in (power_axes, intensity_axes):
        axes.ticklabel_format(axis="y", style="plain", useOffset=False)
    power_axes.grid(alpha=0.3)
    lines = power_axes.get_legend_handles_labels()
    more = intensity_axes.get_legend_handles_labels()
    legend(power_axes, lines[0] + more[0], lines[1] + more[1])
    figure.tight_layout()
    return figure


def logged_intensity(run: Run) -> list[tuple[float, float]]:
    """The intensity logged in each window, at the window's end (training seconds)."""
    points = run.points
    return [(_seconds(points.seconds[i]), points.intensity[i]) for i in points.rows(WINDOW)]


NUMBER = re.compile(r"^[-+]?(\d[\d,]*\.?\d*|\.\d+)([eE][-+]?\d+)?( [a-zA-Zµ]+)?$|^-$")


def _numeric(text: str) -> bool:
    """A figure (a number, with its unit) or '-' for none: right-aligned."""
    return bool(NUMBER.match(text.strip()))


def _text(text: str) -> str:
    """Text from the records for the page: control characters written out (`printable`), then escaped."""
    return html.escape(printable(text))


def _breakable(text: str) -> str:
    """Escaped text that may break after '/' and '_' (run labels are paths, sources file names)."""
    return re.sub(r"([/_])", r"\1<wbr>", _text(text))


def _cell(tag: str, text: str, numeric: bool) -> str:
    if numeric:
        return f'<{tag} class="num">{_text(text)}</{tag}>'
    return f"<{tag}>{_breakable(text)}</{tag}>"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """An HTML table; columns of figures are marked ``num`` (right-aligned)."""
    numeric = [bool(rows) and all(_numeric(row[i]) for row in rows) for i in range(len(head))]
    cells = "".join(_cell("th", h, numeric[i]) for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(_cell("td", c, numeric[i]) for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table></div>'


def _runs_table(head: list[str], rows: list[list[str]]) -> str:
    """The runs side by side, as in the terminal: one column per run, one line per figure (each cell
    left-aligned: a column mixes figures and text)."""
    runs = "".join(_cell("th", row[0], False) for row in rows)
    body = "".join(
        f'<tr><th scope="row">{_text(field)}</th>' + "".join(_cell("td", row[i], False) for row in rows) + "</tr>"
        for i, field in enumerate(head[1:], start=1)
    )
    return (f'<div class="scroll"><table class="runs"><thead><tr><th>{_text(head[0])}</th>{runs}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")  # fmt: skip


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
table.runs tbody th{white-space:nowrap}
table.runs td{max-width:40rem}
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
    summary: tuple[list[str], list[list[str]]],
    context: tuple[list[str], list[list[str]]],
    elsewhere: list[tuple[str, list[list[str]]]],
    plots: list[tuple[str, bytes]],
    notes: list[str],
    other_hours: Sequence[tuple[str, list[list[str]]]] = (),
) -> str:
    """A self-contained page: the runs' figures and context (one column per run), the plots (file
    name, PNG) inlined as data URIs, the same energy elsewhere, notes; with ``other_hours``, the
    what-if of each run's start hour (`energy_core.report.when`)."""

    def caption(name: str) -> str:
        return html.escape(TITLES.get(name, Path(name).stem.replace("_", " ")))

    images = "".join(
        f'<figure><img alt="{caption(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{caption(name)} ({html.escape(name)})</figcaption></figure>"
        for name, png in plots
    )
    regions = "".join(
        f"<section><h3>{_text(label)}: the same energy elsewhere</h3>" + _table(ELSEWHERE_HEAD, rows) + "</section>"
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
<h2>Runs</h2><div id="runs">{_runs_table(*summary)}</div>
<h2>How and where each run ran</h2><div id="context">{_runs_table(*context)}</div>
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
