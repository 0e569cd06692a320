"""Overhead on the Lightning Trainer: the per-step hook, the sampler's interference, whole fits.

Run through `benchmarks.overhead` (see its docstring for what is measured and how).
"""

from __future__ import annotations

import statistics
import time
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.lightning_peers import DIAGNOSTIC_VARIANTS, LIGHTNING_VARIANTS
from benchmarks.stats import interleaved, median_ci, paired_ratios, verdict
from lightning_energy import EnergyMonitor


def started_monitor(sample_interval_s: float = 0.1) -> tuple[EnergyMonitor, SimpleNamespace]:
    """A real EnergyMonitor, started outside a fit (sampler running), and the stand-in
    trainer its hooks read (logging every 50 steps, as Lightning's default)."""
    monitor = EnergyMonitor(
        summary=False, progress_bar=False, carbon_intensity_g_per_kwh=400, sample_interval_s=sample_interval_s
    )
    trainer = SimpleNamespace(
        global_step=0,
        loggers=[],
        log_every_n_steps=50,
        is_global_zero=True,
        global_rank=0,
        local_rank=0,
        ckpt_path=None,
        max_epochs=1,
        max_steps=-1,
        world_size=1,
        callback_metrics={},
        callbacks=[monitor],
    )
    monitor.on_fit_start(trainer, None)
    return monitor, trainer


def hook_cost_us(n: int = 20000) -> tuple[float, float, float, float]:
    """(median, p99, mean, sampler CPU share) of the per-batch hook on a started monitor;
    the mean includes the logging step's work every 50 steps, amortised."""
    monitor, trainer = started_monitor()
    batch = (torch.randn(64, 32), torch.randn(64, 1))
    times = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for i in range(n):
        trainer.global_step = i + 1
        t0 = clock()
        monitor.on_train_batch_end(trainer, None, None, batch, i)
        times.append(clock() - t0)
    time.sleep(max(0.0, 3.0 - (time.perf_counter() - start)))  # let the sampler run a few seconds
    wall = time.perf_counter() - start
    sampler = monitor.tracker.meter.sampler
    cpu_share = sampler.thread_cpu_s / wall if sampler else 0.0
    monitor.tracker.end_fit(n)
    times.sort()
    return (
        statistics.median(times) / 1000,
        times[int(0.99 * len(times))] / 1000,
        statistics.mean(times) / 1000,
        cpu_share,
    )


def sampler_interference(
    pairs: int, interval_s: float = 0.1, block_s: float = 0.25
) -> tuple[float, tuple[float, float], float]:
    """How much the sampler thread slows the training thread, measured in one process.

    The training thread runs a Python-bound loop of small torch ops (like the kernel
    launches of a GPU training loop: dispatch, no heavy compute) in blocks of ``block_s``;
    blocks with the monitor's sampler running alternate with blocks without it (ABBA), so
    the machine's slow drifts cancel. Returns the median of the paired ratios (time per op
    with / without), its 95% bootstrap interval, and the sampler thread's CPU share."""
    monitor, _ = started_monitor(interval_s)
    sampler = monitor.tracker.meter.sampler
    sampler.stop()
    x = torch.zeros(16)

    def ops_per_s() -> float:
        n, end = 0, time.perf_counter() + block_s
        while time.perf_counter() < end:
            for _ in range(100):
                x.add_(1.0)
            n += 100
        return n / block_s

    ops_per_s()  # warm-up
    on: list[float] = []
    off: list[float] = []
    sampler_cpu = 0.0
    for i in range(pairs):
        for running in (False, True) if i % 2 == 0 else (True, False):
            if running:
                sampler.start()
                on.append(ops_per_s())
                sampler.stop()
                sampler_cpu += sampler.thread_cpu_s  # that thread's CPU time (thread_time is per thread)
            else:
                off.append(ops_per_s())
    monitor.tracker.end_fit(0)
    ratios = [without / with_ for with_, without in zip(on, off)]
    return statistics.median(ratios), median_ci(ratios), sampler_cpu / (pairs * block_s)


class Mlp(L.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


def step_seconds(width: int, batch: int = 64, n: int = 30) -> float:
    model = Mlp(width)
    opt = model.configure_optimizers()
    x, y = torch.randn(batch, width), torch.randn(batch, 1)
    for _ in range(5):
        nn.functional.mse_loss(model.net(x), y).backward()
    t0 = time.perf_counter()
    for _ in range(n):
        opt.zero_grad()
        nn.functional.mse_loss(model.net(x), y).backward()
        opt.step()
    return (time.perf_counter() - t0) / n


def calibrate(step_ms: float, loop_overhead_ms: float) -> int:
    """Width of the MLP whose Lightning step (compute + the loop's own cost) is about step_ms."""
    width = 8
    while (step_seconds(width) * 1000 + loop_overhead_ms) < step_ms and width < 16384:
        width = int(width * 1.1) + 1
    return width


class LoopTimer(L.Callback):
    """Steady-state loop time, from the start of batch `WARMUP` to the start of the last batch
    (every hook of the batches between included); start-up (train start to the first
    batch) apart. (Process CPU time was tried as a steadier measure: in this VM it equals
    wall time, stolen time included, so it resolves nothing more.)"""

    WARMUP = 10

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if batch_idx == 0:
            self.startup = now - self.start
        if batch_idx == self.WARMUP:
            self.t0 = now
        self.seconds = now - getattr(self, "t0", now)


def fit_seconds(width: int, steps: int, variant: str) -> tuple[float, float]:
    """(steady-state loop seconds, start-up seconds) of one fit (see `LoopTimer`)."""
    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(steps * 64, width), torch.randn(steps * 64, 1)), batch_size=64)
    timer = LoopTimer()
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer, *{**LIGHTNING_VARIANTS, **DIAGNOSTIC_VARIANTS}[variant]()],
    )
    trainer.fit(Mlp(width), data)
    return timer.seconds, timer.startup


