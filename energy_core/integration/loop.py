"""EnergyLoop: the callbacks' figures for a loop without a Trainer (plain PyTorch, Fabric, Accelerate).

The same measurement, metric keys, run record, budgets and power caps as the Lightning
and Hugging Face callbacks, driven by a few calls from your loop: `EnergyLoop.step` after
each optimizer step (it returns the window's metrics every ``log_every_n_steps`` steps,
else ``{}``), `EnergyLoop.start_epoch`/`EnergyLoop.end_epoch`, `EnergyLoop.stage` around
validation, `EnergyLoop.evaluated` with the validation metric when a target is set, and
leaving the ``with`` block (or `EnergyLoop.close`) at the end. Log the
dictionaries wherever you log: ``fabric.log_dict(metrics, step=...)``,
``accelerator.log(metrics, step=...)``, TensorBoard, W&B.

Examples:
    >>> from energy_core import EnergyLoop
    >>> with EnergyLoop(country="FRA", log_every_n_steps=50) as energy:      # doctest: +SKIP
    ...     for epoch in range(3):
    ...         energy.start_epoch()
    ...         for batch in loader:
    ...             train_step(batch)
    ...             if metrics := energy.step(batch):
    ...                 print(metrics["power/total_w"], metrics["energy/total_kwh"])
    ...             if energy.should_stop:  # a budget was spent
    ...                 break
    ...         with energy.stage("val"):
    ...             validate()
    ...         print(energy.end_epoch())
    >>> print(energy.summary)                                                # doctest: +SKIP
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

from typing_extensions import Unpack

from energy_core import checks
from energy_core.accounting.figures import STAGES
from energy_core.accounting.ranks import Ranks, as_launched, launched, torch_distributed
from energy_core.budget.guard import BudgetAction, needs_price
from energy_core.budget.rule import BudgetRule
from energy_core.budget.run import BudgetRun
from energy_core.integration.monitor_run import MonitorRun
from energy_core.notices import Notice, warn_at_user_code
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output.summary import end_status
from energy_core.power.cap import PowerCapRun
from energy_core.shift.run import TimeShiftRun
from energy_core.target.rule import TargetRule
from energy_core.target.run import TargetRun
from energy_core.tracker import EnergyTracker
from energy_core.units import MAX_COUNT

OUTSIDE_A_RUN = (
    "EnergyLoop.step() outside a run (before start() or after close()): nothing is measured. Put the loop in "
    "`with EnergyLoop(...) as energy:`, or call energy.start() before it and energy.close() after it."
)

logger = logging.getLogger("energy_core")


def show(notice: Notice) -> None:
    """The default way notices reach the user: warnings as warnings, the rest on ``logging``."""
    if notice.level == "warn":
        warn_at_user_code(notice.text)
    else:
        logger.info(notice.text)


F = TypeVar("F", bound=Callable[..., Any])


def _one_at_a_time(method: F) -> F:
    """The loop's calls one at a time: a ``close()`` from another thread (a watchdog, a timer) waits for
    the step under way, which would otherwise find the run ended half-way and raise into the loop."""

    @functools.wraps(method)
    def call(self: EnergyLoop, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class EnergyLoop:
    """Energy, power, throughput and CO2e of a hand-written training loop.

    Args:
        log_every_n_steps: Close a logging window every this many optimizer steps.
        budget: Stop on an energy or carbon budget (`should_stop` turns True; forecasts
            need ``total_steps``).
        power_cap: Cap GPU power while the loop runs (restored on every way out); with
            ``follow``, give ``total_steps`` so that the slowdown holds over the whole run.
        target: A quality to reach (and, with its ``min_gain_per_kwh``, when to stop for
            diminishing returns): pass the metric to `evaluated` after each validation.
        time_shift: Train when the grid is clean and finish by a deadline: `step` pauses when
            the plan says so; in ``"requeue"`` mode `should_stop` turns True (save your
            checkpoint, with `state_dict`), and leaving the ``with`` block exits with the
            time shift's ``exit_code``.
        total_steps: Optimizer steps the loop will take, for the budget's forecast, the time
            shift's plan and a cap that follows the grid.
        epoch_steps: Optimizer steps per epoch, for the budget's forecast.
        ranks: This process's part in a multi-process job, with its collectives (see
            `energy_core.torch_distributed`, `energy_core.fabric_ranks`). By default it is found
            when the loop starts (and in `load_state_dict`) from an initialised
            ``torch.distributed`` (`energy_core.torch_distributed` without arguments): under
            torchrun, ``accelerate launch``, Ray Train or Fabric the figures are the job's, each
            device counted once; without a process group, one process.
        notify: Where notices go (default: warnings and the ``energy_core`` logger).
        **measure: The measurement arguments of `MeasureOptions` (``devices``,
            ``country``, ``pue``, ``record_path``, ...).

    Raises:
        TypeError, ValueError: naming the argument, for any invalid value.

    Metrics (the same keys as the callbacks): ``energy/step_j``, ``energy/total_kwh``,
    ``energy/{gpu,cpu,dram}_kwh``, ``power/total_w``, ``power/gpu{i}_w``,
    ``throughput/samples_per_s``, ``throughput/tokens_per_s``, ``efficiency/j_per_sample``,
    ``efficiency/j_per_token``, ``carbon/co2e_kg``, ``carbon/intensity_g_per_kwh`` from
    `step`; ``energy/epoch_kwh`` from `end_epoch`; ``energy/<stage>_kwh`` from `stage`;
    ``budget/remaining_kwh``, ``budget/forecast_kwh`` with a budget; ``power/cap_w`` with
    a cap; ``target/energy_kwh``, ``target/co2e_kg``, ``target/seconds``, ``target/step``
    (once) and ``target/gain_per_kwh`` from `evaluated`, with a target; ``carbon/paused_s``,
    ``carbon/saved_kg`` with a time shift.
    """

    def __init__(
        self,
        *,
        log_every_n_steps: int = 50,
        budget: BudgetRule | None = None,
        power_cap: PowerCapRun | None = None,
        target: TargetRule | None = None,
        time_shift: TimeShiftRun | None = None,
        total_steps: int | None = None,
        epoch_steps: int | None = None,
        ranks: Ranks | None = None,
        notify: Callable[[Notice], None] = show,
        **measure: Unpack[MeasureArgs],
    ) -> None:
        self.log_every_n_steps = checks.integer("log_every_n_steps", log_every_n_steps, low=1)
        self.total_steps = checks.integer("total_steps", total_steps, low=1, optional=True)
        self.epoch_steps = checks.integer("epoch_steps", epoch_steps, low=1, optional=True)
        if budget is not None and not isinstance(budget, BudgetRule):
            raise TypeError(f"budget must be a BudgetRule or None, got {type(budget).__name__}")
        if power_cap is not None and not isinstance(power_cap, PowerCapRun):
            raise TypeError(f"power_cap must be a PowerCapRun or None, got {type(power_cap).__name__}")
        if target is not None and not isinstance(target, TargetRule):
            raise TypeError(f"target must be a TargetRule or None, got {type(target).__name__}")
        if ranks is not None and not isinstance(ranks, Ranks):
            raise TypeError(f"ranks must be a Ranks (see energy_core.torch_distributed) or None, got {ranks!r}")
        if not callable(notify):
            raise TypeError(f"notify must be a function taking a Notice, got {notify!r}")
        if time_shift is not None and not isinstance(time_shift, TimeShiftRun):
            raise TypeError(f"time_shift must be a TimeShiftRun or None, got {type(time_shift).__name__}")
        options = MeasureOptions.of("EnergyLoop", dict(measure))
        if budget is not None:  # the loop's own options price the run: known now, not at start
            needs_price(budget, options.price_per_kwh is not None)
        self.tracker = EnergyTracker(options)
        self.monitor = MonitorRun(self.tracker, self._show)
        self.budget = BudgetRun(budget, options) if budget is not None else None
        self.power_cap = power_cap
        self.target = TargetRun(target, options) if target is not None else None
        self.time_shift = time_shift
        self._given = ranks
        self.ranks = ranks or Ranks()
        self.notify = notify
        self.steps = 0
        self.epochs = 0
        self.should_stop = False
        self._started = False
        self._said_outside = False  # a step outside a run was said (once)
        self._resumed = False  # load_state_dict was called: a start continues a checkpoint
        self._stages: list[tuple[str, dict[str, float]]] = []  # the open stage blocks, outermost first
        self._lock = threading.RLock()  # one call at a time (`_one_at_a_time`)

    # ------------------------------------------------------------------ start and end
    @_one_at_a_time
    def start(self) -> EnergyLoop:
        """Start measuring (and cap, and watch the budget). `with EnergyLoop(...)` calls it."""
        if self._started:
            return self
        self._started = True
        try:
            self._begin()
        except BaseException as error:  # no `with` block will end it: stop the sampler, and say how it ended
            try:
                self.close(end_status(error), collective=False)
            except Exception:  # the start's error is the one to see
                logger.warning("EnergyLoop: ending the run after its start failed failed too", exc_info=True)
            raise
        return self

    def _begin(self) -> None:
        self.ranks = self._job()
        settings = {"log_every_n_steps": self.log_every_n_steps, "total_steps": self.total_steps,
                    "world_size": self.ranks.world_size}  # fmt: skip
        self.monitor.start(self.ranks, self.steps, self._resumed, framework="energy_core.EnergyLoop", loop=settings)
        self._show(self._alone_in_a_launch())
        if self.power_cap is not None:
            self._show(self.power_cap.begin(self.ranks, self.tracker, self.total_steps, step=self.steps))
        if self.budget is not None:
            self.budget.bind(self.tracker, self.ranks, self.steps)
            self._act(self.budget.begin(self.steps, self.total_steps, self.epoch_steps, self.epochs))
        if self.target is not None:
            self._show(self.target.bind(self.tracker, self.ranks, self.steps))
        if self.time_shift is not None:
            self.time_shift.bind(self.tracker, self.ranks, self.steps)
            self._show(self.time_shift.begin(self.steps, self.total_steps, self.log_every_n_steps))
            if self.time_shift.requeued_until is not None:  # the plan made at the start begins later
                self.should_stop = True
            elif self.time_shift.started is not None:  # a budget spent during a wait at the start: no first step
                self._act(self.time_shift.started.budget)

    def close(self, status: str = "completed", collective: bool = True) -> dict[str, float]:
        """End the run: final totals, the record's summary, the previous power limits back.

        Never raises: a part that fails is logged, and the others still run (the sampler
        stops and the power limits go back whatever happened before).

        Args:
            status: How the loop ended, for the record.
            collective: False when the other ranks may not get here (an exception).

        From another thread it waits for the call under way (one at a time), and first cuts short
        a time shift's pause, which would hold that call until the grid is clean again.
        """
        if self.time_shift is not None and self._started:
            self.time_shift.cut_short()
        with self._lock:
            return self._close(status, collective)

    def _close(self, status: str, collective: bool) -> dict[str, float]:
        if not self._started:
            return {}
        self._started = False
        metrics = self._safely("the final totals", lambda: self.monitor.finish(self.steps, status, collective)) or {}
        if self.time_shift is not None:
            time_shift = self.time_shift
            self._safely("the time shift's end", lambda: self._show(time_shift.finish(self.steps, status, collective)))
        if self.power_cap is not None:
            power_cap = self.power_cap
            self._safely("restoring the power limits", lambda: self._show(power_cap.finish()))
        self._safely("stopping the sampler", self.monitor.close)
        return metrics

    @staticmethod
    def _safely(what: str, part: Callable[[], Any]) -> Any:
        """``part()``, or None (logged) where it raised: the end of a run never raises into the loop."""
        try:
            return part()
        except Exception:
            logger.warning("EnergyLoop: %s failed", what, exc_info=True)
            return None

    def __enter__(self) -> EnergyLoop:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
            if self.time_shift is not None and self.time_shift.exit_status is not None:
                raise SystemExit(self.time_shift.exit_status)  # requeued: the scheduler starts it again
        else:
            self.close(end_status(kind), collective=False)

    # ------------------------------------------------------------------ the loop
    def count(self, batch: Any) -> None:
        """Count a micro-batch's samples and tokens (with gradient accumulation; `step` counts one)."""
        self.monitor.count(batch)

    @_one_at_a_time
    def step(self, batch: Any = None) -> dict[str, float]:
        """After an optimizer step: count ``batch`` (if given); every `log_every_n_steps`
        steps, the window's metrics (else ``{}``). Costs a few integer additions otherwise."""
        self.steps += 1
        if not self._started:  # before start() or after close(): nothing measured, planned or capped
            if not self._said_outside:
                self._said_outside = True
                self._show([Notice("warn", OUTSIDE_A_RUN)])
            return {}
        if batch is not None:
            self.monitor.count(batch)
        metrics: dict[str, float] = {}
        if self.power_cap is not None:
            changed, notices = self.power_cap.step(self.steps)
            metrics.update(changed)
            self._show(notices)
        if self.budget is not None and self.budget.active:
            self._act(self.budget.check(self.steps))
        if self.steps % self.log_every_n_steps == 0:
            metrics.update(self.monitor.window(self.steps))
            metrics.update(self._review(self.epochs))
            if self.time_shift is not None:
                metrics.update(self.time_shift.review(self.steps))
        if self.time_shift is not None:
            shifted = self.time_shift.check(self.steps)
            if shifted is not None and self.time_shift.requeued_until is not None:
                self.should_stop = True
            self._show(self.time_shift.pop_notices())
            if shifted is not None and shifted.budget is not None and not self.should_stop:
                self._act(shifted.budget)  # a budget spent while paused: no step after the pause
        return self._done(metrics)

    @_one_at_a_time
    def start_epoch(self) -> None:
        self.monitor.epoch_start(self.epochs)

    @_one_at_a_time
    def end_epoch(self) -> dict[str, float]:
        """At an epoch end: the partial window, the totals and ``energy/epoch_kwh``."""
        metrics = self.monitor.epoch(self.steps, self.epochs)
        self.epochs += 1
        metrics.update(self._review(self.epochs))
        return self._done(metrics)

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, float]]:
        """Around a validation, test or predict run: its energy, kept out of training's.

        Yields a dictionary that holds ``energy/<name>_kwh`` once the block ends. Blocks nest:
        during a run (after `start`) each second is counted once, as the innermost block's stage
        (a ``"test"`` block inside a ``"val"`` one is test's energy, not val's too); outside a run
        the outer block is a run of its own in the record and keeps its whole time (before any run, in
        a multi-process job: `_stage_ranks`). A block inside one of the same stage is part of the
        outer one (and yields its dictionary).

        Raises:
            ValueError: ``name`` is not ``"val"``, ``"test"`` or ``"predict"`` (before the block runs).
        """
        checks.choice("name", name, STAGES)
        figures: dict[str, float] = {}
        outer = self._stages[-1] if self._stages else None
        if outer is not None and outer[0] == name:  # the same stage inside itself: the outer block counts it, once
            yield outer[1]
            return
        # Another stage inside one, during a run: its time is its own, not the outer's too. Outside a run
        # the outer block is a run of its own, left whole.
        in_run = self._started
        pause = outer if outer is not None and in_run else None
        with self._lock:
            if pause is not None:
                pause[1].update(self._done(self.monitor.stage_end(pause[0], self.steps)))
            alone = outer is None and not in_run and not self.tracker.joined  # a run of its own before any run
            self.monitor.stage_start(name, self._stage_ranks() if alone else None)
            self._stages.append((name, figures))
        status = "completed"
        try:
            yield figures
        except BaseException as err:
            status = end_status(err)  # a run of its own outside a run: its summary says how it ended
            raise
        finally:
            with self._lock:
                self._stages.pop()
                if not in_run or self._started:  # else `close` (a watchdog's) ended the run, and the block with it
                    figures.update(self._done(self.monitor.stage_end(name, self.steps, status=status)))
                    if pause is not None:
                        self.monitor.stage_start(pause[0])

    @_one_at_a_time
    def evaluated(self, value: Any) -> dict[str, float]:
        """After a validation (outside its `stage` block, so that its energy counts), with
        the target's metric: ``target/*`` figures the first time ``value`` reaches the
        target, ``target/gain_per_kwh`` with ``min_gain_per_kwh``; `should_stop` turns True
        when the target says stop. Every rank of a job calls it (the decision is the job's).

        Args:
            value: The metric's value (a number or a 0-d tensor); None if there is none.

        Raises:
            RuntimeError: the loop was made without a ``target``.
        """
        if self.target is None:
            raise RuntimeError("evaluated() needs a target: EnergyLoop(target=TargetRule(metric, target, ...))")
        outcome = self.target.evaluate(self.steps, value)
        self._show(outcome.notices)
        if outcome.stop is not None:
            self.should_stop = True
            self._show([Notice("warn", outcome.stop)])
        return self._done(dict(outcome.metrics))

    # ------------------------------------------------------------------ figures and state
    @property
    def last_metrics(self) -> dict[str, float]:
        """Every figure returned so far, the latest value of each key."""
        return self.monitor.last_metrics

    @property
    def summary(self) -> str:
        """A few lines: energy, CO2e, work, other stages, gaps."""
        with self._lock:  # one at a time, as `_one_at_a_time`: a close() under way ends the fit under it
            return self.monitor.summary(self.tracker.totals())

    @_one_at_a_time
    def state_dict(self) -> dict[str, Any]:
        """The totals and the step count (and a budget's, a target's, a time shift's and a cap
        search's state), for your checkpoint."""
        state: dict[str, Any] = {"energy": self.tracker.state_dict(), "steps": self.steps, "epochs": self.epochs}
        if self.budget is not None:
            state["budget"] = self.budget.state_dict()
        if self.target is not None:
            state["target"] = self.target.state_dict()
        if self.power_cap is not None:
            state["power_cap"] = self.power_cap.state_dict()
        if self.time_shift is not None:
            state["time_shift"] = self.time_shift.state_dict()
        return state

    @_one_at_a_time
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpointed loop (before `start`).

        Raises:
            TypeError, ValueError: naming what is wrong in ``state`` (not a mapping, a step count
                that is not a whole number >= 0, or a part's own check), before the loop takes any
                of it, but for the parts checked after the one that failed.
        """
        if not isinstance(state, dict):
            raise TypeError(f"EnergyLoop state must be a mapping (EnergyLoop.state_dict), got {type(state).__name__}")
        steps = checks.integer("steps", state.get("steps", 0), low=0, high=MAX_COUNT)
        epochs = checks.integer("epochs", state.get("epochs", 0), low=0, high=MAX_COUNT)
        self.tracker.load_state_dict(state.get("energy"), own_share=self._job().leads_job)
        self.steps, self.epochs = steps, epochs
        if self.budget is not None:
            self.budget.load_state_dict(state.get("budget"))
        if self.target is not None:
            self.target.load_state_dict(state.get("target"))
        if self.power_cap is not None:
            self.power_cap.load_state_dict(state.get("power_cap"))
        if self.time_shift is not None:
            self.time_shift.load_state_dict(state.get("time_shift"))
        self._resumed = bool(state)  # {} (a first run's ckpt.get("energy", {})) continues nothing

    def _job(self) -> Ranks:
        """The ranks given, else this process's part in the job found now (every rank calls this alike)."""
        return self._given if self._given is not None else torch_distributed()

    def _stage_ranks(self) -> Ranks:
        """A stage block before any run: the ranks given (every rank enters it), else `as_launched` (no
        collective: an evaluation may run on one rank alone)."""
        return self._given if self._given is not None else as_launched()

    def _alone_in_a_launch(self) -> list[Notice]:
        """A warning where a launcher started several processes but this loop measures alone."""
        world = launched()[1]
        if self._given is not None or self.ranks.world_size > 1 or world <= 1:
            return []
        text = (
            f"This process was launched as one of {world} (WORLD_SIZE) but torch.distributed is not initialised "
            "when the EnergyLoop starts: each process measures every device it sees, alone, and only rank 0 writes "
            "the record. Initialise the process group before the loop starts, or pass ranks=."
        )
        return [Notice("warn", text)]

    def _review(self, epochs_done: int) -> dict[str, float]:
        if self.budget is None or not self.budget.active:
            return {}
        metrics, action = self.budget.review(self.steps, epochs_done)
        self._act(action)
        return metrics

    def _act(self, action: BudgetAction | None) -> None:
        if action is None:
            return
        if action.kind == "stop":
            self.should_stop = True
        self._show([Notice("warn", action.reason)])

    def _done(self, metrics: dict[str, float]) -> dict[str, float]:
        self.last_metrics.update(metrics)
        self._show(self.tracker.pop_notices())
        return metrics

    def _show(self, notices: list[Notice]) -> None:
        if self.ranks.leads_job:
            for notice in notices:
                try:
                    self.notify(notice)
                except Exception:  # a notice that cannot be shown never stops training
                    logger.warning("EnergyLoop: notify failed on %r", notice.text, exc_info=True)
