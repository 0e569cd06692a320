"""The CPU estimate beside CodeCarbon's and carbontracker's, on the same run of this machine.

    python -m benchmarks.cpu_estimate_peers [--seconds 20]   # needs codecarbon (a dependency) and carbontracker

Where RAPL cannot be read (most cloud VMs, this one), every tool models CPU energy. All
three measure the same training loop (a torch MLP on one thread) in one process, at once:

* ours: `EnergyTracker(devices=["cpu"])`: W per busy thread x this process tree's CPU time;
* CodeCarbon 3.x, ``tracking_mode="machine"`` (its default: machine-wide load x its power
  figure) and ``"process"`` (the process's share of the load);
* carbontracker's CPU component (a TDP at 50% load where it cannot read RAPL).

Two scenarios: the machine idle but for the run, and the same run while another
process keeps one core busy (another user's job): an estimate that counts that process
charges it to the training run. Prints a Markdown table for docs/cpu_estimate.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from energy_core import J_PER_KWH, EnergyTracker


def train(seconds: float) -> int:
    """A CPU training loop (one thread) for about ``seconds``; returns the steps done."""
    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(256, 512), torch.randn(256, 1)
    steps, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        steps += 1
    return steps


@contextlib.contextmanager
def ours() -> Iterator[Callable[[], float]]:
    tracker = EnergyTracker(devices=["cpu"], carbon_intensity_g_per_kwh=400)
    tracker.start_fit(0)
    result: dict[str, float] = {}
    yield lambda: result["j"]
    result["j"] = tracker.end_fit(0)["energy/cpu_kwh"] * J_PER_KWH


@contextlib.contextmanager
def codecarbon(mode: str) -> Iterator[Callable[[], float]]:
    from codecarbon import EmissionsTracker

    tracker = EmissionsTracker(save_to_file=False, log_level="error", tracking_mode=mode, measure_power_secs=1)
    tracker.start()
    result: dict[str, float] = {}
    yield lambda: result["j"]
    tracker.stop()
    result["j"] = float(tracker.final_emissions_data.cpu_energy) * J_PER_KWH


@contextlib.contextmanager
def carbontracker() -> Iterator[Callable[[], float]]:
    from carbontracker.tracker import CarbonTracker

    tracker = CarbonTracker(epochs=2, components="cpu", monitor_epochs=2, verbose=0, log_dir=None,
                            update_interval=1)  # fmt: skip
    tracker.epoch_start()
    result: dict[str, float] = {}
    yield lambda: result["j"]
    tracker.epoch_end()
    result["j"] = float(tracker.tracker.total_energy_per_epoch().sum()) * J_PER_KWH
    tracker.stop()


TOOLS: dict[str, Callable[[], Any]] = {
    "energy-callbacks (process tree CPU time)": ours,
    "CodeCarbon, tracking_mode='machine'": lambda: codecarbon("machine"),
    "CodeCarbon, tracking_mode='process'": lambda: codecarbon("process"),
    "carbontracker": carbontracker,
}


def measure(seconds: float) -> dict[str, float | str]:
    """Run the loop once under every tool that can run here; joules each, or why not."""
    figures: dict[str, float | str] = {}
    with contextlib.ExitStack() as stack:
        readers = {}
        for name, tool in TOOLS.items():
            try:
                readers[name] = stack.enter_context(tool())
            except Exception as err:  # noqa: BLE001 - a peer not installed or unable to run here
                figures[name] = f"not run: {type(err).__name__}: {str(err)[:80]}"
        train(seconds)
    for name, read in readers.items():
        try:
            figures[name] = read()
        except Exception as err:  # noqa: BLE001 - a peer that fails to stop: its row says why
            figures[name] = f"failed: {type(err).__name__}: {str(err)[:80]}"
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    idle = measure(args.seconds)
    # Another user's job is not in this process tree: the shell starts it in the background
    # and exits, so it is re-parented to init (a plain Popen child would count as ours).
    started = subprocess.run(
        ["sh", "-c", f"{shlex.quote(sys.executable)} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    hog = int(started.stdout.strip())
    try:
        busy = measure(args.seconds)
    finally:
        os.kill(hog, signal.SIGKILL)
    print("| tool | CPU energy, machine otherwise idle | with another user's process on one core |\n|---|---|---|")
    for name in TOOLS:
        cells = [
            f"{v:,.0f} J ({v / args.seconds:.1f} W)" if isinstance(v, float) else v for v in (idle[name], busy[name])
        ]
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
