"""TimeShiftRun: a time shift's part in one training run, for every framework adapter.

It plans (`plan_time_shift`) from the forecast, the run's length (its steps and the pace
measured so far, or ``expected_duration_s``) and the power measured (busy while training,
idle while paused), and carries the plan out at step boundaries:

* the per-step check is one clock read in a single process (`TimeShiftRun.check`); when the
  planned run ends it plans again with what it now knows and pauses, or exits for a requeue;
* in a multi-process job the decision is taken at logging steps: global rank 0 decides and
  every rank receives the same decision through one sum over the ranks, so all pause together;
* a pause sleeps on the training thread until the next run; the sampler keeps measuring, so
  the idle power is measured, its energy charged at the intensity of each hour, and the pause
  left out of the training window;
* in ``"requeue"`` mode the adapter saves a checkpoint and ends training; the run writes
  ``resume_at`` to the record, says it, and the process exits with `EX_TEMPFAIL` (75) so a
  scheduler can start it again then; the restarted run carries the plan on from the checkpoint.

Figures: ``carbon/paused_s`` and ``carbon/saved_kg`` (against the same measured work started at
once without pauses: the energy of each stretch of training laid back to back from the start,
priced on the intensity the run is charged with), a ``shift`` line in the record for each
plan, pause, resume and requeue, and the plan and the saving in the summary.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from numbers import Real
from typing import Any

import psutil
from typing_extensions import Unpack

from energy_core import checks
from energy_core.accounting.figures import RunTotals
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.steps import StepGate
from energy_core.carbon.electricity_maps import ElectricityMaps
from energy_core.notices import Notice
from energy_core.options import MeasureArgs, MeasureOptions
from energy_core.output import keys
from energy_core.output import metrics as metric_dicts
from energy_core.output.record import SHIFT
from energy_core.sampling.meter import Mark
from energy_core.shift.forecast import Forecast
from energy_core.shift.intensity import Intensity
from energy_core.shift.planner import MAX_S, MAX_UNIX, MODES, TimeShiftPlan, plan_time_shift, unix_time
from energy_core.tracker import EnergyTracker
from energy_core.tracker_share import SharedRun
from energy_core.units import J_PER_KWH, MAX_CO2E_KG, MAX_KWH, MAX_RUN_W, MAX_SECONDS

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure; the user is invited to retry" - the requeue exit status
SAFETY = 1.05  # plans are made for this much more work than the pace predicts
PACE_STEPS = 3  # steps measured before the pace counts
REPLAN_CHANGE = 0.1  # plan again when the predicted work moves this much
IDLE_SHARE = 0.25  # idle power as a share of busy power, until a pause has measured it
RESUME_S = 60.0  # a restart's start-up (imports, model, checkpoint), until one has been measured
NAP_S = 60.0  # a pause wakes at least this often (and at each change of intensity) to charge its energy
STATE_KEYS = ("origin", "co2e_at_origin", "kwh_at_origin", "stretches", "paused_s", "idle_kwh", "idle_s", "exited_at",
              "resume_at", "resume_s")  # fmt: skip  # what `_State.to_state` stores
SHIFT_ARGS = ("deadline", "mode", "forecast", "expected_duration_s", "idle_w", "resume_s", "exit_code")


class TimeShiftArgs(MeasureArgs, total=False):
    """Keyword arguments of every time shift (see `TimeShiftRun`) and the measurement arguments
    (see `MeasureOptions`), used when no monitor's measurements can be shared."""

    deadline: datetime | str
    mode: str
    forecast: str | os.PathLike[str] | Sequence[tuple[datetime, float]] | None
    expected_duration_s: float | None
    idle_w: float | None
    resume_s: float | None
    exit_code: int | None


REQUEUED = "requeued"  # the summary's status of a fit ended to be requeued (`TrackerLink.stop_by`)


@dataclass(frozen=True)
class ShiftAction:
    """What a check decided: ``"paused"`` (done: the run slept until ``until``) or ``"requeue"``
    (the adapter saves a checkpoint and ends training; the process then exits).

    ``budget``: a budget on the same tracker spent while paused ended the pause; its stop (a
    `BudgetAction`), for the adapter to act on as the budget's own would, before another step.
    """

    kind: str
    until: float
    budget: Any = None


