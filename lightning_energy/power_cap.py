"""PowerCap: GPU power caps for a Lightning run, always restored."""

from __future__ import annotations

from typing import Any

from typing_extensions import Unpack

from energy_core.integration import CapArgs, PowerCapRun
from lightning_energy.framework import CALLBACK_BASES, emit, find_callback, log, override, ranks_of, run_before
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
        self.run = PowerCapRun.of("PowerCap", dict(cap))

    @override
    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        # First of all: its on_fit_start caps before the monitor's starts the record, whose header
        # lists the caps in force (the monitor, moving itself, moves only before epoch-end readers).
        run_before(trainer, self, CALLBACK_BASES)

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        # Before Lightning installs its signal handlers: they call the cap's, which restores
        # and then ends the process as the signal would. The search starts at the first step,
        # once a monitor's meter is running.
        monitor = find_callback(trainer, EnergyMonitor)
        tracker = monitor.tracker if monitor is not None else None
        emit(self.run.begin(ranks_of(trainer), tracker, trainer.estimated_stepping_batches))
        log(trainer, self.run.figures())

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        metrics, notices = self.run.step(trainer.global_step)
        log(trainer, metrics)
        emit(notices)

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        emit(self.run.finish())

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        emit(self.run.finish())

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        emit(self.run.finish())

    @override
    def state_dict(self) -> dict[str, Any]:
        """The cap search's measurements and choice: a resumed run does not search again."""
        return self.run.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run.load_state_dict(state_dict)
