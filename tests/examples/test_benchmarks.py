"""The benchmark scripts run to their verdict lines, each at its smallest size (in the slow run, .ci/run).

Their figures are recorded in docs/benchmarks.md from full-size runs; here only that each one still
runs against the library as it is now (a benchmark that breaks silently records nothing), and that the
figures it prints are numbers of the right kind.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, timeout: float = 300.0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_overhead_measures_the_hook_of_a_started_monitor() -> None:
    out = run("benchmarks.overhead", "--repeats", "0", "--interference-pairs", "0")
    median, p99 = map(float, re.search(r"hook: median ([\d.]+) us, p99 ([\d.]+) us", out).groups())
    assert 0 < median <= p99


def test_overhead_of_the_hf_callback_runs_beside_its_peers() -> None:
    out = run("benchmarks.overhead", "--framework", "hf", "--repeats", "1", "--interference-pairs", "0")
    assert re.search(r"work per logging step \(median of \d+\): EnergyCallback [\d.]+ us", out), out
    assert "median slowdown ratio:" in out


def test_accuracy_prints_coverage_and_tightness_for_every_path() -> None:
    out = run("benchmarks.accuracy", "--seconds", "15")
    for path in ("energy counter (Volta+)", "polled power, 1 s average", "polled power, instantaneous"):
        assert path in out
    assert "coverage >= 99% of windows and every total covered: PASS" in out
    assert re.search(r"mean 5 s window bound at most [\d.]+%", out), out


def test_cap_finder_replays_a_zeus_profile_and_follows_the_grid() -> None:
    out = run(
        "benchmarks.cap_finder", "--part", "both", "--profiles", "V100 resnet18 x2", "--slowdowns", "0.1",
        "--conditions", "quiet", "--steps", "1000",
    )  # fmt: skip
    assert out.count("| V100 resnet18 x2 |") == 2  # one row in the finder's table, one in the follower's
    assert "verdict:" in out


def test_memory_and_cpu_estimate_peers_run() -> None:
    out = run("benchmarks.memory", "--steps", "30000")  # the least past its 20,000-step warm-up
    assert re.search(r"RSS growth: [\d.]+ MB \(target < 5 MB\)", out), out
    out = run("benchmarks.cpu_estimate_peers", "--seconds", "3")
    assert re.search(r"\| energy-callbacks \(process tree CPU time\) \| [\d.]+ J", out), out


def test_accuracy_beside_peers_runs_on_the_simulated_board() -> None:
    out = run("benchmarks.accuracy_peers", "--seconds", "5", "--window", "1")
    assert re.search(r"ours: worst total error [\d.]+% \(target < 1%\), windows over their bound: ", out), out
