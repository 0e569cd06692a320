"""The energy callbacks of one HF Trainer, and the one way their figures enter its logs.

The HF Trainer runs user callbacks after the ``report_to`` integrations, and ``Trainer.log``
appends to ``log_history`` before any ``on_log`` runs: a callback that adds figures in
``on_log`` reaches neither. So:

* `attach` wraps that Trainer instance's ``log`` (the method HF documents for overriding):
  every `LogContributor` of the trainer adds its figures *before* ``log_history`` and the
  integrations see the call. This is the supported path.
* Without `attach` (``callbacks=[...]``), each contributor adds its figures in ``on_log`` to
  the last ``log_history`` entry only, and says once that the integrations miss them.

`EnergyCallbacks` is the registry of one Trainer's energy callbacks. It is found by the
Trainer's model, which every hook receives, so a budget or a cap finds the trainer's
`EnergyCallback` (and shares its sampler) however the callbacks were added.

One of each class per Trainer (targets aside: one per metric), and each once: a callback given
twice, or a second of its class, would count every batch twice or print a second, different
summary of one run. The Trainer's construction (``callbacks=[...]``), `attach` and
``on_train_begin`` (a callback added with ``add_callback``) refuse it before any figure, with
one message (`energy_core.checks.one_per_trainer`).

A resume with ``restore_callback_states_from_checkpoint=True`` re-creates every stateful
callback from the checkpoint and drops the ones given: the registry answers with the
callbacks the Trainer runs, never a dropped one (whose tracker would never start). With
`attach` it looks in the Trainer's own list; without, it prefers the callbacks that
began the latest training (each calls `LogContributor.begin` in ``on_train_begin``, which
a dropped callback never receives), so a lookup is right once every ``on_train_begin``
has run (``on_step_begin``).
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar
from weakref import WeakKeyDictionary, WeakSet

from transformers.trainer_callback import TrainerControl, TrainerState
from transformers.training_args import TrainingArguments

from energy_core.integration import UNREPORTED_END, SharedRun, checks, end_status, warn_at_user_code

T = TypeVar("T")
CALLBACKS = "EnergyCallback, EnergyBudgetCallback, PowerCapCallback, EnergyToTargetCallback or TimeShiftCallback"


class EnergyCallbacks:
    """The energy callbacks of one Trainer.

    Attributes:
        callbacks: The registered contributors, in registration order.
        trainer: The Trainer whose ``log`` `attach` wrapped, or None (not attached).
    """

    _by_model: WeakKeyDictionary[Any, EnergyCallbacks] = WeakKeyDictionary()
    _training_now: WeakSet[EnergyCallbacks] = WeakSet()  # the registries whose latest training began, per thread

    def __init__(self) -> None:
        self.callbacks: list[LogContributor] = []
        self.trainer: Any = None
        self._training: TrainerState | None = None  # the state of the latest training begun
        self._begun: list[LogContributor] = []  # the callbacks that began it
        self._built: TrainerState | None = None  # the state of the latest Trainer constructed
        self._given: list[LogContributor] = []  # its callbacks, as on_init_end met them
        self.running = 0  # how many of the attached Trainer's train/evaluate/predict calls are under way
        self._thread: int | None = None  # the thread that began the latest training
        self._pid = os.getpid()  # the process that began it (a forked child inherits the registry, not the run)

    @classmethod
    def of(cls, model: Any) -> EnergyCallbacks | None:
        """The registry of the Trainer training ``model`` (made on first use)."""
        if model is None:
            return None
        registry = cls._by_model.get(model)
        if registry is None:
            registry = cls._by_model[model] = cls()
        return registry

    def add(self, callback: LogContributor) -> None:
        if callback not in self.callbacks:
            self.callbacks.append(callback)
        callback.registry = self

    def given(self, callback: LogContributor, state: TrainerState) -> None:
        """``callback`` is one of the callbacks of the Trainer being constructed (``on_init_end``).

        Raises:
            ValueError: it was given twice, or with another of its class doing its job.
        """
        self.add(callback)
        if state is not self._built:
            self._built, self._given = state, []
        refuse_duplicate(callback, self._given)
        self._given.append(callback)

    def begin(self, callback: LogContributor, state: TrainerState) -> None:
        """``callback`` began the training whose state is ``state`` (HF makes one per ``train()``).

        Raises:
            ValueError: it began it twice, or another of its class doing its job did.
        """
        self.add(callback)
        if state is not self._training:
            here = threading.get_ident()
            EnergyCallbacks._end_left_open(lambda r: r._thread == here and not _in_train(r._training), also=self)
            self._training, self._begun, self._thread, self._pid = state, [], here, os.getpid()
            EnergyCallbacks._training_now.add(self)
            _end_at_exit_once()
        try:
            refuse_duplicate(callback, self._begun)
        except ValueError:  # training does not go on: what the others began ends here
            for begun in self._begun:
                begun.withdraw()
            raise
        self._begun.append(callback)

    def _end_unreported(self) -> None:
        """End what the latest training left measuring or capping, when a training begins on the thread
        that ran it (this Trainer's or another's: a notebook's retry) and its ``train()`` is no longer
        under way (`_in_train`; a training nested in it leaves it be), or the process exits: it left by an exception
        that the Trainer reports to no callback (given in ``callbacks=[...]``, not `attach`ed, which ends
        them as the exception leaves). It ends now (the record's summary says ``exception: unknown``, a
        cap goes back to the limit before it), so that the training beginning starts afresh. Nothing here
        may stop it."""
        step = self._training.global_step if self._training is not None else 0
        for callback in self._begun:
            try:
                if callback.left_open():
                    callback.abort(step, UNREPORTED_END)
            except Exception:  # noqa: BLE001 - the new training goes on whatever the old run's end did
                pass

    @classmethod
    def end_at_exit(cls) -> None:
        """The interpreter exits (``atexit``): what a training of this process left open ends as when the next
        training begins (`_end_unreported`): a ``train()`` that raised and was never retried gets its summary.
        A training on another thread still alive (a daemon's, which the exit kills) is left as it is."""
        alive = {thread.ident for thread in threading.enumerate()} - {threading.get_ident()}
        cls._end_left_open(lambda r: r._pid == os.getpid() and r._thread not in alive)

    @classmethod
    def _end_left_open(cls, left: Callable[[EnergyCallbacks], bool], also: EnergyCallbacks | None = None) -> None:
        """End the latest training of every registry (and ``also``) that ``left`` says is left behind."""
        for registry in [*cls._training_now, *([also] if also is not None else [])]:
            if left(registry):
                registry._end_unreported()
                cls._training_now.discard(registry)

    def shared_tracker(self, monitor: type[Any]) -> Any:
        """The tracker a budget, target or time shift of the latest training watches: the ``monitor``
        class's (`EnergyCallback`), else that of the first of them that began it measuring alone (one
        sampler and one record per training, and the budget and the time shift see each other);
        None: it measures alone."""
        found = self.first(monitor)
        if found is not None:
            return found.tracker
        return next((cb.run.tracker for cb in self._begun if isinstance(cb, RunContributor)
                     and cb.run.owns and cb.run.tracker is not None and cb.run.tracker.fitting), None)  # fmt: skip

    def first(self, kind: type[T]) -> T | None:
        """The first live callback of this class: in the attached Trainer's list, else among the
        callbacks that began the latest training, else among those registered."""
        if self.trainer is not None:
            live: list[Any] = list(self.trainer.callback_handler.callbacks)
        else:
            live = [*self._begun, *(cb for cb in self.callbacks if cb not in self._begun)]
        found = next((cb for cb in live if isinstance(cb, kind)), None)
        if isinstance(found, LogContributor):
            self.add(found)
        return found

    @property
    def attached(self) -> bool:
        return self.trainer is not None

    def wrap(self, trainer: Any) -> None:
        """Add every contributor's figures inside ``trainer.log``, end their runs when an exception
        (or Ctrl+C) leaves ``trainer.train`` (the HF Trainer has no exception hook), or ``evaluate``/``predict``
        called on their own (a run of its own: `abort_inference`), and know when the
        Trainer's own ``train``/``evaluate``/``predict`` runs (`running`): a forward in eval mode outside
        them (the user's ``generate()``) is no evaluation; once per trainer."""
        if self.trainer is trainer:
            return
        self.trainer = trainer
        original = trainer.log
        original_train, original_evaluate, original_predict = trainer.train, trainer.evaluate, trainer.predict

        def train(*args: Any, **kwargs: Any) -> Any:
            self.running += 1
            try:
                return original_train(*args, **kwargs)
            except BaseException as exception:
                abort(trainer, exception)
                raise
            finally:
                self.running -= 1

        def inference(run: Any, stage: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                for callback in trainer.callback_handler.callbacks:  # one before any train() too
                    if isinstance(callback, LogContributor):
                        callback.watch_model(trainer.model)
                self.running += 1
                try:
                    return run(*args, **kwargs)
                except BaseException as exception:  # a run of its own (outside train()) ends here
                    abort_inference(trainer, stage, exception)
                    raise
                finally:
                    self.running -= 1

            return call

        def log(logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            for callback in trainer.callback_handler.callbacks:  # re-created on resume: re-registered here
                if isinstance(callback, LogContributor):
                    self.add(callback)
                    callback.contribute(logs, trainer.state)
            original(logs, *args, **kwargs)

        trainer.log = log
        trainer.train = train
        trainer.evaluate = inference(original_evaluate, "val")
        trainer.predict = inference(original_predict, "predict")


def abort(trainer: Any, exception: BaseException) -> None:
    """End the run of every contributor of ``trainer`` that ``exception`` cut short (`LogContributor.abort`):
    its record's summary says how (``interrupted``, ``exception: <type>``), its sampler stops. Nothing
    here may hide the exception that ended training."""
    status, step = end_status(exception), trainer.state.global_step
    for callback in list(trainer.callback_handler.callbacks):  # the ones that ran (re-created on resume)
        if isinstance(callback, LogContributor):
            try:
                callback.abort(step, status)
            except Exception:  # noqa: BLE001 - the training's own exception is the one to see
                pass


def abort_inference(trainer: Any, stage: str, exception: BaseException) -> None:
    """End the run of its own that an ``evaluate()`` (``stage`` ``val``) or ``predict()`` (``predict``) outside
    ``train()`` began, when ``exception`` leaves it (`LogContributor.abort_inference`): its record's summary says
    how, its sampler stops. Inside ``train()`` nothing ends here (``train()``'s `abort` ends the fit). Nothing here
    may hide the user's exception."""
    status, step = end_status(exception), trainer.state.global_step
    for callback in list(trainer.callback_handler.callbacks):
        if isinstance(callback, LogContributor):
            try:
                callback.abort_inference(stage, step, status)
            except Exception:  # noqa: BLE001 - the evaluation's own exception is the one to see
                pass


@functools.cache
def _end_at_exit_once() -> None:
    """Register `EnergyCallbacks.end_at_exit` with atexit, once (at the first training begun)."""
    atexit.register(EnergyCallbacks.end_at_exit)


def _in_train(state: TrainerState | None) -> bool:
    """Whether the ``train()`` whose state is ``state`` is still under way on this thread: a Trainer
    whose ``state`` it is runs a method in a frame of this thread's stack (a training begun from one of
    its callbacks, a probe or a teacher, is nested in it). Read once per training begun."""
    frame = sys._getframe(1) if state is not None else None
    while frame is not None:
        owner = frame.f_locals.get("self")
        try:
            if owner is not None and getattr(owner, "state", None) is state:
                return True
        except Exception:  # noqa: BLE001 - an object whose ``state`` cannot be read is no Trainer
            pass
        frame = frame.f_back
    return False


def refuse_duplicate(callback: LogContributor, others: list[Any], how: str = "") -> None:
    """Raise ValueError when the Trainer with ``others`` has ``callback`` already, or another of its
    class doing its job (`LogContributor.same_job`)."""
    checks.one_per_trainer(callback, others, callback.same_job, how)


class LogContributor:
    """A callback that adds figures to the Trainer's log calls (see the module docstring).

    Subclasses implement `contribute` and call `begin` first thing in ``on_train_begin``.
    """

    registry: EnergyCallbacks | None = None
    _warned_unattached = False
    order = 0  # `attach` runs a trainer's energy callbacks in this order (stable): a time shift after a budget

    def contribute(self, logs: dict[str, float], state: TrainerState) -> dict[str, float]:
        """Add the figures due at this log call to ``logs`` and return them."""
        raise NotImplementedError

    def watch_model(self, model: Any) -> None:
        """The attached Trainer's ``evaluate()`` or ``predict()`` begins on ``model``: nothing by default."""

    def withdraw(self) -> None:
        """End what ``on_train_begin`` started, when training is refused before its first step (a
        duplicate callback): nothing, unless the callback started measuring or capping."""

    def abort(self, step: int, status: str) -> None:
        """Training ended at ``step`` by an exception (``status``: ``interrupted``, ``exception: <type>``):
        end what ``on_train_begin`` started, never waiting for other ranks. Called by `attach`'s ``train``,
        and when a training begins after one that left unreported (`left_open`)."""
        self.withdraw()

    def left_open(self) -> bool:
        """Whether the training this callback began still measures on a tracker it ends itself (then
        its ``train()`` left with no ``on_train_end``, when the next one begins): no, by default."""
        return False

    def abort_inference(self, stage: str, step: int, status: str) -> None:
        """The attached Trainer's ``evaluate()`` (``stage`` ``val``) or ``predict()`` (``predict``) ended by an
        exception (``status`` as in `abort`): end the run of its own it began outside a fit, if any. Nothing by
        default; called by `attach`'s ``evaluate``/``predict``."""

    def same_job(self, other: LogContributor) -> bool:
        """Whether ``other``, of this class, does this callback's job (then one of them is a mistake):
        always, but for targets on different metrics."""
        return True

    def register(self, model: Any) -> EnergyCallbacks | None:
        """Join the registry of the Trainer training ``model``."""
        registry = self.registry or EnergyCallbacks.of(model)
        if registry is not None:
            registry.add(self)
        return registry

    def begin(self, model: Any, state: TrainerState) -> EnergyCallbacks | None:
        """Join the registry as a callback of the training now beginning (first thing in ``on_train_begin``)."""
        registry = self.registry or EnergyCallbacks.of(model)
        if registry is not None:
            registry.begin(self, state)
        return registry

    @property
    def trainer(self) -> Any:
        """The Trainer this callback was attached to (None without `attach`)."""
        return self.registry.trainer if self.registry is not None else None

    def on_init_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        # callbacks=[...] given to the Trainer: known before training, and a duplicate refused at construction
        registry = EnergyCallbacks.of(kwargs.get("model")) or self.registry  # this Trainer's, if used before
        if registry is not None:
            registry.given(self, state)
        return control

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs: Any):
        if logs is None or (self.registry is not None and self.registry.attached):
            return control  # attached: the figures went in with Trainer.log
        added = self.contribute(logs, state)
        if added and state.log_history:
            state.log_history[-1].update(added)
        if args.report_to and state.is_world_process_zero and not self._warned_unattached:
            self._warned_unattached = True
            warn_at_user_code(
                f"{type(self).__name__} runs after the report_to integrations, so they do not receive the energy "
                "metrics (log_history does). Add it with `hf_energy.attach(trainer, callback)` instead of "
                "`callbacks=[...]`."
            )
        return control


def attach(trainer: Any, *callbacks: LogContributor) -> Any:
    """Add energy callbacks to a Trainer so that their figures reach every integration.

    Wraps this Trainer instance's ``log`` so that, before ``log_history`` and the
    ``report_to`` integrations see a log call, every `EnergyCallback`,
    `EnergyBudgetCallback`, `PowerCapCallback`, `EnergyToTargetCallback` and `TimeShiftCallback`
    of the trainer adds its figures. Works
    for any Trainer subclass, and keeps working when HF re-creates the callbacks on resume
    (``restore_callback_states_from_checkpoint=True``).

    Returns:
        The first callback given (the others are reachable as the objects you passed).

    Raises:
        ValueError: no callback, an object that is not one of the five, or a callback the trainer
            has already (given in ``callbacks=[...]`` or attached before) or a second of its class.
    """
    if not callbacks:
        raise ValueError(f"attach needs at least one of {CALLBACKS}")
    on_trainer = list(trainer.callback_handler.callbacks)
    for callback in callbacks:
        if not isinstance(callback, LogContributor):
            raise ValueError(f"attach takes instances of {CALLBACKS}, got {type(callback).__name__}")
        refuse_duplicate(callback, on_trainer, how=" (in callbacks=[...] or to attach(), not both)")
        on_trainer.append(callback)
    registry = EnergyCallbacks.of(trainer.model) or EnergyCallbacks()
    for callback in callbacks:
        trainer.add_callback(callback)
        registry.add(callback)
    in_order(trainer.callback_handler.callbacks)
    registry.wrap(trainer)
    return callbacks[0]


def in_order(callbacks: list[Any]) -> None:
    """The energy callbacks among ``callbacks`` put in their `LogContributor.order`, in the places they
    hold (the others keep theirs): at each step's end a time shift sees what a budget decided there
    (a stop: no pause), in whatever order they were given."""
    places = [i for i, callback in enumerate(callbacks) if isinstance(callback, LogContributor)]
    for i, callback in zip(places, sorted((callbacks[i] for i in places), key=lambda c: c.order)):
        callbacks[i] = callback


RunT = TypeVar("RunT", bound=SharedRun)


class RunContributor(Generic[RunT], LogContributor):
    """A contributor around a `SharedRun` (a budget, a target, a time shift), which measures on
    its own when no `EnergyCallback` began before it."""

    run: RunT

    def withdraw(self) -> None:
        self.run.close()

    def abort(self, step: int, status: str) -> None:
        """Its own tracker's summary with ``status`` (a shared one is the `EnergyCallback`'s to end)."""
        try:
            self.run.finish(step, status, collective=False)
        finally:
            self.run.close()

    def left_open(self) -> bool:
        tracker = self.run.tracker
        return self.run.owns and tracker is not None and tracker.fitting
