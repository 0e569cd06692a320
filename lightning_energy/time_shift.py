"""TimeShift: train a Lightning run while the grid is clean, and finish by the deadline."""

from __future__ import annotations

import os
from typing import Any

from typing_extensions import Unpack

from energy_core.integration import Notice, TimeShiftArgs, TimeShiftRun, checks
from lightning_energy.framework import act, emit, log, override, stopping
from lightning_energy.monitor import cadence
from lightning_energy.shared_run import SharedRunCallback

CHECKPOINT = "time_shift.ckpt"


class TimeShift(SharedRunCallback[TimeShiftRun]):
    """Pauses training while the grid is dirty (or waits, or exits to be requeued) and finishes by the deadline.

    From the intensity forecast, the run's length (its ``max_steps``/``max_epochs`` and the pace
    measured so far, planned again as it is measured; or ``expected_duration_s``) and the power
    measured (busy while training, idle while paused), it plans when to train with
    `energy_core.plan_time_shift` and carries the plan out at step boundaries: the per-step check
    is one clock read; a pause sleeps in the training loop while the sampler measures the idle
    power. In a multi-process run, global rank 0 decides at logging steps and every rank pauses
    with it.

    In ``"requeue"`` mode, at the end of a planned run it saves a checkpoint to
    ``checkpoint_path``, writes ``resume_at`` to the run record, says when to resume, ends
    training and exits with status 75 (EX_TEMPFAIL) once the fit has ended. Start the script again
    at ``resume_at`` with ``trainer.fit(model, ckpt_path=shift.resume_from)``: the plan carries on
    from the checkpoint, which is removed once the run completes.

    Beside an `EnergyMonitor` it uses the monitor's measurements and intensity; alone it measures
    with ``**measure``.

    Args:
        deadline: When training must be done: an aware datetime or an ISO 8601 string with its offset.
        mode: ``"pause"`` (default), ``"wait"`` or ``"requeue"``.
        forecast: A CSV series path or a list of ``(datetime, g_per_kwh)``; None: the run's own
            intensity (its ``carbon_intensity_series``, or Electricity Maps' forecast for its
            ``electricity_maps_zone``).
        expected_duration_s: Seconds of training the run needs (else predicted from the pace).
        idle_w: Power while paused, W (default: measured).
        resume_s: For ``"requeue"``: what a restart costs, s (default: measured).
        exit_code: The exit status after a requeue (default 75); None: only stop training.
        checkpoint_path: Where ``"requeue"`` saves its checkpoint (default ``time_shift.ckpt``).
        **measure: The measurement arguments, as for `EnergyMonitor`; used only without a monitor.

    Raises:
        TypeError, ValueError: naming the argument and the allowed range.

    Logged metrics: ``carbon/paused_s``, ``carbon/saved_kg``.

    Examples:
        >>> from lightning.pytorch import Trainer
        >>> from lightning_energy import EnergyMonitor, TimeShift
        >>> shift = TimeShift(deadline="2026-06-02T06:00:00+00:00", mode="pause")
        >>> trainer = Trainer(max_epochs=3, callbacks=[EnergyMonitor(electricity_maps_zone="DE"), shift])
    """

    def __init__(self, *, checkpoint_path: str | os.PathLike[str] = CHECKPOINT, **shift: Unpack[TimeShiftArgs]) -> None:
        self.run = TimeShiftRun.from_args("TimeShift", **shift)
        self.checkpoint_path = checks.file_path("checkpoint_path", checkpoint_path, optional=False)
        self._every = 1
        self._last_review = -1
        self._resumed_from: str | None = None

    @property
    def resume_from(self) -> str | None:
        """The requeue checkpoint to resume from, if one is waiting (for ``trainer.fit(ckpt_path=...)``)."""
        return self.checkpoint_path if os.path.isfile(self.checkpoint_path) else None

    @override
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._resumed_from = trainer.ckpt_path
        super().on_fit_start(trainer, pl_module)

    @override
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # After every callback's on_fit_start and the checkpoint's restore: the tracker runs, the state is back.
        self._every, decide_every = cadence(trainer)
        self._last_review = trainer.global_step
        emit(self.run.begin(trainer.global_step, trainer.estimated_stepping_batches, decide_every))
        if self.run.requeued_until is not None:
            self._requeue(trainer)
        elif self.run.started is not None:  # a budget spent during a wait at the start: no first step
            act(trainer, self.run.started.budget)

    @override
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        if self._every and step % self._every == 0 and step != self._last_review:
            self._last_review = step
            log(trainer, self.run.review(step))  # first: a plan it asks for is made at this logging step
        # one clock read, but at the end of a planned run (or a logging step that plans again); none where
        # training stops at this step
        action = None if stopping(trainer) else self.run.check(step)
        if action is not None and action.kind == "requeue":
            self._requeue(trainer)
        if action is not None:
            act(trainer, action.budget)  # a budget spent while paused: no step after the pause
        emit(self.run.pop_notices())

    def _requeue(self, trainer: Any) -> None:
        """Save the checkpoint (every rank takes part) and end training."""
        directory = os.path.dirname(os.path.abspath(self.checkpoint_path))
        os.makedirs(directory, exist_ok=True)
        trainer.save_checkpoint(self.checkpoint_path)
        trainer.should_stop = True
        emit(self.run.pop_notices())

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if self.run.tracker is not None:
            log(trainer, self.run.review(trainer.global_step))

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        super().on_fit_end(trainer, pl_module)
        done = self.run.requeued_until is None and not trainer.interrupted
        if done and trainer.is_global_zero and self._resumed_from and self.resume_from:
            if os.path.samefile(self._resumed_from, self.checkpoint_path):
                os.remove(self.checkpoint_path)  # the plan is carried out: nothing waits to be resumed
                emit([Notice("info", f"Time shift: done; removed the requeue checkpoint {self.checkpoint_path!r}.")])

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if not isinstance(exception, SystemExit):  # a requeue's exit ended the run already
            super().on_exception(trainer, pl_module, exception)

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        if stage == "fit" and self.run.exit_status is not None:
            status, self.run.exit_code = self.run.exit_status, None  # exit once
            raise SystemExit(status)  # requeued: Lightning ends the fit (every callback's on_exception), then exits