def runnable_variants(wanted: list[str] | None = None) -> list[str]:
    """The variants that can run here (of ``wanted``, default all); a peer that cannot is
    skipped with its reason."""
    names = []
    for name, make in {**LIGHTNING_VARIANTS, **DIAGNOSTIC_VARIANTS}.items():
        if name in DIAGNOSTIC_VARIANTS and name not in (wanted or []):
            continue
        if wanted and name not in (*wanted, "none", "EnergyMonitor"):
            continue
        try:
            make()
        except Exception as err:  # noqa: BLE001 - a peer missing or unable to measure this machine
            print(f"skipped {name}: {type(err).__name__}: {str(err)[:120]}")
            continue
        names.append(name)
    return names


def run_lightning(args: Any) -> None:
    """The hook, the interference and the fits, with the verdict line last."""
    median_us, p99_us, mean_us, cpu_share = hook_cost_us()
    print(
        f"hook: median {median_us:.2f} us, p99 {p99_us:.2f} us, mean {mean_us:.2f} us per batch "
        f"(sampler thread CPU {100 * cpu_share:.2f}% of one core)"
    )
    interval = args.interference_interval
    interference = sampler_interference(args.interference_pairs, interval) if args.interference_pairs else None
    if interference:
        ratio, (low, high), share = interference
        print(
            f"sampler interference on a Python-bound training thread (sampling every {interval:g} s, "
            f"{args.interference_pairs} ABBA pairs of 0.25 s blocks): ratio {ratio:.4f} "
            f"(95% CI {low:.4f}-{high:.4f}), sampler thread CPU "
            f"{100 * share:.2f}% of one core"
        )
    if args.repeats == 0:  # the hook and the interference only
        return
    variants = runnable_variants(args.variants)
    fit_seconds(8, 50, "EnergyMonitor")  # warm-up: imports, data tables, first Trainer
    loop_ms = 1000 * fit_seconds(8, args.steps, "none")[0] / (args.steps - LoopTimer.WARMUP - 1) - 1000 * step_seconds(
        8
    )
    ratios = {}
    step_seconds_at: dict[float, float] = {}
    for step_ms in args.step_ms:
        width = calibrate(step_ms, loop_ms)
        steps = max(50, int(args.steps * 5 / max(step_ms, 5)))  # long steps: fewer of them
        times, startup = interleaved(variants, args.repeats, lambda name, w=width, n=steps: fit_seconds(w, n, name))
        base = statistics.median(times["none"])
        step_seconds_at[step_ms] = base / (steps - LoopTimer.WARMUP - 1)
        print(
            f"{step_ms:g} ms target (MLP width {width}, {1000 * base / (steps - LoopTimer.WARMUP - 1):.2f} ms/step "
            f"measured, {steps} steps, "
            f"{args.repeats} interleaved rounds):"
        )
        for name in variants:
            pairs = paired_ratios(times, name)
            low, high = median_ci(pairs)
            print(
                f"  {name:<28} {statistics.median(times[name]):7.3f} s  "
                f"median paired ratio {statistics.median(pairs):.4f} "
                f"(95% CI {low:.4f}-{high:.4f}; range {min(pairs):.3f}-{max(pairs):.3f}), fastest-run ratio "
                f"{min(times[name]) / min(times['none']):.4f}, "
                f"start-up +{1000 * (statistics.median(startup[name]) - statistics.median(startup['none'])):.0f} ms"
            )
        pairs = paired_ratios(times, "EnergyMonitor")
        ratios[step_ms] = (statistics.median(pairs), median_ci(pairs))
    step_ms = 5.0 if 5.0 in ratios else next(iter(ratios))
    ratio, ci = ratios[step_ms]
    result = "FAIL" if median_us > 20 else verdict(ci)
    line = (
        f"median slowdown ratio: {ratio:.4f} (95% CI {ci[0]:.4f}-{ci[1]:.4f}; target <= 1.01), hook median "
        f"{median_us:.2f} us (target <= 20): {result}"
    )
    if interference:
        # the parts of our cost measured above, for comparison; not a verdict: the parts
        # need not be all of it (see docs/benchmarks.md)
        hook_share = mean_us / (1e6 * step_seconds_at[step_ms])
        print(
            f"measured parts at {1000 * step_seconds_at[step_ms]:.2f} ms steps: hook {100 * hook_share:.3f}% "
            f"(mean {mean_us:.2f} us, logging steps amortised) + sampler interference "
            f"{100 * (interference[0] - 1):.2f}% (95% CI {100 * (interference[1][0] - 1):.2f} to "
            f"{100 * (interference[1][1] - 1):.2f}%)"
        )
    print(line)
