"""energy-report plots and HTML: two runs compared, rendered in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from energy_core import EnergyTracker
from energy_core.report.cli import main
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import simulate
from tests.helpers.chromium import CHROMIUM_FLAGS, find_chromium, probe


def run_record(path: Path, watts: float) -> None:
    """A short fit at a known power, with a loss in every window."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        simulate(monkeypatch, "nvml", [SimGpu("GPU-1", Constant(watts), counter_period_s=0.02)])
        tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="DEU", record_path=path)
        tracker.start_fit(0)
        for step in range(1, 6):
            tracker.add_batch(__import__("torch").ones(8, 4))
            time.sleep(0.15)
            tracker.window(step, extra={"train_loss": 1.0 / step})
        tracker.end_fit(5)
        tracker.close()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, Path]:
    """Two runs' records, at 300 W and 200 W: written once, for every test of this file to report."""
    folder = tmp_path_factory.mktemp("records")
    uncapped, capped = folder / "uncapped.jsonl", folder / "capped.jsonl"
    run_record(uncapped, 300.0)
    run_record(capped, 200.0)
    return uncapped, capped


@pytest.fixture
def two_runs(tmp_path, written) -> tuple[Path, Path]:
    """The two records, copied into this test's folder."""
    copies = tmp_path / written[0].name, tmp_path / written[1].name
    for source, copy in zip(written, copies, strict=True):
        shutil.copyfile(source, copy)
    return copies


def test_plots_tables_and_regions(two_runs, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "uncapped" in text and "capped" in text and "the same energy elsewhere" in text
    assert "SWE/SE3" in text and "PUE 1.58" in text
    titles = {
        "energy_vs_step": "Energy against optimizer step",
        "energy_vs_time": "Energy against training time",
        "power_vs_step": "Power against optimizer step",
        "power_vs_time": "Power against training time",
        "loss_vs_kwh": "Loss against energy",
        "co2e_vs_time": "CO2e against training time",
    }
    page = (out / "report.html").read_text()
    for name, title in titles.items():
        png = out / f"{name}.png"
        assert png.stat().st_size > 5000
        assert Image.open(png).text["Title"] == title  # drawn above the axes and stored in the PNG
        assert f'alt="{title}"' in page and f"<figcaption>{title} ({name}.png)</figcaption>" in page
    assert page.count("data:image/png;base64,") == 6 and "uncapped" in page and "codecarbon" in page
    assert "http://" not in page and "https://" not in page  # self-contained


# Injected into a copy of the page (the page itself carries no test code): the first script
# collects errors (scripts, console.error, resources that fail to load), the last one
# measures the layout once the page has loaded and writes it into the DOM as JSON.
PROBE_HEAD = """<script>
window.__errors = [];
window.addEventListener("error", e => window.__errors.push(String(e.message || (e.target && e.target.src))), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
</script>"""
PROBE_BODY = """<pre id="probe"></pre><script>
window.addEventListener("load", () => {
  const box = el => {
    const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, width: r.width};
  };
  const align = el => (el ? getComputedStyle(el).textAlign : null);
  const scrolls = [...document.querySelectorAll(".scroll")];
  document.getElementById("probe").textContent = JSON.stringify({
    errors: window.__errors,
    viewport: window.innerWidth,
    page_width: document.documentElement.scrollWidth,
    figures: [...document.querySelectorAll("#plots figure")].map(box),
    tables_overflow: scrolls.filter(s => s.scrollWidth > s.clientWidth + 1).length,
    text_cell: align(document.querySelector("td:not(.num)")),
    number_cell: align(document.querySelector("td.num")),
    number_head: align(document.querySelector("th.num")),
    heading: align(document.querySelector("h1")),
  });
});
</script>"""


def layout(chromium: str, page: Path, width: int, tmp_path: Path) -> dict[str, Any]:
    """The page's layout in a window ``width`` px wide, measured by the probe scripts."""
    probed = tmp_path / f"probed-{width}.html"
    text = page.read_text(encoding="utf-8")
    text = text.replace("<head>", "<head>" + PROBE_HEAD, 1).replace("</body>", PROBE_BODY + "</body>", 1)
    probed.write_text(text, encoding="utf-8")
    return probe(chromium, probed.as_uri(), width, budget_ms=5000)


@pytest.mark.slow  # a page drawn and laid out in Chromium at one width: about 2 s
def test_laptop_layout_two_plots_side_by_side(two_runs, tmp_path) -> None:
    chromium = find_chromium()
    out = tmp_path / "report"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    seen = layout(chromium, out / "report.html", 1366, tmp_path)
    assert seen["errors"] == [] and seen["viewport"] == 1366
    assert seen["page_width"] <= 1366 and seen["tables_overflow"] == 0  # nothing scrolls sideways
    first, second = seen["figures"][:2]
    assert abs(first["top"] - second["top"]) < 1 and second["left"] >= first["right"]  # one row
    assert first["width"] >= 500 and second["right"] <= 1366
    assert len(seen["figures"]) == 6 and seen["figures"][2]["top"] > first["top"]  # then the next row
    assert (seen["text_cell"], seen["heading"]) == ("left", "left")
    assert (seen["number_cell"], seen["number_head"]) == ("right", "right")


@pytest.mark.slow  # a page drawn and laid out in Chromium at one width: about 2 s
def test_narrow_window_shows_one_plot_per_row(two_runs, tmp_path) -> None:
    chromium = find_chromium()
    out = tmp_path / "report"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    seen = layout(chromium, out / "report.html", 700, tmp_path)
    assert seen["errors"] == [] and seen["page_width"] <= 700
    lefts = {round(f["left"]) for f in seen["figures"]}
    assert len(lefts) == 1 and all(f["right"] <= 700 for f in seen["figures"])


def test_html_renders_in_headless_chromium(two_runs, tmp_path) -> None:
    chromium = find_chromium()
    out = tmp_path / "report"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    page = (out / "report.html").as_uri()
    profile = tempfile.mkdtemp()
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    sizes = re.findall(r'data-size="(\d+)x(\d+)"', dom)
    assert len(sizes) == 6 and all(int(w) > 100 and int(h) > 100 for w, h in sizes)  # every plot decoded
    shot = tmp_path / "page.png"
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1200,1600",
            f"--screenshot={shot}",
            page,
        ],
        capture_output=True,
        timeout=120,
    )
    pixels = Image.open(shot).convert("L")
    low, high = pixels.getextrema()
    assert high - low > 100  # not a blank page: text and plots were drawn
