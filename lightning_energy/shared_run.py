"""SharedRunCallback: what a budget, a target and a time shift do alike in a Lightning fit.

Each is a callback around a core run (`energy_core.integration.SharedRun`: `BudgetRun`,
`TargetRun`, `TimeShiftRun`) that watches the `EnergyMonitor`'s tracker, or, without one, the
tracker of the first of them that measures alone (one sampler and one record per fit, and the
budget and the time shift see each other). The hooks that only hand the fit's life to that run
are written here once: fit start (bind), fit end and exceptions (finish with a status),
teardown (close) and the checkpoint state.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from energy_core.integration import EnergyTracker, SharedRun
from lightning_energy.framework import CALLBACK_BASES, emit, end_status, find_callback, override, ranks_of
from lightning_energy.monitor import EnergyMonitor

RunT = TypeVar("RunT", bound=SharedRun)  # not report.runs.Run: a budget, target or time shift run


class SharedRunCallback(Generic[RunT], *CALLBACK_BASES):  # type: ignore[misc]
    """A Lightning callback whose part in the run is ``self.run``, a `SharedRun`."""

    run: RunT

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        monitor = find_callback(trainer, EnergyMonitor)
        shared = monitor.tracker if monitor else self._measuring_alone(trainer)
        emit(self.run.bind(shared, ranks_of(trainer), trainer.global_step, resumed=trainer.ckpt_path is not None))

    def _measuring_alone(self, trainer: Any) -> EnergyTracker | None:
        """The tracker of the first budget, target or time shift before this one that measures alone in
        this fit (their ``on_fit_start`` ran first): shared as a monitor's would be."""
        for callback in trainer.callbacks:
            if callback is self:
                return None
            run = getattr(callback, "run", None) if isinstance(callback, SharedRunCallback) else None
            if run is not None and run.owns and run.tracker is not None and run.tracker.fitting:
                return run.tracker
        return None

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        emit(self.run.finish(trainer.global_step))

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        emit(self.run.finish(trainer.global_step, end_status(exception), collective=False))

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self.run.close()

    @override
    def state_dict(self) -> dict[str, Any]:
        return self.run.state_dict()

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run.load_state_dict(state_dict)
