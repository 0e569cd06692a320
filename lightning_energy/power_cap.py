"""PowerCap: GPU power caps for a Lightning run, always restored."""

from __future__ import annotations

from typing import Any

from typing_extensions import Unpack

from energy_core.integration import CapArgs, EnergyTracker, Notice, PowerCapRun
from lightning_energy.framework import (
    CALLBACK_BASES,
    emit,
    find_callback,
    log,
    override,
    rank_zero_info,
    ranks_of,
)
from lightning_energy.monitor import EnergyMonitor


class PowerCap(*CALLBACK_BASES):  # type: ignore[misc]
    """Caps GPU power at train start and restores the previous limits on every way out.

    At fit start, the node's local rank 0 first restores limits that a killed run left
    behind (journal on disk), then sets each selected GPU's limit to ``watts``, or to
    ``fraction`` x its default limit, after checking the device's allowed range, and
    reads it back; every rank waits until the caps are in force and takes the same
    decision on errors. The previous limit (not the maximum) is put back at fit end, on an
    exception (Lightning's ``on_exception``), on SIGTERM/SIGINT, at interpreter exit, and
    by the next run or ``energy-report --restore-power-limits`` after a SIGKILL.

    With ``watts="auto"``, a few caps are profiled on the real training steps after a
    short warm-up and the one that uses least energy per step within ``max_slowdown``
    is kept (see `energy_core.power.CapFinder`).

    Args:
        watts: Cap in W per GPU, or ``"auto"``.
        fraction: Cap as a fraction of each GPU's default limit, in (0, 1].
        gpus: ``"all"`` or a list of visible GPU indices (the node's GPUs).
        strict: Raise PermissionError before training when limits cannot be set
            (default: one message saying how to grant permission, then train uncapped).
        max_slowdown: For ``watts="auto"``, the largest accepted rise in time per step.
        min_watts: For ``watts="auto"``, the lowest cap tried per GPU in W (default: the
            board's minimum limit).

    Raises:
        TypeError, ValueError: naming the argument and the allowed range, for both or
            neither of ``watts``/``fraction``, a fraction outside (0, 1], a cap outside a
            device's range or an unknown GPU index (the last two at fit start, before
            anything is changed).

    Logged metrics: ``power/cap_w`` (sum of the caps in force on the node's capped GPUs),
    also in every `EnergyMonitor` window while a cap is in force.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyMonitor, PowerCap
        >>> trainer = Trainer(callbacks=[EnergyMonitor(), PowerCap(fraction=0.8)])
    """

    def __init__(self, **cap: Unpack[CapArgs]) -> None:
        self.run = PowerCapRun(**cap)
        self._leader = False
        self._tracker: EnergyTracker | None = None

    def _publish(self, trainer: Any, metrics: dict[str, float] | None) -> None:
        self.run.publish(self._tracker)
        log(trainer, metrics or {})

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        ranks = ranks_of(trainer)
        self._leader = ranks.leads_node
        monitor = find_callback(trainer, EnergyMonitor)
        self._tracker = monitor.tracker if monitor is not None else None
        emit(self.run.start_on(ranks))
        self._publish(trainer, self.run.figures())
        if self.run.cap_w is not None:
            self.run.record(self._tracker, "applied")

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._leader and self.run.auto:  # every on_fit_start has run: a monitor's meter is running
            emit(self.run.start_search(self._tracker.meter if self._tracker is not None else None))

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._leader and self.run.finder is not None and not self.run.finder.done:
            metrics = self.run.on_step(trainer.global_step)
            if metrics:
                self._publish(trainer, metrics)
                if self.run.finder.done:
                    rank_zero_info(self.run.finder.summary())
                    self.run.record(self._tracker, "chosen")

    def _restore(self) -> None:
        if self._leader:
            for message in self.run.finish(self._tracker):
                emit([Notice("warn" if "failed" in message else "info", message)])

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._restore()

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._restore()

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._restore()
