"""EnergyToTargetCallback: what reaching an evaluation metric cost an HF Trainer run, and stopping there."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.training_args import TrainingArguments
from typing_extensions import Unpack

from energy_core.integration import HasTargetRun, TargetArgs, TargetRun
from hf_energy.callback import EnergyCallback
from hf_energy.framework import emit, logger, ranks_of, speaks
from hf_energy.registry import LogContributor, RunContributor

EVAL = "eval_"  # the prefix the HF Trainer gives every evaluation metric during training
SINGLE = "eval"  # the metric_key_prefix of a single eval dataset's entry (a dict's: eval_<name>)
RUNTIME = "_runtime"  # HF's speed metrics: every evaluate() log entry has <metric_key_prefix>_runtime


def entry_prefix(logs: dict[str, float]) -> str | None:
    """The ``metric_key_prefix`` of an evaluation's log entry: ``eval``, or ``eval_<name>`` for one
    dataset of a dict ``eval_dataset`` (HF logs one entry per dataset). HF names it in the entry's
    ``<prefix>_runtime``; the shortest one, since a metric of ``compute_metrics`` may end in
    ``_runtime`` too, under the prefix. None for an entry without one (not ``evaluate()``'s)."""
    found = [key[: -len(RUNTIME)] for key in logs if key.startswith(EVAL) and key.endswith(RUNTIME)]
    return min(found, key=len) if found else None


class EnergyToTargetCallback(HasTargetRun, RunContributor[TargetRun], TrainerCallback, ExportableState):
    """Logs the energy, CO2e and time an HF Trainer run took to reach an evaluation metric, and stops there.

    At every evaluation of the training (``eval_strategy``), it reads ``eval_<metric>``
    from the evaluation's metrics and what training has cost so far: since training
    started up to the end of that evaluation, every evaluation included (checkpoints
    resumed from too). The first evaluation whose value reaches ``target`` adds
    ``target/energy_kwh``, ``target/co2e_kg``, ``target/seconds`` and ``target/step`` to
    that evaluation's log entry, once, writes a ``target`` line to the run record and,
    with ``stop=True``, stops training there (``control.should_training_stop``, with
    ``should_save`` so the model that reached the target is saved).

    With ``min_gain_per_kwh``, every evaluation adds ``target/gain_per_kwh``, the metric's
    improvement per kWh over the last ``patience`` evaluations, and training stops when it
    falls below the limit (diminishing returns).

    Beside an `EnergyCallback` of the same Trainer it uses that callback's measurements;
    otherwise it measures itself with ``**measure``. Add it with `hf_energy.attach` so its
    figures join the evaluation's log entry before the ``report_to`` integrations see it.

    Args:
        metric: The evaluation metric, as the Trainer logs it (``"eval_accuracy"``) or
            without its prefix (``"accuracy"``), as for ``metric_for_best_model``; with a dict
            ``eval_dataset``, with the dataset's name (``"eval_val_accuracy"``): only that
            dataset's log entries are its evaluations.
        target: The value to reach (None: only ``min_gain_per_kwh``).
        mode: ``"max"`` (reached when the metric >= target) or ``"min"`` (<=).
        stop: Stop training at the evaluation that first reaches the target.
        min_gain_per_kwh: Stop when the metric improves by less than this per kWh over
            the last ``patience`` evaluations.
        patience: How many evaluations back the gain is measured from.
        **measure: As for `EnergyCallback`; used only when it measures itself.

    Raises:
        TypeError, ValueError: naming the argument (see `lightning_energy.EnergyToTarget`).

    Logged metrics: ``target/energy_kwh``, ``target/co2e_kg``, ``target/seconds``,
    ``target/step`` (once); ``target/gain_per_kwh`` (each evaluation, with ``min_gain_per_kwh``).

    Notes:
        The HF Trainer does not synchronise ``control`` across ranks: the decision is
        taken with an all-reduce every rank reaches, so all ranks stop together. A target
        reached before a resume is not reported again (its state is in
        ``trainer_state.json``).

    Examples:
        >>> from hf_energy import EnergyCallback, EnergyToTargetCallback, attach
        >>> attach(trainer, EnergyCallback(country="FRA"),
        ...        EnergyToTargetCallback("eval_loss", 2.0, mode="min"))   # doctest: +SKIP
    """

    def __init__(self, metric: str, target: float | None, **args: Unpack[TargetArgs]) -> None:
        self.run = TargetRun.from_args("EnergyToTargetCallback", metric, target, prefix=EVAL, **args)
        self.metric = self.run.rule.metric
        self.last_metrics: dict[str, float] = {}
        self._stop: str | None = None
        self._world_zero = True
        self._restored: dict[str, Any] | None = None
        self._datasets: dict[str, int] = {}  # the entry prefixes of a dict eval_dataset seen: the step first seen

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        """ExportableState: constructor args and the target's state, in ``trainer_state.json``."""
        return {"args": {"metric": self.metric, **self.run.args}, "attributes": {"target_state": self.target_state}}

    @property
    def target_state(self) -> dict[str, Any]:
        return self.run.state_dict()

    @target_state.setter
    def target_state(self, value: dict[str, Any]) -> None:  # called by HF's callback restore
        self._restored = dict(value or {})
        self.run.load_state_dict(self._restored)

    def _stored_state(self, state: TrainerState) -> dict[str, Any] | None:
        """This target's state in ``trainer_state.json`` (None if none): the newest entry stored with its
        metric and value. With several targets HF keeps a list per class that every checkpoint appends to
        (the first entries are the states at train start), so neither the first entry nor HF's own
        restore (which takes the first entries) is this target's latest."""
        callbacks: dict[str, Any] = state.stateful_callbacks or {}  # type: ignore[assignment]  # a dict in the JSON
        stored = callbacks.get(type(self).__name__)
        entries = stored if isinstance(stored, list) else [stored] if stored is not None else []
        mine = (self.metric, self.run.rule.target)
        found = [
            e for e in entries
            if isinstance(e, dict) and isinstance(e.get("args"), dict)
            and (e["args"].get("metric"), e["args"].get("target")) == mine
        ]  # fmt: skip
        if not found:
            return None
        attributes = found[-1].get("attributes", {})
        if not isinstance(attributes, dict):
            raise TypeError(f"stored target state: attributes must be a mapping, got {type(attributes).__name__}")
        return attributes.get("target_state", {})

    def same_job(self, other: LogContributor) -> bool:
        """Targets on different metrics or values keep their own evaluations, as in Lightning."""
        return isinstance(other, EnergyToTargetCallback) and (other.metric, other.run.rule.target) == (
            self.metric,
            self.run.rule.target,
        )

    # ------------------------------------------------------------------ the evaluation's log entry
    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        """At an evaluation's log call (every rank): the target's figures into that entry."""
        evaluated = [key for key in logs if key.startswith(EVAL)]
        if not evaluated or not self._watches(logs, state.global_step):  # a training log, or another dataset's
            return {}
        outcome = self.run.evaluate(state.global_step, logs.get(self.metric), logged=evaluated)
        emit(outcome.notices, self._world_zero)
        if outcome.stop is not None:
            self._stop = outcome.stop  # acted on in on_evaluate, which follows this log call
        logs.update(outcome.metrics)
        self.last_metrics.update(outcome.metrics)
        return outcome.metrics

    def _watches(self, logs: dict[str, float], step: int) -> bool:
        """Whether an evaluation's log entry is an evaluation of this target's metric.

        With a dict ``eval_dataset`` HF logs one entry per dataset, each under its prefix
        ``eval_<name>``: the entry of a dataset other than the metric's is not this target's
        evaluation (``eval_b_*`` for ``eval_a_loss``). The metric's dataset is the longest dataset
        prefix it starts with (``eval_val_ood`` rather than ``eval_val`` for ``eval_val_ood_loss``),
        among the attached Trainer's datasets, or else those of the entries seen: all of them from
        the second evaluation on. Until they are known, an entry that lacks the metric does not
        count. A single dataset's entry (``eval``) owns every metric no longer prefix seen owns (an
        extra ``evaluate(metric_key_prefix="eval_ood")`` beside it is not the target's on
        ``eval_score``), and where the metric starts with no dataset's prefix no entry can log it:
        every entry is a gap (said once).
        """
        prefix = entry_prefix(logs)
        if prefix is not None:
            self._datasets.setdefault(prefix, step)
        if self.metric in logs or prefix is None:
            return True
        names = getattr(self.trainer, "eval_dataset", None)
        if isinstance(names, dict):
            known = {f"{EVAL}{name}" for name in names} | {prefix}
        elif prefix == SINGLE or self._datasets[prefix] < step:  # (seen at an earlier evaluation: all were seen)
            known = {SINGLE} | set(self._datasets)
        else:
            return False
        owner = max((p for p in known if self.metric.startswith(p + "_")), key=len, default=None)
        return owner is None or owner == prefix

    # ------------------------------------------------------------------ hooks
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        registry = self.begin(kwargs.get("model"), state)
        ranks = ranks_of(args)
        self._world_zero = speaks(state, ranks)
        self._datasets = {}
        stored = self._stored_state(state)
        if stored is not None:  # this target's newest entry, even where HF restored a stale one
            self.run.load_state_dict(stored)
        elif self._restored is None:
            self.run.load_state_dict({})
        shared = registry.shared_tracker(EnergyCallback) if registry is not None else None
        emit(self.run.bind(shared, ranks, state.global_step, resumed=state.global_step > 0), self._world_zero)
        return control

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self._stop is not None:
            control.should_training_stop = True
            control.should_save = True
            if self._world_zero:
                logger.warning(self._stop)
            self._stop = None
        return control

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        emit(self.run.finish(state.global_step), self._world_zero)
        return control
