"""The Lightning callbacks timed by the overhead benchmark: ours, the peers, and diagnostics.

A peer that is not installed, or cannot measure this machine, raises when built: the
benchmark skips it with the reason.
"""

from __future__ import annotations

import lightning.pytorch as L

from lightning_energy import EnergyMonitor


class CodeCarbonFlush(L.Callback):
    """CodeCarbon used for per-step figures: start/stop, plus flush() every logging step."""

    def __init__(self, flush: bool) -> None:
        from codecarbon import EmissionsTracker

        self.flush, self.tracker = flush, EmissionsTracker(save_to_file=False, log_level="error")

    def on_train_start(self, trainer, pl_module) -> None:
        self.tracker.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.flush and trainer.global_step % trainer.log_every_n_steps == 0:
            self.tracker.flush()

    def on_train_end(self, trainer, pl_module) -> None:
        self.tracker.stop()


class CarbonTrackerEpochs(L.Callback):
    """carbontracker's epoch API (it predicts after the first epoch and measures epochs)."""

    def __init__(self) -> None:
        from carbontracker.tracker import CarbonTracker

        self.tracker = CarbonTracker(epochs=1, monitor_epochs=-1, verbose=0, log_dir=None)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.tracker.epoch_start()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.tracker.epoch_end()

    def on_train_end(self, trainer, pl_module) -> None:
        self.tracker.stop()


class ZeusPerStep(L.Callback):
    """Zeus's ZeusMonitor with a measurement window around every step."""

    def __init__(self) -> None:
        from zeus.monitor import ZeusMonitor

        self.monitor = ZeusMonitor()
        if not self.monitor.gpu_indices and not getattr(self.monitor, "cpu_indices", None):
            raise RuntimeError("ZeusMonitor found no GPU and no readable RAPL CPU here: it would measure nothing")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.monitor.begin_window("step", sync_execution=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.monitor.end_window("step", sync_execution=False)


LIGHTNING_VARIANTS = {
    "none": lambda: [],
    "EnergyMonitor": lambda: [EnergyMonitor(summary=False, carbon_intensity_g_per_kwh=400)],
    "CodeCarbon flush() per log": lambda: [CodeCarbonFlush(flush=True)],
    "CodeCarbon start/stop only": lambda: [CodeCarbonFlush(flush=False)],
    "carbontracker epoch API": lambda: [CarbonTrackerEpochs()],
    "Zeus window per step": lambda: [ZeusPerStep()],
}


class SamplerAlone(L.Callback):
    """Diagnostic: our background sampler (the CPU estimate here), without the monitor."""

    def on_train_start(self, trainer, pl_module) -> None:
        from energy_core.devices.cpu_estimate import estimate_cpu
        from energy_core.sampling.sampler import Sampler

        self.sampler = Sampler([estimate_cpu()[0]], 0.1)
        self.sampler.start()

    def on_train_end(self, trainer, pl_module) -> None:
        self.sampler.stop()


class EmptyHooks(L.Callback):
    """Diagnostic: a callback with the per-step hooks EnergyMonitor has, doing nothing."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        pass

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pass


# Diagnostics that isolate parts of EnergyMonitor's cost; timed only when named in --variants.
DIAGNOSTIC_VARIANTS = {
    "EnergyMonitor, sampler idle": lambda: [
        EnergyMonitor(summary=False, carbon_intensity_g_per_kwh=400, sample_interval_s=60)
    ],
    "Sampler alone": lambda: [SamplerAlone()],
    "empty hooks": lambda: [EmptyHooks()],
}