def parse_deadline(value: Any) -> datetime:
    """An aware datetime, or an ISO 8601 string with its UTC offset, as an aware datetime, from 1970
    to 9000 UTC (`MAX_UNIX`: the plans' times and a checkpoint's ``resume_at`` stay in range).

    Raises:
        TypeError, ValueError: naming ``deadline`` (and the range).
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"deadline must be an ISO 8601 time with its UTC offset, got {value!r}") from None
    if not isinstance(value, datetime):
        raise TypeError(f"deadline must be an aware datetime or an ISO 8601 string, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"deadline must have its UTC offset (e.g. 2026-06-02T06:00:00+00:00), got {value.isoformat()}")
    unix_time("deadline", value)  # in range: the plans made in the training loop can hold it
    return value


class TimeShiftRun(SharedRun):
    """Runs training when the grid is clean, and finishes by the deadline.

    Args:
        deadline: When training must be done: an aware datetime or an ISO 8601 string with its
            UTC offset, from 1970 to 9000 UTC.
        mode: ``"pause"`` (pause in the process; the hardware idles), ``"wait"`` (one run with
            a flexible start) or ``"requeue"`` (exit at a checkpoint with `EX_TEMPFAIL` and be
            started again at ``resume_at``).
        forecast: The intensity forecast: a CSV series path, a list of ``(datetime,
            g_per_kwh)``, or None for the run's own intensity (its series; or Electricity Maps'
            forecast for ``electricity_maps_zone``).
        expected_duration_s: Seconds of training the run needs, in (0, 1e9]; else they are
            predicted from its steps and the pace measured so far (and planned again as the pace
            is measured). Without the steps, the seconds trained so far are taken from it.
        idle_w: The power while paused, W (default: measured during pauses; a quarter of the
            busy power before the first).
        resume_s: For ``"requeue"``: seconds a restart costs before training goes on, in [0, 1e9]
            (default: measured at each restart; 60 s before).
        exit_code: The exit status after a requeue, in [1, 255] (default 75, EX_TEMPFAIL);
            None: training stops and the process ends as it will.
        options: How to measure when no monitor's tracker can be shared.

    Raises:
        TypeError, ValueError: naming the argument and the allowed range.

    Examples:
        >>> run = TimeShiftRun(deadline="2026-06-02T06:00:00+00:00", mode="requeue")
        >>> run.mode, run.exit_code
        ('requeue', 75)
    """

    def __init__(
        self,
        deadline: datetime | str,
        mode: str = "pause",
        forecast: str | os.PathLike[str] | Sequence[tuple[datetime, float]] | None = None,
        expected_duration_s: float | None = None,
        idle_w: float | None = None,
        resume_s: float | None = None,
        exit_code: int | None = EX_TEMPFAIL,
        options: MeasureOptions | None = None,
    ) -> None:
        super().__init__(options or MeasureOptions())
        self.deadline = parse_deadline(deadline)
        self.mode = checks.choice("mode", mode, MODES)
        self.given = None if forecast is None else Intensity.of(forecast, "forecast")
        self.expected_duration_s = checks.number(
            "expected_duration_s", expected_duration_s, low=0, low_open=True, high=MAX_S, optional=True, unit=" s"
        )
        self.idle_w = checks.number("idle_w", idle_w, low=0, high=MAX_RUN_W, optional=True, unit=" W")
        self.resume_s = checks.number("resume_s", resume_s, low=0, high=MAX_S, optional=True, unit=" s")
        self.exit_code = checks.integer("exit_code", exit_code, low=1, high=255, optional=True)
        self.args: dict[str, Any] = {
            "deadline": self.deadline.isoformat(),
            "mode": self.mode,
            "forecast": _forecast_arg(forecast),
            "expected_duration_s": self.expected_duration_s,
            "idle_w": self.idle_w,
            "resume_s": self.resume_s,
            "exit_code": self.exit_code,
            **self.options.as_args(),
        }
        self.plan: TimeShiftPlan | None = None
        self.requeued_until: float | None = None  # set when the run ended for a requeue
        self.started: ShiftAction | None = None  # what `begin` decided: a pause (a wait) carried out, or a requeue
        self.clock: Callable[[], float] | None = None  # unix time: the tracker's meter clock by default
        self.sleep: Callable[[float], None] = self._nap
        self._cut = False  # `cut_short`: the run is being ended from another thread
        self._wake: threading.Event | None = None  # during a pause: wakes its nap (made then: runs are pickled)
        self.forecast: Forecast | None = None  # where the forecast comes from (after `bind`)
        self._state = _State(0.0, 0.0)
        self._saved: dict[str, Any] = {}
        self._next = math.inf  # unix time of the leader's next decision (the end of the run in progress)
        self._wait_until = 0.0  # a requeued run started early waits until its resume_at
        self._every = 1
        self._steps = StepGate()  # a repeated step (a micro-batch's end) is none
        self._total_steps: float | None = None
        self._first: tuple[int, float] = (0, 0.0)  # (step, seconds trained) when this process began
        self._planned: tuple[float, float] | None = None  # (work planned for, seconds trained then)
        self.shown: TimeShiftPlan | None = None  # the plan the summary shows: the last that shifted anything
        self._said: set[str] = set()
        self._notices: list[Notice] = []

    @classmethod
    def from_args(cls, owner: str, **args: Unpack[TimeShiftArgs]) -> TimeShiftRun:
        """Validate a time shift's keyword arguments (its own and the measurement options) into a run.

        Raises:
            TypeError, ValueError: naming the argument, for any invalid value.
        """
        given = dict(args)
        own = {k: given.pop(k) for k in SHIFT_ARGS if k in given}
        if "deadline" not in own:
            raise TypeError(f"{owner} needs a deadline: an aware datetime or an ISO 8601 string with its offset")
        return cls(**own, options=MeasureOptions.of(owner, given))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ start
    @property
    def active(self) -> bool:
        """Bound to a tracker and not ended for a requeue."""
        return self.tracker is not None and self.requeued_until is None

    def now(self) -> float:
        """Unix time on the tracker's clock (or `clock`, when set)."""
        assert self.tracker is not None
        return self.clock() if self.clock is not None else self.tracker.now()

    def bind(self, shared: EnergyTracker | None, ranks: Ranks, step: int, resumed: bool = False) -> list[Notice]:
        """At fit start: use a monitor's tracker, or measure alone from now (see `BudgetRun.bind`). A fit
        begins afresh: a previous fit's requeue, plan and decisions are forgotten (its progress comes
        back from a checkpoint, if one is loaded), and the exit status is the one given."""
        self.requeued_until = self.started = None
        self._cut = False
        self.exit_code = self.args["exit_code"]  # an adapter clears it once it has exited with it
        self.plan = self.shown = None
        self._planned = None
        self._next, self._wait_until = math.inf, 0.0
        self._said.clear()
        notices = super().bind(shared, ranks, step, resumed)
        assert self.tracker is not None
        self.tracker.add_summary("time_shift", self._summary)
        self.forecast = Forecast(self.given, self.tracker.factors.carbon, self.now)
        return notices

    def begin(self, step: int, total_steps: float | None, every: int = 1) -> list[Notice]:
        """Once every callback has started and the run's length is known (every rank calls it): starts
        the forecast, carries on a checkpoint's plan (once: a later fit without one starts afresh; a
        requeued run started before ``resume_at`` waits), and plans at once when it can
        (``expected_duration_s``): the run may wait here, or be requeued. What it decided is
        `started` (None: training starts at once); a budget spent while it waited ended the wait,
        and its stop is ``started.budget``, for the adapter to act on before the first step, as
        after a pause at a step (`check`).

        Args:
            step: The optimizer step training starts at.
            total_steps: Optimizer steps the run will take (None or inf: unknown).
            every: The logging cadence: in a multi-process job, decisions are taken at these steps.
        """
        assert self.tracker is not None and self.forecast is not None, "bind() first"
        self._every = max(1, int(every))
        self._steps.begin(step)
        self._total_steps = total_steps if total_steps and math.isfinite(total_steps) else None
        now = self.now()
        totals = self.tracker.totals()
        self._state = _State.of(self._saved.pop("shift", None), now, totals.get(keys.CO2E_KG, 0.0), self._job_kwh())
        self.forecast.start()
        if self._state.exited_at is not None:
            self._restarted(step, now)
        self._state.open(now, self._job_kwh())
        self._first = (step, self._state.busy_s(now))
        if self._total_steps is None and self.expected_duration_s is None:
            self._say("length", "warn", "Time shift: the run's length is unknown (no max_steps or max_epochs, no "
                      "expected_duration_s): it cannot plan, and trains at once.")  # fmt: skip
        self._next = -math.inf
        action = self._decide(step, now)
        if action is not None and action.kind == "paused":
            action = self._pause(action, step)
        self.started = action
        return self.pop_notices()

    def _restarted(self, step: int, now: float) -> None:
        """A requeued run starts again: the time away counts as paused, the start-up as the cost of a
        resume; a run started before its ``resume_at`` waits for it (`begin`) when that is before the
        deadline, else plans again at once."""
        state = self._state
        exited, until = state.exited_at or now, state.resume_at or now
        startup = now - psutil.Process().create_time()
        if 0 < startup < 3600:
            state.resume_s = startup  # imports, model, checkpoint: what the next restart will cost too
        state.paused_s += max(0.0, now - exited)
        state.exited_at = state.resume_at = None
        self._record("resume", step, away_s=now - exited, resume_s=state.resume_s)
        if now < until - 1.0 and until < self.deadline.timestamp():
            self._wait_until = until
            self._say(f"early{until}", "info", f"Time shift: started before resume_at ({_iso(until)}): waiting in "
                      "the process until then.")  # fmt: skip
        elif now < until - 1.0:
            self._say(f"late{until}", "info", f"Time shift: the checkpoint's resume_at ({_iso(until)}) is not before "
                      f"the deadline ({_iso(self.deadline.timestamp())}): planning again now.")  # fmt: skip

    # ------------------------------------------------------------------ each step
    def check(self, step: int) -> ShiftAction | None:
        """After each optimizer step. In a single process: one clock read, and at the end of a planned
        run a decision; in a multi-process job: a decision at every logging step (a collective every
        rank reaches). A pause happens here (the run sleeps until the next run begins); a requeue is
        returned for the adapter to save a checkpoint and end training. A ``step`` already checked is
        ignored: with gradient accumulation, the ends of the micro-batches after an optimizer step
        are no step's end (a pause or a requeue there would split a step)."""
        if not self.active or not self._steps.new(step):
            return None
        distributed = self._ranks.world_size > 1
        if distributed and step % self._every:
            return None
        now = self.now()
        if not distributed and now < self._next:
            return None
        if self._budget_spent():  # a spent budget is stopping the run: no pause begins (asked when one is due)
            return None
        action = self._decide(step, now)
        if action is not None and action.kind == "paused":
            action = self._pause(action, step)
        return action

    def _pause(self, action: ShiftAction, step: int) -> ShiftAction:
        """Carry out a pause; when a budget spent during it ended it, the action holds the budget's stop
        (training stops before another step). The same on every rank: in a job, no budget ends a
        pause (`_budget_spent`)."""
        self._carry_out(action, step)
        if self._budget_spent():
            assert self.tracker is not None  # a pause was carried out
            return replace(action, budget=self.tracker.link.stop(step))
        return action

    def _decide(self, step: int, now: float) -> ShiftAction | None:
        """Global rank 0 decides when its decision is due (a planned run has ended, or it must plan
        again) and every rank receives the decision through one sum over the ranks."""
        until, requeue = 0.0, 0.0
        if self._ranks.leads_job and now >= self._next:
            self._next = math.inf  # until a plan says otherwise, or a review asks for a new one
            if self.mode == "wait" and self._state.busy_s(now) > 0:
                pass  # one contiguous run: once training has begun it never pauses
            elif self._wait_until > now:
                until = self._wait_until
            elif (plan := self._replan(step, now)) is None:
                self._next = self._retry_at(now)
            elif plan.fits and plan.shifted:
                begin, end = plan.runs[0][0].timestamp(), plan.runs[0][1].timestamp()
                if begin <= now + 1e-3:
                    self._next = end
                else:
                    until, requeue = begin, float(self.mode == "requeue")
        decided, _ = self._ranks.sum_by_name({"until": until, "requeue": requeue})
        if decided["until"] <= now:
            return None
        if decided["requeue"]:
            return self._requeue(step, now, decided["until"])
        return ShiftAction("paused", decided["until"])

    def _retry_at(self, now: float) -> float:
        """When to try to plan again, having no plan: in a second while the forecast is on its way;
        at the next step while the pace is being measured; never without a forecast or a length."""
        assert self.forecast is not None
        if self.forecast.pending:
            return now + 1.0
        if self.forecast.curve() is None or (self._total_steps is None and self.expected_duration_s is None):
            return math.inf
        return -math.inf

    def _carry_out(self, action: ShiftAction, step: int) -> None:
        """Pause until ``action.until``: sleep on the training thread while the sampler measures and
        charges the idle energy at the factors in force at each reading, then leave the pause out
        of the training window. A pause an error cuts short is booked the same, up to then, and the
        error goes on."""
        assert self.tracker is not None
        self._close_stretch()
        start, began = self.tracker.pause(), self.now()
        plan = self.plan if self._wait_until <= began else None
        self._record("pause", step, resume_at=action.until, plan=plan.to_record() if plan else None)
        hours = (action.until - began) / 3600
        text = f"Time shift: pausing at step {step} until {_iso(action.until)} ({hours:.3g} h)"
        self._notices.append(Notice("info", text + (f"; plan: {plan.describe()}." if plan else ".")))
        interrupted = True
        self._wake = threading.Event()
        try:
            while (now := self.now()) < action.until:  # the sampler charges the idle energy, reading by reading
                if self._budget_spent() or self._cut:  # a budget spent while paused: the pause ends, training stops
                    break
                self.sleep(max(1e-3, min(action.until, now + NAP_S) - now))
            interrupted = self._cut  # (the run is ending on this rank alone: no sum over the ranks)
        finally:  # a pause cut short (Ctrl-C, SIGTERM) counts all the same; then the error goes on
            self._wake = None
            self._resumed(start, step, collective=not interrupted)

    def _nap(self, seconds: float) -> None:
        wake = self._wake
        if wake is None:
            time.sleep(seconds)
        else:
            wake.wait(seconds)

    def cut_short(self) -> None:
        """End a pause under way at once (from another thread: the run is being ended, and waits for the
        step the pause holds). Its time is booked up to then."""
        self._cut = True
        wake = self._wake
        if wake is not None:
            wake.set()

    def _resumed(self, start: Mark, step: int, collective: bool) -> None:
        """The pause that began at ``start`` ends now: its time and idle energy are booked, and a stretch
        of training opens. ``collective``: False when the pause was cut short by an error (the other
        ranks may not be here): the idle energy is then the job's at the last sum over the ranks."""
        assert self.tracker is not None
        tracker, state = self.tracker, self._state
        seconds = tracker.resume(start, step)
        totals = tracker.reduce_totals() if collective else tracker.totals()
        idle_kwh = max(0.0, totals.get(keys.TOTAL_KWH, 0.0) - state.kwh_at_pause)
        shared = tracker.link
        shared.paused_kwh += idle_kwh
        shared.paused_s += seconds
        state.paused_s += seconds
        state.idle_kwh += idle_kwh
        state.idle_s += seconds
        self._wait_until = 0.0
        self._next = -math.inf  # decide at the next step: the plan's next run begins now
        self._record("resume", step, paused_s=seconds, idle_w=idle_kwh * J_PER_KWH / seconds if seconds > 0 else None)
        state.open(self.now(), self._job_kwh())

    def _budget_spent(self) -> bool:
        """Whether a budget on the same tracker is spent (a single process only: in a job, ranks pause
        and resume together, and the budget decides at its reviews)."""
        return self.tracker is not None and self._ranks.world_size == 1 and self.tracker.link.stop_asked()

    def _requeue(self, step: int, now: float, until: float) -> ShiftAction:
        """End this process's part: the plan's next run begins at ``until``."""
        self._close_stretch()
        state = self._state
        state.exited_at, state.resume_at = now, until
        self.requeued_until = until
        assert self.tracker is not None  # a decision is taken on a bound run
        self.tracker.link.stop_by(REQUEUED)
        self._record("requeue", step, resume_at=until, exit_code=self.exit_code,
                     plan=self.plan.to_record() if self.plan else None)  # fmt: skip
        ends = f"exits with status {self.exit_code}" if self.exit_code is not None else "stops training"
        self._notices.append(Notice("warn", f"Time shift: requeue at step {step}: a checkpoint is saved and the run "
                                    f"{ends}; resume at {_iso(until)} (unix {until:.0f})."))  # fmt: skip
        return ShiftAction("requeue", until)

    # ------------------------------------------------------------------ planning
    def _replan(self, step: int, now: float) -> TimeShiftPlan | None:
        """A new plan from now, or None (no forecast yet or none at all, or the length unknown)."""
        assert self.forecast is not None
        curve, work = self.forecast.curve(), self._work_left(step)
        if curve is None:
            if not self.forecast.pending:
                self._say("forecast", "warn", f"Time shift: no intensity forecast ({self.forecast.missing}): the "
                          "run trains at once, to the end.")  # fmt: skip
            return None
        if work is None:
            return None
        if not curve.covers(now, self.deadline.timestamp()):
            self._say("covers", "info", f"Time shift: the forecast ({self.forecast.source}) ends before the "
                      "deadline; after its last row, its last value is assumed.")  # fmt: skip
        busy = self._busy_w()
        if busy is not None:
            idle = min(busy, self._idle_w())
        else:  # before any training is measured only the share matters: the idle power against a busy 1 W
            busy, idle = 1.0, 0.0 if self.idle_w == 0 else IDLE_SHARE  # a given 0 W is a share of 0 whatever busy is
        plan = plan_time_shift(curve, work_s=min(work * SAFETY, MAX_S), start=datetime.fromtimestamp(now, timezone.utc),
                               deadline=self.deadline, busy_w=busy, idle_w=idle, resume_s=self._resume_s(),
                               mode=self.mode)  # fmt: skip
        changed = self._moved(work)
        self.plan, self._planned = plan, (work, self._state.busy_s(now))
        if plan.shifted or self.shown is None:
            self.shown = plan
        if not plan.fits:
            self._say("fits", "warn", f"Time shift: {plan.note}: the run trains at once, to the end.")
        elif changed:
            self._notices.append(Notice("info", f"Time shift plan ({self.mode}, from {self.forecast.source}): "
                                        f"{plan.describe()}."))  # fmt: skip
        if changed or plan.shifted:
            self._record("plan", step, plan=plan.to_record(), busy_w=busy, idle_w=plan.idle_w, resume_s=plan.resume_s)
        return plan

    def _work_left(self, step: int) -> float | None:
        """Seconds of training left: from the pace this process measured, else from the duration
        given; None when neither is known, or when the run's last step is done. Plans add `SAFETY` to it."""
        first_step, first_s = self._first
        done = step - first_step
        total = self._total_steps
        if total is not None and step >= total:  # the last step is done: nothing is left to move
            return None
        if total is not None and done >= PACE_STEPS:
            pace = (self._state.busy_s(self.now()) - first_s) / done
            return (total - step) * pace
        if self.expected_duration_s is None:
            return None
        if total is None:  # the seconds trained so far, by every process of the job, are done
            return max(1.0, self.expected_duration_s - self._state.busy_s(self.now()))
        return max(1.0, self.expected_duration_s * (1 - step / total))  # > 0: a done run returned above

    def _moved(self, work: float | None) -> bool:
        """Whether the work predicted now differs from what the plan expected to be left by more than
        `REPLAN_CHANGE` (or there is no plan yet)."""
        if self._planned is None or self.plan is None:
            return True
        planned, trained = self._planned
        expected = planned - (self._state.busy_s(self.now()) - trained)
        return work is not None and abs(work - expected) > REPLAN_CHANGE * max(work, expected)

    def _busy_w(self) -> float | None:
        """Power while training: the job's energy outside pauses over its time outside pauses (None
        before any is measured)."""
        state = self._state
        kwh = self._job_kwh() - state.idle_kwh - state.kwh_at_origin
        seconds = state.busy_s(self.now())
        return kwh * J_PER_KWH / seconds if kwh > 0 and seconds > 0 else None

    def _idle_w(self) -> float:
        """Power while paused: as given, else as measured, else a share of the busy power."""
        state = self._state
        if self.idle_w is not None:
            return self.idle_w
        if state.idle_s > 0 and state.idle_kwh > 0:
            return state.idle_kwh * J_PER_KWH / state.idle_s
        return IDLE_SHARE * (self._busy_w() or 1.0)

    def _resume_s(self) -> float:
        if self.mode != "requeue":
            return 0.0
        if self.resume_s is not None:
            return self.resume_s
        return self._state.resume_s if self._state.resume_s is not None else RESUME_S

    def review(self, step: int) -> dict[str, float]:
        """At a logging step (every rank), before that step's `check`: ``carbon/paused_s`` and
        ``carbon/saved_kg``. The leader plans again at that `check` when the predicted work has moved
        (the pace is better known) or when it has no plan yet (a forecast may have come): a plan is
        made at a logging step or at the end of a planned run, never on a step that logs nothing."""
        if self.tracker is None:
            return {}
        if self.active and self._ranks.leads_job and self._moved(self._work_left(step)):
            self._next = -math.inf
        return self.figures()

    # ------------------------------------------------------------------ figures
    def _job_kwh(self) -> float:
        assert self.tracker is not None
        return self.tracker.totals().get(keys.TOTAL_KWH, 0.0)

    def _close_stretch(self) -> None:
        """A stretch of training ends now: its energy (the job's: one sum over the ranks) is kept."""
        assert self.tracker is not None
        self._state.close(self.now(), self.tracker.reduce_totals().get(keys.TOTAL_KWH, 0.0))

    def _charged_curve(self) -> Intensity | None:
        """The intensity the run is charged with, over time: its series; for a live Electricity Maps
        zone, the forecast (the best picture of its hours); else None: a fixed figure, read with
        ``peek``, whatever forecast the plans use."""
        assert self.tracker is not None and self.forecast is not None
        if self.forecast.charged is not None:  # a series, converted once by the forecast
            return self.forecast.charged
        return self.forecast.curve() if isinstance(self.tracker.factors.carbon, ElectricityMaps) else None

    def figures(self, totals: RunTotals | None = None) -> dict[str, float]:
        """``carbon/paused_s`` and ``carbon/saved_kg``, with the job's totals (the tracker's now by default)."""
        assert self.tracker is not None
        if totals is None:
            now = self.tracker.totals()
            co2e, kwh = now.get(keys.CO2E_KG, 0.0), now.get(keys.TOTAL_KWH, 0.0)
        else:
            co2e, kwh = totals.co2e_kg, totals.total_kwh
        saved = self._run_now_kg(kwh) - (co2e - self._state.co2e_at_origin)
        return metric_dicts.shift(self._state.paused_s, saved)

    def _run_now_kg(self, kwh: float) -> float:
        """The same measured training started at once without pauses: each stretch's energy laid back
        to back from the start, priced on the intensity the run is charged with (PUE applied);
        ``kwh``: the job's energy now."""
        assert self.tracker is not None
        curve, pue, state = self._charged_curve(), self.tracker.factors.pue, self._state
        at, grams = state.origin, 0.0
        for begin, end, used in [*state.stretches, *state.current(self.now(), kwh)]:
            g_per_kwh = curve.mean(at, at + end - begin) if curve else self.tracker.factors.carbon.peek(at).value
            grams += used * pue * g_per_kwh
            at += end - begin
        return grams / 1000.0

    def _summary(self, totals: RunTotals) -> dict[str, Any]:
        """The summary's ``time_shift`` part (see `energy_core.output.summary.shift_line`)."""
        figures = self.figures(totals)
        if self.requeued_until is not None:
            note = f"requeued: resume at {_iso(self.requeued_until)}"
        else:
            note = self.forecast.missing if self.forecast is not None else ""
        return {
            "mode": self.mode,
            "paused_s": figures[keys.PAUSED_S],
            "saved_kg": figures[keys.SAVED_KG],
            "run_now_kg": self._run_now_kg(totals.total_kwh),
            "plan": self.shown.to_record() if self.shown is not None else None,
            "resume_at": self.requeued_until,
            "note": note,
        }

    # ------------------------------------------------------------------ end
    def finish(self, step: int, status: str = "completed", collective: bool = True) -> list[Notice]:
        """What the time shift has still to say, and the end of its own tracker (see `SharedRun.finish`)."""
        if self.tracker is None:
            return []
        return self.pop_notices() + super().finish(step, status, collective)

    @property
    def exit_status(self) -> int | None:
        """The status the process should exit with: ``exit_code`` after a requeue, else None."""
        return self.exit_code if self.requeued_until is not None else None

    def pop_notices(self) -> list[Notice]:
        """What the time shift has to say since the last call, once."""
        found, self._notices = self._notices, []
        return found

    def _say(self, key: str, level: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._notices.append(Notice(level, text))

    def _record(self, event: str, step: int, **fields: Any) -> None:
        if self.tracker is not None:
            self.tracker.write_record(SHIFT, event=event, step=step, at=self.now(), **fields)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The plan's progress (its start, the stretches trained, the time paused, a requeue's
        ``resume_at``) and, measuring alone, the totals."""
        if self.tracker is None:
            return dict(self._saved)
        return self.with_totals({"shift": self._state.to_state()})

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Keep a checkpoint's state for `bind` and `begin`.

        Raises:
            ValueError: naming what is wrong in the stored state.
        """
        if state is not None and not isinstance(state, dict):
            raise ValueError(f"time shift state must be a mapping, got {type(state).__name__}")
        unknown = sorted(str(k) for k in (state or {}) if k not in ("shift", "tracker"))
        if unknown:
            raise ValueError(f"time shift state has unknown keys {unknown}; known: shift, tracker")
        self._saved = dict(state or {})
        _State.of(self._saved.get("shift"), 0.0, 0.0, 0.0)  # checked now, not at fit start
        self.load_totals(self._saved)


