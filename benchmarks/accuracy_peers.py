"""Accuracy side by side with Zeus and CodeCarbon, on the same simulated GPU in real time.

    python -m benchmarks.accuracy_peers [--seconds 20] [--window 2]

accuracy.py runs on a virtual clock, which the peers cannot follow; here the simulated
NVML (tests/doubles/sim_nvml.py: mJ counter advancing every 100 ms, mW power as a 1 s average)
runs on the real clock, and three tools measure the same GPU over the same seconds:

* ours: the background `Sampler` at the default 0.1 s, energy at each window boundary
  from lazy marks (what `EnergyMonitor`/`EnergyCallback` do at a logging step);
* Zeus ``ZeusMonitor``: ``begin_window``/``end_window`` at each boundary (it reads the
  energy counter there; its CUDA synchronisation is a no-op, there is no CUDA device);
* CodeCarbon ``OfflineEmissionsTracker`` with default settings: ``start_task`` /
  ``stop_task`` at each boundary (its documented per-task API; GPU energy from the same
  counter). CodeCarbon reads a few more NVML queries (memory, temperature, utilisation,
  processes), answered here with fixed values, and looks for ``nvidia-smi``, which is
  reported present.

Each tool's window is compared with the exact integral between the times its own calls
were made. Install the peers first (``pip install zeus codecarbon``); a missing peer is
skipped with its reason. Prints the total and worst-window error per trace and tool; the
last line is the verdict for ours (target: total under 1%, window error within the
counter's period at each end).
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import pynvml

from energy_core import J_PER_KWH
from energy_core.devices import nvidia
from energy_core.sampling.sampler import Sampler
from tests.doubles.power_traces import Constant, Noisy, Ramp, Square
from tests.doubles.sim_nvml import SimGpu, SimNvml

TRACES = {
    "constant 300 W": lambda s: Constant(300.0),
    "square 100/400 W, 0.5 s": lambda s: Square(100.0, 400.0, 0.5),
    "square 100/400 W, 3 s": lambda s: Square(100.0, 400.0, 3.0),
    "ramp 60->500 W": lambda s: Ramp(60.0, 500.0, s),
    "noisy 250 +/- 120 W": lambda s: Noisy(250.0, 120.0),
}


class PeerSimNvml(SimNvml):
    """The simulation plus the read-only queries CodeCarbon makes besides energy and power."""

    def nvmlDeviceGetMemoryInfo(self, gpu):
        return SimpleNamespace(total=80 * 2**30, free=70 * 2**30, used=10 * 2**30)

    def nvmlDeviceGetTemperature(self, gpu, sensor):
        return 60

    def nvmlDeviceGetEnforcedPowerLimit(self, gpu):
        return self.limit_mw(gpu)

    def nvmlDeviceGetUtilizationRates(self, gpu):
        return SimpleNamespace(gpu=100, memory=50)

    def nvmlDeviceGetComputeMode(self, gpu):
        return 0

    def nvmlDeviceGetComputeRunningProcesses(self, gpu):
        return []

    nvmlDeviceGetGraphicsRunningProcesses = nvmlDeviceGetComputeRunningProcesses


def install(sim: SimNvml) -> None:
    """Swap every ``nvml*`` function of the simulation (the peers' extras included) into pynvml."""
    for name in dir(PeerSimNvml):
        if name.startswith("nvml"):
            setattr(pynvml, name, getattr(sim, name))


class Ours:
    name = "energy-callbacks"

    def __init__(self) -> None:
        sources, _ = nvidia.discover_gpus()
        self.sampler = Sampler(sources, 0.1)
        self.marks: list[float] = []

    def start(self) -> None:
        self.sampler.start()

    def boundary(self) -> tuple[float, float]:
        t = time.perf_counter()
        self.marks.append(t)
        return t, t

    def windows_j(self) -> list[float]:
        time.sleep(0.25)  # the samples after the last mark
        self.sampler.stop()
        values = [v[0][0] for v in self.sampler.buffer.energy_at(self.marks)]
        return [b - a for a, b in zip(values, values[1:])]


class Zeus:
    name = "Zeus ZeusMonitor"

    def __init__(self) -> None:
        import zeus.monitor.energy as energy

        energy.sync_execution_fn = lambda *args, **kwargs: None  # no CUDA device to wait for
        self.monitor = energy.ZeusMonitor(gpu_indices=[0], cpu_indices=[])
        self.k = 0
        self.joules: list[float] = []

    def start(self) -> None:
        pass

    def boundary(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        if self.k:
            self.joules.append(self.monitor.end_window(f"w{self.k - 1}").gpu_energy[0])
        self.monitor.begin_window(f"w{self.k}")
        self.k += 1
        return t0, time.perf_counter()

    def windows_j(self) -> list[float]:
        return self.joules


class CodeCarbon:
    name = "CodeCarbon tasks"

    def __init__(self) -> None:
        from codecarbon.core import gpu, gpu_nvidia

        gpu.is_nvidia_system = gpu_nvidia.is_nvidia_system = lambda: True  # it looks for nvidia-smi, absent here
        from codecarbon import OfflineEmissionsTracker

        self.tracker = OfflineEmissionsTracker(country_iso_code="FRA", save_to_file=False, log_level="error")
        self.k = 0
        self.joules: list[float] = []

    def start(self) -> None:
        self.tracker.start()

    def boundary(self) -> tuple[float, float]:
        t0 = time.perf_counter()
        if self.k:
            self.joules.append(self.tracker.stop_task().gpu_energy * J_PER_KWH)
        self.tracker.start_task(f"w{self.k}")
        self.k += 1
        return t0, time.perf_counter()

    def windows_j(self) -> list[float]:
        self.tracker.stop()
        return self.joules


PEERS: list[Callable[[], object]] = [Ours, Zeus, CodeCarbon]


def run(trace_name: str, seconds: float, window: float) -> dict[str, tuple[float, float]]:
    """{tool: (total error %, worst window error %)} for one trace, and ``"bound"``: the
    worst window error that one counter period at each end of a window can cause."""
    gpu = SimGpu("GPU-bench", TRACES[trace_name](seconds), counter_period_s=0.1)
    sim = PeerSimNvml([gpu])
    install(sim)
    sim.nvmlInit()
    tools, skipped = [], {}
    for make in PEERS:
        try:
            tools.append(make())
        except Exception as error:  # noqa: BLE001 - a peer not installed or unable to run here
            skipped[getattr(make, "name", make.__name__)] = f"{type(error).__name__}: {error}"
    for tool in tools:
        tool.start()
    time.sleep(0.3)
    times: dict[str, list[tuple[float, float]]] = {t.name: [] for t in tools}
    jitter = random.Random(0)  # logging steps do not fall on the counter's update grid
    due = time.perf_counter()
    for _ in range(int(seconds / window) + 1):
        time.sleep(max(0.0, due - time.perf_counter()))
        due += window * jitter.uniform(0.9, 1.1)
        for tool in tools:
            times[tool.name].append(tool.boundary())
    errors: dict[str, tuple[float, float]] = {}
    for tool in tools:
        got = tool.windows_j()
        calls = times[tool.name]
        exact = [sim.exact_joules(gpu, (a0 + a1) / 2, (b0 + b1) / 2) for (a0, a1), (b0, b1) in zip(calls, calls[1:])]
        total = 100 * (sum(got) - sum(exact)) / sum(exact)
        worst = max(100 * abs(g - e) / e for g, e in zip(got, exact))
        errors[tool.name] = (total, worst)
    peak_w = max(gpu.trace.power(t / 1000) for t in range(int(1000 * (seconds + 2))))
    errors["bound"] = (0.0, max(100 * 2 * gpu.counter_period_s * peak_w / e for e in exact))
    for name, why in skipped.items():
        errors[name] = (float("nan"), float("nan"))
        print(f"  skipped {name}: {why}")
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=2.0)
    parser.add_argument("--trace", choices=list(TRACES), help=argparse.SUPPRESS)  # one trace, in a child process
    args = parser.parse_args()
    if args.trace:  # peers keep NVML handles for the process's life: a fresh process per trace
        print(json.dumps(run(args.trace, args.seconds, args.window)))
        return
    print(f"{args.seconds:g} s per trace in real time, windows of {args.window:g} s (+-10%), counter period 100 ms")
    print(f"{'trace':<26} " + " ".join(f"{p.name + ' total / window %':>40}" for p in PEERS))
    worst_total, over_bound = 0.0, []
    for trace_name in TRACES:
        child = subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.accuracy_peers",
                "--trace",
                trace_name,
                "--seconds",
                str(args.seconds),
                "--window",
                str(args.window),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        lines = child.stdout.rstrip().splitlines()  # rstrip: a first line "  skipped ..." keeps its indent
        for line in lines[:-1]:
            if line.startswith("  skipped"):
                print(line)
        errors = json.loads(lines[-1])
        cells = [f"{errors[p.name][0]:+8.3f} / {errors[p.name][1]:7.3f}" for p in PEERS]
        print(f"{trace_name:<26} " + " ".join(f"{c:>40}" for c in cells))
        worst_total = max(worst_total, abs(errors[Ours.name][0]))
        print(f"{'':<26} bound on a window from the counter period: {errors['bound'][1]:.1f}%")
        if errors[Ours.name][1] > errors["bound"][1]:
            over_bound.append(trace_name)
    verdict = "PASS" if worst_total < 1.0 and not over_bound else "FAIL"
    print(
        f"ours: worst total error {worst_total:.3f}% (target < 1%), windows over their bound: "
        f"{', '.join(over_bound) or 'none'}: {verdict}"
    )


if __name__ == "__main__":
    main()
