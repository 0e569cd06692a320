"""What a newcomer reads in `energy-report`'s page and plots: the run's context, figures in the units
that fit, estimates marked, validation energy, PUE columns named, and plots that say what they draw.

The record is a real tracker's, on a manual clock: a simulated GPU at 300 W and the CPU estimate
(no RAPL here), two epochs of five 1 s logging windows with a training loss, then at each epoch's
end a 40 ms partial window during a 900 W burst (the kind of window a spike came from), a 0.5 s
validation, and a last 0.5 s evaluation after the last window (as HF's final evaluation). The
page is read in headless Chromium at 1280 px; the plots through the text each PNG stores as drawn
(`energy_core.report.plots.drawn_text`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from energy_core import J_PER_KWH
from energy_core.devices import amd, cpu_estimate, rapl
from energy_core.output import units_text as show
from energy_core.report import plots
from energy_core.report.cli import main
from energy_core.report.runs import Run
from tests.doubles import sim_amdsmi
from tests.doubles.power_traces import Switched
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.doubles.vendors import simulate
from tests.helpers.chromium import find_chromium, probe
from tests.helpers.manual import manual_run
from tests.helpers.records import read_record

GPU_W, BURST_W = 300.0, 900.0
WINDOW_S, PARTIAL_S, VAL_S = 1.0, 0.04, 0.5


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "energy.jsonl"
    with pytest.MonkeyPatch.context() as monkeypatch:  # hermetic, as tests/conftest.py's autouse fixture
        sim_amdsmi.install(monkeypatch, None)
        monkeypatch.setattr(amd, "AMDGPU_MODULE", tmp_path_factory.mktemp("no-amdgpu") / "amdgpu")
        monkeypatch.setattr(rapl, "POWERCAP_ROOT", tmp_path_factory.mktemp("no-powercap"))
        # The CPU estimate follows this process's real CPU time, which the machine's load moves: held
        # still, so that the figures are the GPU's known integral (the CPU stays an estimated source).
        monkeypatch.setattr(cpu_estimate.ProcessTree, "cpu_seconds", lambda self: 0.0)
        clock = ManualClock()
        trace = Switched(GPU_W)
        sim = simulate(monkeypatch, "nvml", [SimGpu("GPU-a", trace, counter_period_s=0.01)], clock=clock)
        run = manual_run(clock, record_path=path, country="FRA", pue=1.1)  # devices="auto": GPU and CPU estimate
        tracker, step = run.tracker, 0
        try:
            for epoch in range(2):
                tracker.start_epoch()
                for _ in range(5):
                    for _ in range(10):
                        tracker.add_batch(torch.ones(8, 4))
                        step += 1
                    run.advance(WINDOW_S, every=0.01)
                    tracker.window(step, extra={"train_loss": 1.0 / step})
                trace.set(sim.elapsed(), BURST_W)  # the epoch's last step: a burst, in a window of 40 ms
                tracker.add_batch(torch.ones(8, 4))
                step += 1
                run.advance(PARTIAL_S, every=0.01)
                trace.set(sim.elapsed(), GPU_W)
                tracker.start_stage("val")
                run.advance(VAL_S, every=0.01)
                tracker.end_stage("val", step)
                tracker.end_epoch(step, epoch, extra={"train_loss": 1.0 / step})
            tracker.start_stage("val")  # the final evaluation, after the last window
            run.advance(VAL_S, every=0.01)
            tracker.end_stage("val", step)
            tracker.end_fit(step)
        finally:
            tracker.close()
    return path


@pytest.fixture(scope="module")
def report(record, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("COLUMNS", "200")
        assert main([str(record), "--out", str(out)]) == 0
    return out


def drawn(report: Path, name: str) -> dict[str, Any]:
    """A plot's text as drawn: each axis's label, tick labels and offset; the legend's entries."""
    found: dict[str, Any] = {}
    for line in Image.open(report / name).text["Description"].splitlines():
        if line.startswith("legend: "):
            found["legend"] = line.removeprefix("legend: ").split("; ")
            continue
        label, ticks, offset = line.split(" | ")
        name = label.split(" ")[0]
        found.setdefault(name, {"label": label.removeprefix(f"{name} axis: "),
                                "ticks": ticks.removeprefix("ticks: ").split(", "),
                                "offset": offset.removeprefix("offset: ")})  # fmt: skip
    return found


def test_the_plots_name_the_run_its_start_and_its_estimates(report, record) -> None:
    started = Run.of(read_record(record)).started
    assert started is not None
    for name in ("energy_vs_step.png", "energy_vs_time.png", "power_vs_time.png", "co2e_vs_time.png"):
        legend = drawn(report, name)["legend"]
        assert legend[0].startswith(f"{record.parent.name}/energy, 20"), legend  # its name and start
        assert legend[0].endswith(" UTC (cpu estimated)"), legend
    by_device = drawn(report, "energy_by_device.png")["legend"]
    assert by_device == [f"{record.parent.name}/energy: gpu", f"{record.parent.name}/energy: cpu (estimated)"]


