"""EnergyCallback: energy, power, throughput and CO2e for the Hugging Face Trainer."""

from __future__ import annotations

import math
import sys
import weakref
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments
from typing_extensions import Unpack

from energy_core.integration import (
    EnergyTracker,
    HasMonitorRun,
    MeasureArgs,
    MeasureOptions,
    MonitorRun,
    Notice,
    checks,
    scalar_losses,
)
from hf_energy.framework import emit, ranks_of, shape_notices, speaks, stage_ranks, stored_attributes
from hf_energy.registry import LogContributor

INFERENCE = "inference"  # provisional stage name: eval or predict is known only at the end


class EnergyCallback(HasMonitorRun, LogContributor, TrainerCallback, ExportableState):
    """Logs energy, power, throughput, energy per sample/token and CO2e in HF Trainer runs.

    Figures are added to the Trainer's own log calls (every ``logging_steps`` and at each
    epoch end), so they reach ``trainer.state.log_history`` and every ``report_to``
    integration (TensorBoard, W&B, MLflow, ...) **when the callback is attached with**
    `hf_energy.attach` (the HF Trainer runs user callbacks after the integrations, so a
    callback alone cannot add to what they log; without `attach` the figures reach
    ``log_history`` only, and a warning says so).

    Samples and tokens are counted per micro-batch by a forward pre-hook on the model
    (the non-zero entries of ``attention_mask``, an int64 sum without device synchronisation,
    else ``input_ids.numel()``); a step is an optimizer update. Evaluation and prediction energy are kept apart.

    Args:
        summary: Print a short summary when training ends.
        **measure: The measurement arguments of `energy_core.MeasureOptions`:
            ``devices``, ``sample_interval_s``, ``country``, ``region``,
            ``cloud_provider``, ``cloud_region``, ``carbon_intensity_g_per_kwh``, ``pue``,
            ``record_path`` (written by world process zero), ``cpu_tdp_w``,
            ``carbon_intensity_series``, ``electricity_maps_zone``, ``price_per_kwh``, ``currency``.

    Raises:
        TypeError, ValueError: naming the argument, for any invalid value.

    Logged metrics: ``energy/step_j``, ``energy/total_kwh``, ``energy/{gpu,cpu,dram}_kwh``,
    ``power/total_w``, ``power/gpu{i}_w``, ``throughput/samples_per_s``,
    ``throughput/tokens_per_s``, ``efficiency/j_per_sample``, ``efficiency/j_per_token``,
    ``carbon/co2e_kg``, ``carbon/intensity_g_per_kwh``, ``cost/total`` (with ``price_per_kwh``);
    ``energy/epoch_kwh`` at epoch ends; ``energy/val_kwh`` with the evaluation metrics; ``energy/predict_kwh`` after
    ``trainer.predict``. W&B and TensorBoard show them under ``train/``.

    Examples:
        >>> from transformers import Trainer
        >>> from hf_energy import EnergyCallback, attach
        >>> trainer = Trainer(model=model, args=args, train_dataset=data)   # doctest: +SKIP
        >>> energy = attach(trainer, EnergyCallback(country="FRA"))         # doctest: +SKIP
        >>> trainer.train()                                                 # doctest: +SKIP
    """

    def __init__(self, *, summary: bool = True, **measure: Unpack[MeasureArgs]) -> None:
        self.summary = checks.boolean("summary", summary)
        self.run = MonitorRun(EnergyTracker(MeasureOptions.of("EnergyCallback", dict(measure))), self._show)
        self._hook: Any = None
        self._hooked: weakref.ref[Any] | None = None  # the model the hook is on
        self._pending: dict[str, float] = {}
        self._last_logged_step = -1
        self._world_zero = True
        self._log_due = False  # the Trainer logs at this step on every rank (its flow asked; a window may be taken)
        self._trains_alone = True  # the Trainer is not parallel (each process trains and evaluates on its own)

    def _show(self, notices: list[Notice]) -> None:
        emit(notices, self._world_zero)

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: constructor args and the totals, stored in ``trainer_state.json``."""
        args = {**self.tracker.options.as_args(), "summary": self.summary}
        return {"args": args, "attributes": {"energy_state": self.tracker.state_dict()}}

    @property
    def energy_state(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    @energy_state.setter
    def energy_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self.tracker.load_state_dict(value)

    def _restore_from(self, state: TrainerState, own_share: bool) -> None:
        """Continue the totals found in a resumed ``trainer_state.json``.

        HF restores callback state only with ``restore_callback_states_from_checkpoint``;
        the totals are restored here in either case, from the same JSON.
        """
        saved = stored_attributes(state, type(self).__name__).get("energy_state")
        if saved:
            self.tracker.load_state_dict(saved, own_share=own_share)

    # ------------------------------------------------------------------ counting
    def _on_forward(self, module: Any, args: tuple, kwargs: dict) -> None:
        """Forward pre-hook: count a training micro-batch, or note that inference began."""
        if module.training:
            self.run.count(kwargs if kwargs else args)
        elif not self.tracker.in_stage(INFERENCE) and self._trainer_running():
            ranks = None
            if not self.tracker.fitting and not self.tracker.joined and self.trainer is not None:
                self._trains_alone = self.trainer.args.world_size <= 1
                ranks = stage_ranks(self.trainer.args)  # before any train(): the job is found here
            elif not self.tracker.fitting and self._trains_alone:  # each process evaluates on its own, if at all
                self.tracker.ranks = self.tracker.ranks.alone()
            self.run.stage_start(INFERENCE, ranks)

    def _trainer_running(self) -> bool:
        """Whether a forward comes from the Trainer: attached, only inside its train/evaluate/predict
        (a forward of the user's own, ``generate()`` after training, would open a run nothing ends)."""
        registry = self.registry
        return registry is None or not registry.attached or registry.running > 0

    def _hook_model(self, model: Any) -> None:
        """Count on ``model`` (once; a new model, as ``model_init`` gives each ``train()``, moves the hook)."""
        if model is None or not hasattr(model, "register_forward_pre_hook"):
            return
        if self._hook is not None and self._hooked is not None and self._hooked() is model:
            return
        self._unhook_model()
        self._hook = model.register_forward_pre_hook(self._on_forward, with_kwargs=True)
        self._hooked = weakref.ref(model)

    def _unhook_model(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
            self._hooked = None

    def watch_model(self, model: Any) -> None:
        """The attached Trainer's ``evaluate()`` or ``predict()`` begins on ``model``: measured, even
        before any ``train()``."""
        self._hook_model(model)

    # ------------------------------------------------------------------ figures into logs
    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        """Add the energy figures due at this log call to ``logs`` (and return them)."""
        metrics: dict[str, float] = {}
        if any(k.startswith("eval_") for k in logs) and self.tracker.in_stage(INFERENCE):
            metrics.update(self._end_inference("val", state))
        if self.tracker.fitting and (self._log_due or not self.tracker.ranks.distributed):
            # In a job a window is a collective: only at the logs every rank makes (the Trainer's logging steps
            # and epoch ends), never at a log of the user's on one rank (``trainer.log`` on world process zero).
            metrics.update(self.run.window(state.global_step, extra=scalar_losses(logs)))
            self._log_due = False
            self._last_logged_step = state.global_step
        metrics.update(self._pending)
        self._pending = {}
        logs.update(metrics)
        return metrics

    def _end_inference(self, stage: str, state: TrainerState) -> dict[str, float]:
        figures = self.run.stage_end(stage, state.global_step, started_as=INFERENCE)
        if not self.tracker.fitting:  # a standalone evaluate()/predict(): stop the sampler again
            self.run.close()
        return figures

    def withdraw(self) -> None:
        if self.tracker.fitting:
            self.run.close()

    def abort(self, step: int, status: str) -> None:
        """Training ended by an exception (`attach` sees it leave ``train()``): the record's summary
        with ``status``, this process's own figures (the other ranks may not be here), sampler stopped."""
        sampler = self.tracker.meter.sampler
        if self.tracker.fitting and sampler is not None and sampler.running:  # not withdrawn already
            self.run.finish(step, status, collective=False)
        self.run.close()

    def left_open(self) -> bool:
        return self.tracker.fitting

    def abort_inference(self, stage: str, step: int, status: str) -> None:
        """The attached Trainer's ``evaluate()``/``predict()`` outside a fit ended by an exception: the run of
        its own that it began ends (its ``stage`` line, a summary with ``status``), sampler stopped, so that a
        later ``evaluate()`` or ``train()`` measures afresh. Inside a fit, ``train()``'s `abort` ends it."""
        if self.tracker.fitting or not self.tracker.in_stage(INFERENCE):
            return  # during train(); or no forward yet, or ended already (on_evaluate): nothing open
        try:
            self.run.stage_end(stage, step, started_as=INFERENCE, status=status, collective=False)  # one rank's error
        finally:
            self.run.close()

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.begin(kwargs.get("model"), state)
        ranks = ranks_of(args)
        self._trains_alone = args.world_size <= 1
        self._world_zero = speaks(state, ranks)
        self._restore_from(state, own_share=ranks.leads_job)
        settings = {
            "max_steps": state.max_steps,
            "num_train_epochs": args.num_train_epochs,
            "logging_steps": args.logging_steps,
            "world_size": ranks.world_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps,
        }
        self._last_logged_step = state.global_step
        self._log_due = False
        self.run.start(
            ranks,
            state.global_step,
            resumed=state.global_step > 0,
            wandb_runs=self._wandb_runs(args, state),
            step_metric="train/global_step",  # HF's WandbCallback prefixes train/ and steps on train/global_step
            prefix="train/",
            framework="transformers",
            trainer=settings,
        )
        self._show(shape_notices(args, ranks))
        self._hook_model(kwargs.get("model"))
        return control

    @staticmethod
    def _wandb_runs(args: TrainingArguments, state: TrainerState) -> list[Any]:
        """The active W&B run when ``report_to`` includes wandb, on world process zero."""
        if not state.is_world_process_zero or "wandb" not in (args.report_to or []):
            return []
        wandb = sys.modules.get("wandb")
        run = getattr(wandb, "run", None) if wandb is not None else None
        return [run] if run is not None else []

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self.run.epoch_start(math.floor(round(state.epoch or 0.0, 6)))  # as epoch_index numbers its end
        return control

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # HF's flow, decided alike on every rank: the Trainer logs right after this hook
        self._log_due = self._log_due or (control.should_log and state.global_step > self._last_logged_step)
        return control

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        epoch = epoch_index(state.epoch)
        self._pending.update(self.run.epoch(state.global_step, epoch))
        if state.global_step > self._last_logged_step:
            control.should_log = True  # the Trainer logs right after this hook; we add to it
            self._log_due = True  # on every rank: each ends the epoch
        elif self.trainer is not None:
            self._log_due = True
            asked = control.should_log  # the Trainer's own epoch-end log (logging_strategy="epoch")
            self.trainer.log({})  # this step was logged already: a log line of its own
            control.should_log = asked  # Trainer.log cleared it: the Trainer's loss line would be lost
        return control

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.tracker.in_stage(INFERENCE):  # evaluation that logged no eval_ keys
            self._pending.update(self._end_inference("val", state))
        return control

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, metrics=None, **kwargs):
        if self.tracker.in_stage(INFERENCE):
            figures = self._end_inference("predict", state)
            if self.trainer is not None:
                self._pending.update(figures)
                self.trainer.log({})
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        metrics = self.run.finish(state.global_step, wandb_runs=self._wandb_runs(args, state), prefix="train/")
        if self.summary and metrics and self._world_zero:
            print(self.run.summary(metrics))
        self.run.close()
        return control


def epoch_index(epoch: float | None) -> int:
    """The 0-based index of the epoch that ends when HF's fractional ``state.epoch`` is ``epoch``: it is
    a whole number at a full epoch's end (``2.0``: epoch 1) and a fraction when ``max_steps`` ends an
    epoch early (``1.17``: epoch 1, not 0 as rounding would give)."""
    return max(0, math.ceil(round(epoch or 0.0, 6)) - 1)
