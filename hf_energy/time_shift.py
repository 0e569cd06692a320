"""TimeShiftCallback: train an HF Trainer run while the grid is clean, and finish by the deadline."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments
from typing_extensions import Unpack

from energy_core.integration import TimeShiftArgs, TimeShiftRun
from hf_energy.budget import act
from hf_energy.callback import EnergyCallback
from hf_energy.framework import decision_every, emit, ranks_of, speaks, stored_attributes
from hf_energy.registry import RunContributor


class TimeShiftCallback(RunContributor[TimeShiftRun], TrainerCallback, ExportableState):
    """Pauses training while the grid is dirty (or waits, or exits to be requeued) and finishes by the deadline.

    The same plan and behaviour as `lightning_energy.TimeShift`: planned from the forecast, the
    run's ``max_steps`` and the pace measured so far (or ``expected_duration_s``) and the power
    measured; carried out at step boundaries (one clock read per step; a pause sleeps in the
    training loop). In a multi-process run, world process zero decides at logging steps and
    every rank pauses with it (HF does not synchronise ``control``: the decision is an all-reduce).

    In ``"requeue"`` mode, at the end of a planned run it sets ``control.should_save`` and
    ``control.should_training_stop`` (the Trainer saves ``checkpoint-<step>`` in ``output_dir``),
    writes ``resume_at`` to the run record, says when to resume, and once training has ended
    exits with status 75 (EX_TEMPFAIL). Start the script again at ``resume_at`` with
    ``trainer.train(resume_from_checkpoint=get_last_checkpoint(args.output_dir))``: the plan
    carries on from the checkpoint's ``trainer_state.json``.

    Beside an `EnergyCallback` of the same Trainer it uses that callback's measurements;
    otherwise it measures with ``**measure``.

    Args:
        deadline: When training must be done: an aware datetime or an ISO 8601 string with its offset.
        mode: ``"pause"`` (default), ``"wait"`` or ``"requeue"``.
        forecast: A CSV series path or a list of ``(datetime, g_per_kwh)``; None: the run's own intensity.
        expected_duration_s: Seconds of training the run needs (else predicted from the pace).
        idle_w: Power while paused, W (default: measured).
        resume_s: For ``"requeue"``: what a restart costs, s (default: measured).
        exit_code: The exit status after a requeue (default 75); None: only stop training.
        **measure: As for `EnergyCallback`; used only when it measures itself.

    Raises:
        TypeError, ValueError: naming the argument and the allowed range.

    Logged metrics: ``carbon/paused_s``, ``carbon/saved_kg`` (with `attach`).

    Examples:
        >>> from hf_energy import EnergyCallback, TimeShiftCallback, attach
        >>> shift = TimeShiftCallback(deadline="2026-06-02T06:00:00+00:00", mode="requeue")
        >>> attach(trainer, EnergyCallback(electricity_maps_zone="DE"), shift)   # doctest: +SKIP
    """

    order = 1  # after a budget at each step's end (`attach`): a stop there is no time to pause

    def __init__(self, **shift: Unpack[TimeShiftArgs]) -> None:
        self.run = TimeShiftRun.from_args("TimeShiftCallback", **shift)
        self.last_metrics: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._world_zero = True
        self._restored: dict[str, Any] | None = None
        self._begun = False

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: constructor args and the plan's progress, in ``trainer_state.json``."""
        return {"args": dict(self.run.args), "attributes": {"shift_state": self.shift_state}}

    @property
    def shift_state(self) -> dict[str, Any]:
        return self.run.state_dict()

    @shift_state.setter
    def shift_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self._restored = dict(value or {})
        self.run.load_state_dict(self._restored)

    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        added, self._pending = self._pending, {}
        logs.update(added)
        self.last_metrics.update(added)
        return added

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        registry = self.begin(kwargs.get("model"), state)
        ranks = ranks_of(args)
        self._world_zero = speaks(state, ranks)
        if self._restored is None:
            self.run.load_state_dict(stored_attributes(state, type(self).__name__).get("shift_state", {}))
        shared = registry.shared_tracker(EnergyCallback) if registry is not None else None
        notices = self.run.bind(shared, ranks, state.global_step, resumed=state.global_step > 0)
        emit(notices, self._world_zero)
        self._begun = False
        return control

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if not self._begun and self.run.tracker is not None and self.run.tracker.fitting:
            # After every callback's on_train_begin: a shared tracker runs, the resumed totals are in.
            self._begun = True
            every = decision_every(args, state)
            emit(self.run.begin(state.global_step, state.max_steps, every), self._world_zero)
            if self.run.started is not None:  # a budget spent during a wait at the start: training stops
                act(self.run.started.budget, control, self._world_zero)
            self._requeue_if_due(control)
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if control.should_log:  # a logging step, alike on every rank; first: a plan it asks for is made now
            self._pending.update(self.run.review(state.global_step))
        # one clock read, but at the end of a planned run (or a logging step that plans again); none where
        # training stops at this step
        action = None if control.should_training_stop else self.run.check(state.global_step)
        if action is not None:
            act(action.budget, control, self._world_zero)  # a budget spent while paused: no step after the pause
        self._requeue_if_due(control)
        emit(self.run.pop_notices(), self._world_zero)
        return control

    def _requeue_if_due(self, control: TrainerControl) -> None:
        if self.run.requeued_until is not None and not control.should_training_stop:
            control.should_save = True  # checkpoint-<step>, with this callback's state in it
            control.should_training_stop = True
            control.should_log = True

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.run.tracker is not None:
            self._pending.update(self.run.review(state.global_step))
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        emit(self.run.finish(state.global_step), self._world_zero)
        status = self.run.exit_status
        if status is not None:
            self.run.exit_code = None  # exit once
            for callback in self.registry.callbacks if self.registry is not None else []:
                if callback is not self:  # end the other energy callbacks first: they may come after this one
                    callback.on_train_end(args, state, control, **kwargs)  # type: ignore[attr-defined]
            raise SystemExit(status)  # requeued: the scheduler starts the script again at resume_at
        return control