def test_every_axis_is_in_a_unit_that_fits_with_no_offset_above_it(report) -> None:
    labels = {}
    for png in sorted(report.glob("*.png")):
        seen = drawn(report, png.name)
        for axis in ("x", "y"):
            assert seen[axis]["offset"] == "", (png.name, seen[axis])  # no "1e-5" above the axis
            assert not any("e-" in t or "e+" in t for t in seen[axis]["ticks"]), (png.name, seen[axis])
        labels[png.stem] = (seen["x"]["label"], seen["y"]["label"])
    total_j = GPU_W * (10 * WINDOW_S + 2 * PARTIAL_S + 3 * VAL_S) + 2 * (BURST_W - GPU_W) * PARTIAL_S  # ~3,500 J
    assert show.unit_for(total_j, show.ENERGY)[0] == "J"
    assert labels["energy_vs_time"] == ("training time (s)", "energy (J)")
    assert labels["power_vs_step"] == ("optimizer step", "mean power over the window (W)")
    assert labels["co2e_vs_time"][1] in ("CO2e (mg)", "CO2e (g)")
    assert labels["loss_vs_kwh"] == ("energy (J)", "loss (train_loss)")  # which loss
    assert "epoch ends" in drawn(report, "energy_vs_step.png")["legend"]
    assert "epoch ends" in drawn(report, "power_vs_time.png")["legend"]


def test_a_short_end_of_epoch_window_is_no_spike(record, report) -> None:
    run = Run.of(read_record(record))
    logged = [w["metrics"]["power/total_w"] for w in read_record(record) if w["type"] == "window"]
    assert max(logged) > 2 * GPU_W  # the record holds the 40 ms window as logged (a counter period late)
    drawn_w = plots.series(run)["watts"]
    folded = (GPU_W * WINDOW_S + BURST_W * PARTIAL_S) / (WINDOW_S + PARTIAL_S)  # 323 W over the last 1.04 s
    assert len(drawn_w) == 10 and max(drawn_w) == pytest.approx(folded, abs=(BURST_W - GPU_W) * 0.01)
    ticks = [float(t.replace("\N{MINUS SIGN}", "-")) for t in drawn(report, "power_vs_time.png")["y"]["ticks"]]
    assert max(ticks) < 400  # the axis is not stretched to 900 W


def test_the_energy_curve_reaches_the_final_evaluation(record) -> None:
    lines = read_record(record)
    summary = lines[-1]
    run = Run.of(lines)
    curve = plots.series(run)
    assert curve["seconds"][-1] == pytest.approx(summary["seconds"])  # 11.58 s, not the last window's 11.08 s
    assert curve["joules"][-1] == pytest.approx(summary["metrics"]["energy/total_kwh"] * J_PER_KWH)
    last_window = max(line["elapsed_s"] for line in lines if line["type"] == "window")
    assert curve["seconds"][-1] - last_window == pytest.approx(VAL_S, abs=0.02)


PROBE = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const rows = sel => Object.fromEntries([...document.querySelectorAll(sel + " tbody tr")].map(
    tr => [tr.querySelector("th").innerText.trim(), [...tr.querySelectorAll("td")].map(td => td.innerText.trim())]));
  document.getElementById("probe").textContent = JSON.stringify({
    runs: rows("#runs"), context: rows("#context"),
    elsewhere: [...document.querySelectorAll("#elsewhere th")].map(th => th.innerText.trim()),
    captions: [...document.querySelectorAll("#plots figcaption")].map(c => c.innerText.trim()),
    page_width: document.documentElement.scrollWidth, viewport: window.innerWidth,
  });
});
</script>"""


def test_the_page_at_1280_px_gives_the_runs_context_and_figures(record, report, tmp_path) -> None:
    chromium = find_chromium()
    page = (report / "report.html").read_text(encoding="utf-8")
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    seen = probe(chromium, probed.as_uri(), width=1280, budget_ms=5000)
    assert seen["viewport"] == 1280 and seen["page_width"] <= 1280  # nothing scrolls sideways
    header, summary = read_record(record)[0], read_record(record)[-1]
    context = seen["context"]
    assert context["started"][0].endswith(" UTC") and context["started"][0].startswith("20")
    assert context["host"][0].startswith(header["host"])
    assert context["command"][0] and context["CPU"][0].startswith(header["hardware"]["cpu"])
    assert context["GPUs"][0].startswith("gpu0: ")
    assert f"energy-callbacks {header['software']['energy-callbacks']}" in context["software"][0]
    assert "cpu0 (process-cpu-time-x-w-per-thread, estimated)" in context["devices measured"][0]
    runs = seen["runs"]
    total = show.energy_kwh(summary["metrics"]["energy/total_kwh"])
    assert runs["energy"] == [f"{total} (partly estimated)"]
    assert runs["CO2e"] == [show.mass(summary["metrics"]["carbon/co2e_kg"])]
    val = show.energy_kwh(summary["stage_kwh"]["val"])
    assert runs["of which not training"] == [f"validation {val}"]
    counter_lag_j = 2 * (BURST_W - GPU_W) * 0.01  # a burst's last counter period, counted in the validation after it
    assert summary["stage_kwh"]["val"] * J_PER_KWH == pytest.approx(3 * VAL_S * GPU_W, abs=counter_lag_j)
    assert "within a factor of about 2" in runs["estimated"][0] and runs["estimated"][0].startswith("cpu: ")
    assert runs["not counted"][0].startswith("dram (no readable RAPL DRAM domain")
    assert "CO2e at PUE 1.1 (hyperscale)" in seen["elsewhere"]
    assert "CO2e at PUE 1.58 (industry average)" in seen["elsewhere"]
    assert "CO2e against training time (co2e_vs_time.png)" in seen["captions"]
    assert "Energy by device against training time (energy_by_device.png)" in seen["captions"]
    assert json.dumps(seen).count("e-0") == 0  # no figure in exponent notation anywhere on the page
