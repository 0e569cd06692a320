"""energy-report plots and HTML: two runs compared, rendered in headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from energy_core import EnergyTracker
from energy_core.report import main
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def run_record(path, watts: float, sim_gpus) -> None:
    """A short fit at a known power, with a loss in every window."""
    sim_gpus(SimGpu("GPU-1", Constant(watts), counter_period_s=0.02))
    tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="DEU", record_path=path)
    tracker.start_fit(0)
    for step in range(1, 6):
        tracker.add_batch(__import__("torch").ones(8, 4))
        time.sleep(0.15)
        tracker.window(step, extra={"train_loss": 1.0 / step})
    tracker.end_fit(5)
    tracker.close()


@pytest.fixture
def two_runs(tmp_path, sim_gpus):
    uncapped, capped = tmp_path / "uncapped.jsonl", tmp_path / "capped.jsonl"
    run_record(uncapped, 300.0, sim_gpus)
    run_record(capped, 200.0, sim_gpus)
    return uncapped, capped


def test_plots_tables_and_regions(two_runs, tmp_path, capsys) -> None:
    out = tmp_path / "report"
    assert main([*map(str, two_runs), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "uncapped" in text and "capped" in text and "the same energy elsewhere" in text
    assert "SWE/SE3" in text and "industry average (1.58)" in text
    for name in ("energy_vs_step", "energy_vs_time", "power_vs_step", "power_vs_time", "loss_vs_kwh"):
        assert (out / f"{name}.png").stat().st_size > 5000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5 and "uncapped" in page and "codecarbon" in page


def test_html_renders_in_headless_chromium(two_runs, tmp_path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed (apt-get install chromium)")
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
    assert len(sizes) == 5 and all(int(w) > 100 and int(h) > 100 for w, h in sizes)  # every plot decoded
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
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    low, high = pixels.getextrema()
    assert high - low > 100  # not a blank page: text and plots were drawn
