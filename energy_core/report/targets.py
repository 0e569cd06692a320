"""Energy to target in ``energy-report``: the summary's column and the metric-against-energy plot.

Both come from the run records' ``target`` lines, one per evaluation a target watched
(`energy_core.target`): the metric's value against the energy the run had spent by the
end of that evaluation. Runs of different setups drawn together show which reached a
quality for the least energy. A record may come from another user: a line whose figures
are not numbers is left out, and names from it are shown printable and short.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from energy_core.notices import printable
from energy_core.output import units_text as show
from energy_core.report.runs import Run, metric_value, number
from energy_core.target.run import REACHED
from energy_core.units import J_PER_KWH, MAX_KWH

METRIC_PLOT = ("metric_vs_kwh.png", "Metric against energy")
MAX_METRICS = 3  # one panel per metric name; a report of more compares too little to be read
NAME_CHARS = 60


def _name(text: Any) -> str:
    """A name from a record, shown as text (no control character acts) and short."""
    clean = printable(text)
    return clean if len(clean) <= NAME_CHARS else clean[: NAME_CHARS - 1] + "…"


def evaluations(run: Run) -> list[dict[str, Any]]:
    """The run's ``target`` lines with a metric's name and an energy, each with ``kwh`` and ``value``
    (None where the metric had no figure) as floats and ``metric`` as printable text."""
    found = []
    for line in run.targets:
        kwh = number(line.get("energy_kwh"))
        if kwh is None or not 0 <= kwh <= MAX_KWH or not isinstance(line.get("metric"), str):
            continue
        found.append({**line, "kwh": kwh, "value": metric_value(line, "value"), "metric": _name(line.get("metric"))})
    return found


def _goal(line: dict[str, Any]) -> str:
    target = metric_value(line, "target")
    if target is None:
        return line["metric"]
    return f"{line['metric']} {'<=' if line.get('mode') == 'min' else '>='} {target:g}"


def energy_to_target(run: Run) -> str:
    """The summary's cell: the energy at the evaluation that first reached the target,
    "not reached" with the best value seen, or "-" for a run without a target."""
    lines = evaluations(run)
    if not lines:
        return "-"
    reached = next((x for x in lines if x.get("event") == REACHED), None)
    if reached is not None:
        step = reached.get("step")
        at = f", step {step}" if isinstance(step, int) else ""
        return f"{show.energy_kwh(reached['kwh'])} ({_goal(reached)}{at})"
    values = [x["value"] for x in lines if x["value"] is not None]
    if not values:
        return f"not reached ({_goal(lines[-1])}; no figure)"
    best = min(values) if lines[-1].get("mode") == "min" else max(values)
    return f"not reached ({_goal(lines[-1])}; best {best:.4g})"


def metric_figure(
    plt: Any,
    runs: list[tuple[str, Run]],
    name: Callable[[str, Run], str],
    style: Callable[[int], dict[str, Any]] = lambda n: {"marker": "."},
    legend: Callable[[Any], None] = lambda axes: axes.legend(fontsize="small"),
) -> Any:
    """One panel per metric (at most `MAX_METRICS`): each run's metric at each evaluation
    against the energy spent by then (in the unit that fits), its target as a dashed line, the
    evaluation that reached it starred; ``name`` gives a run's legend entry. None when no run
    recorded a target. ``style`` gives the n-th run's colour and marker, ``legend`` draws a panel's legend."""
    by_metric: dict[str, list[tuple[int, str, list[dict[str, Any]]]]] = {}
    for n, (label, run) in enumerate(runs):
        lines = [x for x in evaluations(run) if x["value"] is not None]
        for metric in dict.fromkeys(x["metric"] for x in lines):
            found = (n, name(label, run), [x for x in lines if x["metric"] == metric])
            by_metric.setdefault(metric, []).append(found)
    metrics = list(by_metric)[:MAX_METRICS]
    if not metrics:
        return None
    largest = max(x["kwh"] for metric in metrics for *_, lines in by_metric[metric] for x in lines) * J_PER_KWH
    unit, size = show.unit_for(largest, show.ENERGY)
    size /= J_PER_KWH  # kWh per unit shown
    figure, panels = plt.subplots(1, len(metrics), figsize=(6.4 * len(metrics), 3.6), dpi=150, squeeze=False)
    for axes, metric in zip(panels[0], metrics):
        targets = set()
        for n, label, lines in by_metric[metric]:
            drawn = axes.plot([x["kwh"] / size for x in lines], [x["value"] for x in lines], label=label, **style(n))
            reached = [x for x in lines if x.get("event") == REACHED]
            if reached:
                axes.plot([reached[0]["kwh"] / size], [reached[0]["value"]], marker="*", markersize=12,
                          color=drawn[0].get_color(), linestyle="none")  # fmt: skip
            target = metric_value(lines[-1], "target")
            if target is not None:
                targets.add(target)
        for target in sorted(targets):
            axes.axhline(target, linestyle="--", color="grey", linewidth=1)
        axes.set_title(f"{metric} against energy" if len(metrics) > 1 else METRIC_PLOT[1])
        axes.set_xlabel(f"energy since fit start ({unit})")
        axes.set_ylabel(metric)
        axes.ticklabel_format(axis="x", style="plain", useOffset=False)
        axes.grid(alpha=0.3)
        legend(axes)
    figure.tight_layout()
    return figure