@dataclass
class _State:
    """A time shift's progress, kept in checkpoints: from its start, every stretch trained (by this
    process and the ones requeued before it), the time paused, the idle energy, a requeue's times."""

    origin: float  # unix time the time shift began: its "start at once"
    co2e_at_origin: float  # the job's CO2e then, kg
    kwh_at_origin: float = 0.0
    stretches: list[tuple[float, float, float]] = field(default_factory=list)  # (begin, end, job kWh)
    paused_s: float = 0.0
    idle_kwh: float = 0.0
    idle_s: float = 0.0
    exited_at: float | None = None
    resume_at: float | None = None
    resume_s: float | None = None
    kwh_at_pause: float = 0.0  # the job's energy when the last stretch ended
    opened: tuple[float, float] | None = None  # (begin, job kWh) of the stretch in progress

    @classmethod
    def of(cls, stored: Any, now: float, co2e: float, kwh: float) -> _State:
        """The state a checkpoint stored, or a new one beginning now.

        Raises:
            ValueError: naming the stored field that is missing, unknown, not a number (a bool or a
                string is none) or outside its range (a unix time up to year 9000, energy, CO2e and
                seconds within the bounds of `energy_core.units`).
        """
        if stored is None or (isinstance(stored, dict) and not stored):
            return cls(now, co2e, kwh)
        if not isinstance(stored, dict):
            raise ValueError(f"time shift state must be a mapping, got {type(stored).__name__}")
        missing = [k for k in STATE_KEYS if k not in stored]
        unknown = sorted(str(k) for k in stored if k not in STATE_KEYS)
        if missing or unknown:
            raise ValueError(f"time shift state: missing {missing}, unknown keys {unknown}; "
                             f"its keys are {', '.join(STATE_KEYS)}")  # fmt: skip
        stretches = stored["stretches"]
        if not isinstance(stretches, (list, tuple)) or not all(
            isinstance(s, (list, tuple)) and len(s) == 3 for s in stretches
        ):
            raise ValueError(f"time shift state: stretches must be a list of [begin, end, kWh], got {stretches!r}")
        return cls(
            _figure("origin", stored["origin"], MAX_UNIX),
            _figure("co2e_at_origin", stored["co2e_at_origin"], MAX_CO2E_KG),
            _figure("kwh_at_origin", stored["kwh_at_origin"], MAX_KWH),
            [
                (_figure("stretches", a, MAX_UNIX), _figure("stretches", b, MAX_UNIX), _figure("stretches", k, MAX_KWH))
                for a, b, k in stretches
            ],  # fmt: skip
            _figure("paused_s", stored["paused_s"], MAX_SECONDS),
            _figure("idle_kwh", stored["idle_kwh"], MAX_KWH),
            _figure("idle_s", stored["idle_s"], MAX_SECONDS),
            _maybe("exited_at", stored["exited_at"], MAX_UNIX),
            _maybe("resume_at", stored["resume_at"], MAX_UNIX),
            _maybe("resume_s", stored["resume_s"], MAX_S),
        )

    def open(self, now: float, kwh: float) -> None:
        """A stretch of training begins now."""
        self.opened = (now, kwh)

    def close(self, now: float, kwh: float) -> None:
        """The stretch in progress ends now, at the job's energy ``kwh``."""
        if self.opened is not None:
            self.stretches.append((self.opened[0], now, max(0.0, kwh - self.opened[1])))
        self.opened = None
        self.kwh_at_pause = kwh

    def current(self, now: float, kwh: float) -> list[tuple[float, float, float]]:
        """The stretch in progress, up to now."""
        return [] if self.opened is None else [(self.opened[0], now, max(0.0, kwh - self.opened[1]))]

    def busy_s(self, now: float) -> float:
        """Seconds trained since the time shift began (every stretch, the one in progress too)."""
        return sum(b - a for a, b, _ in self.stretches) + (now - self.opened[0] if self.opened is not None else 0.0)

    def to_state(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "co2e_at_origin": self.co2e_at_origin,
            "kwh_at_origin": self.kwh_at_origin,
            "stretches": [list(s) for s in self.stretches],
            "paused_s": self.paused_s,
            "idle_kwh": self.idle_kwh,
            "idle_s": self.idle_s,
            "exited_at": self.exited_at,
            "resume_at": self.resume_at,
            "resume_s": self.resume_s,
        }


def _figure(name: str, value: Any, high: float) -> float:
    """A stored figure: a real number (not a bool, not a string) in [0, ``high``]."""
    number = isinstance(value, Real) and not isinstance(value, bool)
    if not number or not 0 <= value <= high:  # NaN fails too; a huge int is compared exactly
        raise ValueError(f"time shift state: {name} must be a finite number in [0, {high:g}], got {value!r}")
    return float(value)


def _maybe(name: str, value: Any, high: float) -> float | None:
    return None if value is None else _figure(name, value, high)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _forecast_arg(forecast: Any) -> Any:
    """The forecast argument as JSON (HF re-creates callbacks from their stored arguments)."""
    if forecast is None or isinstance(forecast, (str, os.PathLike)):
        return None if forecast is None else os.fspath(forecast)
    return [[t if isinstance(t, str) else t.isoformat(), float(v)] for t, v in forecast]
