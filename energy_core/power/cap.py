"""PowerCapRun: one training run's power cap, from recovery at start to restore at the end.

The whole sequence is here, once, for every adapter (Lightning, HF, `EnergyLoop`), which
only call `PowerCapRun.begin` at train start, `PowerCapRun.step` after every optimizer
step and `PowerCapRun.finish` on every way out:

* begin: the node's local rank 0 recovers limits left by killed runs and caps (every rank
  waits for the outcome and takes the same decision); the caps go to a monitor's figures
  and run record (``applied``);
* step: with ``watts="auto"`` the node's leader drives the cap search on the training
  steps (`CapFinder`), then shows its choice (``chosen``); with ``follow``, every
  `DECIDE_EVERY` steps the job's leader chooses the cap for the grid's intensity (or the
  price) in force (`GridFollower`) and every node puts it in force at the same step
  (``follow`` lines); a workload whose pace leaves the curve is searched again;
* finish: every limit changed is put back, with one notice per outcome.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any, TypedDict

from energy_core import checks
from energy_core.accounting.ranks import Ranks
from energy_core.accounting.steps import StepGate
from energy_core.carbon.factor import Factor, Fixed
from energy_core.devices import DeviceError
from energy_core.notices import Notice, warn_at_user_code
from energy_core.options import MeasureOptions
from energy_core.output import keys
from energy_core.output.record import POWER_CAP
from energy_core.power.errors import JournalError, PowerCapError
from energy_core.power.finder.finder import DEFAULT_MAX_SLOWDOWN, CapFinder
from energy_core.power.follow.follower import GridFollower, booking
from energy_core.power.limits import PowerLimits
from energy_core.power.plan import busy_message, select_boards, unseen_boards
from energy_core.sampling.meter import EnergyMeter
from energy_core.tracker import EnergyTracker
from energy_core.units import MAX_DEVICE_W

FOLLOW = ("carbon", "cost")
GRID_ARGUMENTS = ("carbon_intensity_series", "electricity_maps_zone", "price_per_kwh")  # what a cap may follow
DECIDE_EVERY = 25  # steps between the follower's decisions (one small collective in a multi-process job)
SEARCH_AGAIN = -1  # the follower's code for "the workload changed: search again"
NOTHING: tuple[dict[str, float], list[Notice]] = ({}, [])
PREVIOUS_RUN = "of the previous run"  # where a search kept for a second run comes from


class CapArgs(TypedDict, total=False):
    """Keyword arguments of every power cap (see `PowerCapRun`)."""

    watts: float | str | None
    fraction: float | None
    gpus: str | Sequence[int]
    strict: bool
    max_slowdown: float
    min_watts: float | None
    follow: str | None
    carbon_intensity_series: str | os.PathLike[str] | None
    electricity_maps_zone: str | None
    price_per_kwh: float | str | os.PathLike[str] | None


def check_cap_arguments(
    watts: Any, fraction: Any, gpus: Any, strict: Any, max_slowdown: Any, min_watts: Any = None
) -> tuple[float | str | None, float | None, str | tuple[int, ...], bool, float, float | None]:
    """Validate the cap's arguments; TypeError/ValueError names the argument and the allowed range."""
    if (watts is None) == (fraction is None):
        raise ValueError("give exactly one of watts (W, or 'auto') and fraction (of the default limit, in (0, 1])")
    board_w = f"in (0, {MAX_DEVICE_W:g}] W"
    if isinstance(watts, str):
        if watts != "auto":
            raise ValueError(f"watts must be a number of watts {board_w} or 'auto', got {watts!r}")
    else:
        watts = checks.number(
            "watts", watts, low=0, high=MAX_DEVICE_W, low_open=True, optional=True, what=f"{board_w} or 'auto'"
        )
    fraction = checks.number(
        "fraction",
        fraction,
        low=0,
        high=1,
        low_open=True,
        optional=True,
        what="in (0, 1] (a share of each GPU's default limit)",
    )
    if isinstance(gpus, str):
        if gpus != "all":
            raise ValueError(f"gpus must be 'all' or a list of visible GPU indices, got {gpus!r}")
    else:
        gpus = checks.indices("gpus", gpus, what="'all' or a non-empty list of distinct visible GPU indices >= 0")
    strict = checks.boolean("strict", strict)
    max_slowdown = checks.number(
        "max_slowdown", max_slowdown, low=0, high=10, low_open=True, what="in (0, 10] (0.1 means 10% slower)"
    )
    min_watts = checks.number(
        "min_watts", min_watts, low=0, high=MAX_DEVICE_W, low_open=True, optional=True, what=f"{board_w} (or None)"
    )
    if min_watts is not None and watts != "auto":
        raise ValueError(f"min_watts={min_watts:g} applies only to watts='auto' (the floor of the cap search)")
    if watts != "auto" and not math.isclose(max_slowdown, DEFAULT_MAX_SLOWDOWN, rel_tol=1e-6):
        # said, not refused: HF re-creates a cap from the arguments a checkpoint stored, which earlier
        # versions kept with a fixed cap
        warn_at_user_code(f"max_slowdown={max_slowdown:g} applies only to watts='auto' (the search's limit): a "
                          "fixed cap ignores it.")  # fmt: skip
    return watts, fraction, gpus, strict, max_slowdown, min_watts


class PowerCapRun:
    """Caps this node's GPUs for one run and always puts the previous limits back.

    Args:
        watts: Cap in W for each selected GPU, or ``"auto"`` to search (see `CapFinder`).
        fraction: Cap as a fraction of each GPU's default limit, in (0, 1].
        gpus: ``"all"`` visible GPUs or a list of visible indices.
        strict: Never train uncapped: raise before training (PermissionError without
            permission, `PowerCapError` without a GPU, with an unusable or damaged journal,
            or when another run has capped a selected board) instead of one message.
        max_slowdown: For ``watts="auto"``: largest accepted rise in time per step (with
            ``follow``: of the whole run's time).
        min_watts: For ``watts="auto"``: lowest cap tried per GPU, in W (default: each
            board's minimum limit, as NVML or amdsmi reports it).
        follow: For ``watts="auto"``: ``"carbon"`` or ``"cost"``: after the search, the cap
            in force follows the grid's intensity (or the electricity price) to minimise
            the run's CO2e (or cost) within ``max_slowdown`` over the whole run (see
            `GridFollower`). The intensity is the monitor's (``carbon_intensity_series``,
            ``electricity_maps_zone``) unless given here.
        carbon_intensity_series: With ``follow="carbon"``: the intensity over time (CSV, as
            for the monitor), instead of the monitor's.
        electricity_maps_zone: With ``follow="carbon"``: the live intensity of this zone.
        price_per_kwh: With ``follow="cost"``: the price over time (a CSV series, as for the
            monitor), instead of the monitor's.

    Raises:
        TypeError, ValueError: naming the argument: both or neither of ``watts``/``fraction``,
            a fraction outside (0, 1], a non-positive ``watts``, bad ``gpus``, ``strict``,
            ``max_slowdown``, ``min_watts`` (or ``min_watts`` without ``watts="auto"``),
            ``follow`` other than ``"carbon"``/``"cost"`` (or without ``watts="auto"``), or a
            grid argument without ``follow`` (or for the other one). Device ranges and
            unknown indices are checked in `begin`, before anything is changed. A
            ``max_slowdown`` other than its default with a fixed cap is a warning (ignored).
    """

    @classmethod
    def of(cls, owner: str, cap: dict[str, Any]) -> PowerCapRun:
        """The cap of an adapter's keyword arguments; an unknown name is a TypeError that says
        whose argument it is not, and lists the cap's arguments."""
        unknown = sorted(set(cap) - set(CapArgs.__annotations__))
        if unknown:
            allowed = ", ".join(CapArgs.__annotations__)
            raise TypeError(f"{owner} got unexpected keyword arguments {unknown}; its arguments are {allowed}")
        return cls(**cap)

    def __init__(
        self,
        watts: float | str | None = None,
        fraction: float | None = None,
        gpus: str | Sequence[int] = "all",
        strict: bool = False,
        max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
        min_watts: float | None = None,
        follow: str | None = None,
        carbon_intensity_series: str | os.PathLike[str] | None = None,
        electricity_maps_zone: str | None = None,
        price_per_kwh: float | str | os.PathLike[str] | None = None,
    ) -> None:
        self.watts, self.fraction, self.gpus, self.strict, self.max_slowdown, self.min_watts = check_cap_arguments(
            watts, fraction, gpus, strict, max_slowdown, min_watts
        )
        self.follow, self._grid = check_follow_arguments(
            self.watts, follow, carbon_intensity_series, electricity_maps_zone, price_per_kwh
        )
        grid = {name: getattr(self._grid, name) for name in GRID_ARGUMENTS} if self._grid is not None else {}
        self.args: dict[str, Any] = {  # the checked values (plain floats, ints and strings): HF stores them as JSON
            "watts": self.watts, "fraction": self.fraction,
            "gpus": self.gpus if isinstance(self.gpus, str) else list(self.gpus), "strict": self.strict,
            "max_slowdown": self.max_slowdown, "min_watts": self.min_watts, "follow": self.follow,
            **{name: value for name, value in grid.items() if value is not None},
        }  # fmt: skip
        self.limits: PowerLimits | None = None
        self.finder: CapFinder | None = None
        self.follower: GridFollower | None = None
        self.ranks = Ranks()
        self._tracker: EnergyTracker | None = None
        self._own_meter: EnergyMeter | None = None
        self._meter: EnergyMeter | None = None
        self._unix = 0.0
        self._factor: Factor | None = None
        self._own_factor: Factor | None = None
        self._total_steps: float | None = None
        self._following = False  # every rank decides with the follower at the same steps
        self._steps = StepGate()  # a repeated step (a micro-batch's end) is none
        self._search_start = (0, 0.0)  # (step, clock) where the search began
        self._carried = (0.0, 0)  # (seconds, steps) booked by a follower before a search again
        self._changes = 0
        self._saved: dict[str, Any] | None = None
        self._kept_from = "saved in the checkpoint"  # where the saved search comes from, for its notice
        self._finished = False

    @property
    def auto(self) -> bool:
        return self.watts == "auto"

    @property
    def cap_w(self) -> float | None:
        """Sum of the caps in force on this node's capped GPUs (W), or None."""
        if self.limits is None or not self.limits.capped:
            return None
        return sum(c.applied_mw for c in self.limits.capped) / 1000.0

    def caps(self) -> list[dict[str, object]]:
        """Per-GPU caps, for the run record's header."""
        if self.limits is None:
            return []
        return [
            {
                "gpu": c.board.index if c.board.index >= 0 else None,  # None: another rank's, by its UUID
                "uuid": c.board.uuid,
                "previous_w": c.previous_mw / 1000,
                "cap_w": c.applied_mw / 1000,
                "range_w": [c.limits.min_mw / 1000, c.limits.max_mw / 1000],
            }
            for c in self.limits.capped
        ]

    def figures(self) -> dict[str, float]:
        """``{"power/cap_w": W}`` while a cap is in force, else {}."""
        return {} if self.cap_w is None else {keys.CAP_W: self.cap_w}

    # ------------------------------------------------------------------ begin
    def begin(
        self,
        ranks: Ranks,
        tracker: EnergyTracker | None = None,
        total_steps: float | None = None,
        meter: EnergyMeter | None = None,
        step: int | None = None,
    ) -> list[Notice]:
        """At train start, on every rank: cap (on the node's leader), show the caps, get ready
        to search and to follow.

        Args:
            ranks: This process's part in the job.
            tracker: A monitor's tracker (its meter measures the search, its factors are
                followed, its figures and record show the caps), or None.
            total_steps: Optimizer steps the run will take, if known (for ``follow``: the
                slowdown holds over the whole run).
            meter: The meter the search reads, if not the tracker's (one of its own is
                opened when there is neither).
            step: Optimizer steps already taken (a resumed run's), where known at train
                start: a checkpoint's choice (`load_state_dict`) is put in force here;
                else at the first `step`. It is not searched again.

        A cap used for a run before (a second ``fit``/``train``, or a retry after one that
        raised without reaching `finish`) first puts that run's limits back, and keeps its
        finished search as a checkpoint's would be kept (its choice is put in force again).

        Raises:
            ValueError, PermissionError, PowerCapError: as `start`, on every rank.
        """
        notices = self._again()
        self.ranks, self._tracker, self._total_steps, self._meter = ranks, tracker, total_steps, meter
        self._finished = False
        notices += self.start_on(ranks)
        self._publish()
        if self.cap_w is not None:
            self._record("applied")
        if self.follow is not None:
            notices += self._grid_factor(tracker)
        self._following = self.follow is not None and not ranks.agree(self._factor is None)
        if self.follow is not None and self._factor is not None and not self._following:
            text = f"follow={self.follow!r}: another rank has no {self._what()} to follow: no rank follows it."
            notices.append(Notice("warn", text))
        return notices if step is None else notices + self._restore_finder(step)

    def _again(self) -> list[Notice]:
        """Before a run: what an earlier run with this cap left is finished (its limits put
        back, if it ended without `finish`), its finished search becomes saved state (as
        from a checkpoint, unless one is loaded), and nothing else carries over."""
        notices = self.finish()
        finder = self.finder
        saved = self._saved or {}
        if finder is not None and finder.done and finder.chosen is not None and not saved.get("finder"):
            self._saved = {**saved, "finder": finder.state_dict()}
            self._kept_from = PREVIOUS_RUN
        self.limits, self.finder, self.follower = None, None, None
        self._own_meter = self._own_factor = self._factor = None
        self._following = False
        self._steps.begin()
        self._search_start, self._carried, self._changes = (0, 0.0), (0.0, 0), 0
        return notices

    def _grid_factor(self, tracker: EnergyTracker | None) -> list[Notice]:
        """The intensity (or price) to follow: the cap's own, else the monitor's."""
        own = self._grid
        if self.follow == "carbon":
            if own is not None and (own.carbon_intensity_series or own.electricity_maps_zone):
                self._factor = self._own_factor = own.carbon_factor()
            elif tracker is not None:
                self._factor = tracker.factors.carbon
        else:
            price = own.price_factor() if own is not None else None
            if price is not None:
                self._factor = self._own_factor = price
            elif tracker is not None and tracker.factors.price is not None:
                self._factor = tracker.factors.price
        if self._own_factor is not None:
            self._own_factor.start()
        if self._factor is None:
            what = (
                "an intensity (carbon_intensity_series or electricity_maps_zone"
                if self.follow == "carbon"
                else ("a price (price_per_kwh")
            )
            return [Notice("warn", f"follow={self.follow!r} needs {what}, on the cap or on a monitor in the same "
                                   "trainer): the cap stays at the search's choice.")]  # fmt: skip
        if isinstance(self._factor, Fixed):
            fixed = self._factor.value.value
            return [Notice("info", f"follow={self.follow!r}: the {self._what()} is fixed ({fixed:g}): the cap "
                                   "spends the slowdown allowed over the whole run on the leanest caps.")]  # fmt: skip
        return []

    def _what(self) -> str:
        return "grid intensity" if self.follow == "carbon" else "electricity price"

    def start(self, node_boards: Sequence[str] = ()) -> list[Notice]:
        """Recover limits left by killed runs, then cap (on one process per node).

        With ``gpus="all"``, the boards the node's ranks train on (``node_boards``,
        `Ranks.node_boards`) are capped too where this process does not see them
        (``CUDA_VISIBLE_DEVICES`` set per rank). Boards that another live run has capped are
        left as they are (one notice). With
        ``watts="auto"`` the boards are registered here and the search begins at the
        first `step`.

        Raises:
            ValueError: a cap outside a device's range or an unknown GPU index (nothing
                changed).
            PermissionError: no permission and ``strict=True`` (nothing changed).
            PowerCapError: with ``strict=True``: no GPU, the journal unusable or damaged,
                a board capped by another run, or a driver error (nothing changed).
        """
        self.limits = PowerLimits()
        try:
            boards = select_boards(self.gpus)
            if self.gpus == "all":
                boards += unseen_boards(boards, node_boards)
        except DeviceError as err:
            return self._uncapped([], f"No GPU to cap ({err}).", "info")
        if not boards:
            return self._uncapped([], "No GPU visible to this process: nothing to cap.", "info")
        notices: list[Notice] = []
        try:
            notices += [Notice("warn", m) for m in self.limits.recover()]
            if self.strict and self.limits.damage:
                raise JournalError(" ".join(self.limits.damage) + " strict=True: check the boards' limits first.")
            self.limits.apply(boards, None if self.auto else self.watts, self.fraction, strict=self.strict)  # type: ignore[arg-type]
        except JournalError as err:
            return self._uncapped(notices, f"Power cap not applied: {err}", "warn")
        except DeviceError as err:
            return self._uncapped(notices, f"Power cap not applied: the GPU driver failed ({err}).", "warn")
        except PermissionError as err:
            if self.strict:
                raise
            return [*notices, Notice("warn", f"{err} Training continues uncapped.")]
        notices += [Notice("warn", m) for m in self.limits.take_messages()]
        if self.limits.busy:
            notices.append(Notice("warn", busy_message(self.limits.busy)))
        if self.limits.capped and not self.auto:
            in_force = ", ".join(
                f"{c.board.label} {c.applied_mw / 1000:g} W (was {c.previous_mw / 1000:g} W)"
                for c in self.limits.capped
            )
            notices.append(Notice("info", "Power cap in force: " + in_force))
            above = [c for c in self.limits.capped if c.applied_mw > c.previous_mw]
            if above:  # fraction x the default, or watts, over an administrator's lower limit: more power, not less
                named = ", ".join(f"{c.board.label} ({c.previous_mw / 1000:g} W)" for c in above)
                notices.append(Notice("warn", f"The cap is above the limit in force before it on {named}: this run "
                                      "may draw more power there, not less, until the limit is put back."))  # fmt: skip
        return notices

    def _uncapped(self, notices: list[Notice], reason: str, level: str) -> list[Notice]:
        """Train uncapped with one message, or (``strict``) raise `PowerCapError` first.

        Raises:
            PowerCapError: with ``strict=True``.
        """
        reason = reason if reason.endswith(".") else reason + "."
        if self.strict:
            raise PowerCapError(f"{reason} strict=True: the run does not start uncapped.")
        return [*notices, Notice(level, f"{reason} Training continues uncapped.")]

    def start_on(self, ranks: Ranks) -> list[Notice]:
        """`start` on the node's local rank 0; every rank waits and raises the same error.

        Raises:
            ValueError, PermissionError, PowerCapError: as `start`, on every rank when any
                node failed.
        """
        failure: Exception | None = None
        notices: list[Notice] = []
        if ranks.leads_node:
            try:
                notices = self.start(ranks.node_boards)
            except (ValueError, PermissionError, PowerCapError) as err:
                failure = err
        for kind in (ValueError, PermissionError, PowerCapError):  # every rank reaches every decision
            if ranks.agree(isinstance(failure, kind)):
                raise failure if isinstance(failure, kind) else kind("Setting the power cap failed on another node.")
        return notices

    # ------------------------------------------------------------------ steps
    def step(self, step: int) -> tuple[dict[str, float], list[Notice]]:
        """After every optimizer step, on every rank (once per step: a repeated ``step`` is
        ignored): the search's and the follower's changes of cap, as metrics
        (``{"power/cap_w": W}``) and notices. A few integer comparisons on most steps."""
        if not self._steps.new(step):
            return NOTHING
        metrics: dict[str, float] = {}
        notices: list[Notice] = []
        if self._searching():
            metrics, notices = self._search(step)
        if self._following and step % DECIDE_EVERY == 0:
            changed, said = self._follow_step(step)
            metrics.update(changed)
            notices += said
        return (metrics, notices) if metrics or notices else NOTHING

    def _searching(self) -> bool:
        """Whether this process drives a search now (the node's leader, boards capped, not done)."""
        if not self.auto or self.limits is None or not self.limits.capped:
            return False
        return self.finder is None or not self.finder.done

    def _search(self, step: int) -> tuple[dict[str, float], list[Notice]]:
        notices: list[Notice] = []
        if self.finder is None:
            notices = self._restore_finder(step)
            if self.finder is not None and self.finder.done:
                return self.figures(), notices
            if self.finder is None:
                notices = self._new_finder(step)  # else a checkpoint's search goes on, from this step
        assert self.finder is not None
        changed = self.finder.on_step(step)
        if not self.finder.done:
            return self._changed(changed), notices
        self._record("chosen")
        notices.append(Notice("warn" if self.finder.refused else "info", self.finder.summary()))
        notices += self._limit_notices()
        if self._following and self.ranks.leads_job and not self.finder.refused:
            self._follower_from(step, searched=True)
        return self._changed(changed), notices

    def _limit_notices(self) -> list[Notice]:
        """The limits' messages so far (a change left undone, and why), as warnings."""
        return [] if self.limits is None else [Notice("warn", m) for m in self.limits.take_messages()]

    def _restore_finder(self, step: int) -> list[Notice]:
        """At train start, the choice of a checkpoint's search in force (recorded, shown, followed
        from); nothing when it does not fit these boards (the search then runs as usual)."""
        if self._saved is None or not self._saved.get("finder") or not self._searching():
            return []
        notices = self._new_finder(step, restoring=True)
        if self.finder is None or (not self.finder.done and not self.finder.resumed):
            self.finder = None  # nothing taken: the search runs as usual
            return []
        if not self.finder.done:  # a search in progress goes on from the next step
            return notices
        self._publish()
        self._record("chosen")
        if self._following and self.ranks.leads_job and not self.finder.refused:
            self._follower_from(step)
        return notices + self._limit_notices()

    def _new_finder(self, step: int, restoring: bool = False) -> list[Notice]:
        assert self.limits is not None
        meter = self._meter or (self._tracker.meter if self._tracker is not None else None)
        idle = meter is None or meter.sampler is None or not meter.sampler.running
        if meter is None or (idle and not restoring):  # a monitor's meter starts by the first step
            if self._own_meter is None:
                self._own_meter = EnergyMeter(devices=["gpu"], sample_interval_s=0.05)
                self._own_meter.open()
            meter = self._own_meter
        self.finder = finder = CapFinder(self.limits, meter, self.max_slowdown, self.min_watts, partner=self._following)
        self._search_start = (step, self._trained())
        self._unix = time.time() - finder.clock()  # the meter's clock, as unix time (for the factor)
        if self._saved is not None and finder.restore(self._saved.get("finder")):
            del self._saved["finder"]  # the follower's part waits for the follower
            if not finder.done:
                measured = len(finder.search.estimates) if finder.search is not None else 0
                text = (
                    f"Power-cap search: the search saved in the checkpoint goes on ({measured} caps measured, "
                    f"{finder.steps_used} of at most {finder.budget} steps used)."
                )
                return [Notice("info", text)]
            if finder.refused:
                text = f"Power-cap search: the choice {self._kept_from} could not be put in force ({finder.refused})."
                return [Notice("warn", text)]
            kept = finder.cap_w(finder.chosen or 0)
            where = (
                "Power-cap search: the choice of the previous run is kept"
                if self._kept_from == PREVIOUS_RUN
                else "Power-cap search: the choice saved in the checkpoint is kept"
            )
            return [Notice("info", f"{where} ({kept:g} W); not searched again.")]
        if restoring:
            return []
        if finder.done:
            return [Notice("warn", f"No cap to search below the limit at start ({finder.cap_w(0):g} W in all).")]
        text = (
            f"Searching for the power cap that saves most energy within {self.max_slowdown:.0%} slowdown: "
            f"{len(finder.fractions)} candidates from {finder.cap_w(0):g} W to {finder.cap_w(-1):g} W, "
            f"at most {finder.budget} steps{' and one phase for following' if finder.partner else ''} "
            f"(Zeus's defaults: {finder.zeus_steps})."
        )
        return [Notice("info", text)]

    def _follower_from(self, step: int, searched: bool = False) -> None:
        """The job leader's follower, from the finder's curve. It books what a checkpoint's follower
        had booked, and the steps and time of a search this process ran (``searched``), with what an
        earlier follower had booked before that search (a search again)."""
        assert self.finder is not None and self._factor is not None
        found = self.finder.curve()
        if found is None:
            return
        curve, reference_s = found
        finder, unix = self.finder, self._unix
        self.follower = GridFollower(
            curve,
            reference_s,
            self.max_slowdown,
            self._factor,
            self._total_steps,
            wall=lambda: unix + finder.clock(),
            every=DECIDE_EVERY,
        )
        since = (step, self._trained())
        saved = self._saved.pop("follower", None) if self._saved is not None else None
        taken = bool(saved) and self.follower.load_state_dict(saved, since)  # a malformed one: as if none
        if searched or not taken:
            seconds, steps = self._search_spent(step)
            self.follower.book(seconds, steps, since)

    def _search_spent(self, step: int) -> tuple[float, int]:
        """(seconds, steps) since this process's search began, with what a follower had booked before
        it (`_search_again`): what a follower made now books."""
        (start_step, start_t), (carried_s, carried_steps) = self._search_start, self._carried
        return self._trained() - start_t + carried_s, max(step - start_step, 0) + carried_steps

    def _trained(self) -> float:
        """The finder's clock less the time a time shift paused on the same tracker: the follower books
        training time (a pause is no part of a step, nor of the run's slowdown)."""
        assert self.finder is not None
        return self.finder.clock() - (self._tracker.link.paused_s if self._tracker is not None else 0.0)

    def _follow_step(self, step: int) -> tuple[dict[str, float], list[Notice]]:
        """Every rank, every `DECIDE_EVERY` steps: the job leader's decision, put in force by
        every node's leader once every node has finished its search."""
        code = 0
        if self.ranks.leads_job and self.follower is not None and self.finder is not None and not self.finder.refused:
            if self.follower.changed():
                code = SEARCH_AGAIN
            else:
                code = 1 + self.follower.decide(step, self.finder.in_force() or 0, self._trained())
        ready = int(not self.ranks.leads_node or not self._searching())
        agreed, _ = self.ranks.sum_by_name({"code": code, "ready": ready, "ranks": 1})
        if agreed["ready"] < agreed["ranks"]:
            return NOTHING
        if agreed["code"] == SEARCH_AGAIN:
            return self._search_again(step)
        rung = int(agreed["code"]) - 1
        finder = self.finder
        if rung < 0 or finder is None or not self.ranks.leads_node or finder.refused or finder.in_force() == rung:
            return NOTHING
        try:
            changed = finder.put(rung)
        except (DeviceError, PermissionError) as err:
            return {}, [Notice("warn", f"Following the grid: setting a limit failed ({err}); the cap stays as it is.")]
        if finder.refused:  # not in force: this node follows no more
            text = f"Following the grid stops: {finder.refused}; the caps stay as they are."
            return self._changed(changed), [Notice("warn", text), *self._limit_notices()]
        self._changes += 1
        self._record("follow", step=step, rung=rung, intensity=self.follower.intensity if self.follower else None)
        return self._changed(changed), []

    def _search_again(self, step: int) -> tuple[dict[str, float], list[Notice]]:
        """The workload's pace left the curve: every node searches again from this step (the
        time booked so far counts against the new curve's allowance)."""
        if self.follower is not None:  # with the stretch since its last decision, which it did not take
            booked = self.follower.state_dict(step, self._trained())
            self._carried = (booked["seconds"], booked["steps"])
        self.follower = None
        if not self.ranks.leads_node or self.limits is None or not self.limits.capped:
            return NOTHING
        self.finder = None
        text = (
            "Following the grid: the steps' pace has left the measured curve (the workload changed): "
            "the power-cap search runs again."
        )
        return {}, [Notice("info", text)]

    def _changed(self, metrics: dict[str, float] | None) -> dict[str, float]:
        if metrics is not None:  # a change, or ({}) no cap of this run in force any more
            self._publish()
        return metrics or {}

    # ------------------------------------------------------------------ the record and the figures
    def _publish(self) -> None:
        """Show the caps in force in a monitor's figures (``power/cap_w`` in every window)
        and in its run record's header; without a cap in force, take the figure away."""
        if self._tracker is not None:
            self._tracker.show_power_cap(lambda: self.cap_w, self.caps())

    def _record(self, event: str, **fields: Any) -> None:
        """A ``power_cap`` line in a monitor's run record (the header may precede the cap)."""
        if self._tracker is None:
            return
        if self.finder is None:
            self._tracker.write_record(POWER_CAP, event=event, caps=self.caps(), table=None, **fields)
        elif event == "follow":
            self._tracker.write_record(POWER_CAP, event=event, caps=self.caps(), **fields)
        else:
            choice = self.finder.choice() if self.finder.done else None
            self._tracker.write_record(
                POWER_CAP, event=event, caps=self.caps(), table=self.finder.table(), choice=choice, **fields
            )

    @property
    def capping(self) -> bool:
        """Between `begin` (or `start`) and `finish`: limits of this run may be in force."""
        return self.limits is not None and not self._finished

    # ------------------------------------------------------------------ finish
    def finish(self) -> list[Notice]:
        """Restore every limit changed (idempotent) and take ``power/cap_w`` out of the
        tracker's figures; the notices to show (a restore that failed is a warning)."""
        if self._finished:
            return []
        self._finished = True
        if self._tracker is not None:
            self._tracker.show_power_cap(None, self.caps())
        notices: list[Notice] = []
        if self.finder is not None and self.finder.steps_used and not self.finder.done:
            notices.append(Notice("info", self.finder.summary()))
        if self.follower is not None and self._changes:
            notices.append(Notice("info", self._follow_summary()))
        if self.limits is not None:
            notices += self._restore(self.limits)
            if self.limits.capped:  # the driver refused: tried again at the next cap here and at exit
                self.limits.keep_trying()
                boards = ", ".join(c.board.label for c in self.limits.capped)
                notices.append(Notice("warn", f"{boards}: the power cap is still on; putting the limit back is tried "
                                      "again at the next cap's start in this process and at its exit (or, once it "
                                      "has ended, run energy-report --restore-power-limits)."))  # fmt: skip
            else:
                self.limits.guard.uninstall()
        if self._own_meter is not None:
            self._own_meter.close()
            self._own_meter = None
        if self._own_factor is not None:
            self._own_factor.stop()
        return notices

    def _follow_summary(self) -> str:
        assert self.follower is not None
        return (
            f"Followed the {self._what()}: {self._changes} changes of cap; the time booked so far is "
            f"{self.follower.slowdown():+.1%} against the limit at start (allowed: "
            f"+{self.max_slowdown:.0%} over the whole run)."
        )

    @staticmethod
    def _restore(limits: PowerLimits) -> list[Notice]:
        """Put every limit back: info when every board carries its limit at start again, else
        every message as a warning."""
        boards = list(limits.capped)
        messages = limits.restore()
        trouble = bool(limits.capped)
        for capped in boards:
            try:
                trouble |= capped.board.limit_mw() != capped.previous_mw
            except (DeviceError, PermissionError):
                trouble = True
        return [Notice("warn" if trouble else "info", m) for m in messages]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The search's measurements and choice (not searched again after a resume; a search in
        progress goes on from its measurements) and the follower's time booked (a search's steps
        and time, before there is a follower); {} when there is nothing to keep."""
        state: dict[str, Any] = {}
        searched = self.finder.state_dict(self._steps.last) if self.finder is not None else None
        if self.finder is not None and self.finder.done and self.finder.chosen is not None:
            state["finder"] = searched
        elif self.finder is not None and not self.finder.done and searched and searched["steps"]:
            state["finder"] = searched  # in progress: it goes on after a resume
        elif self._saved is not None and self._saved.get("finder"):
            state["finder"] = self._saved["finder"]
        if self.follower is not None:
            state["follower"] = self.follower.state_dict(self._steps.last, self._trained())
        elif self._following and self.ranks.leads_job and self.finder is not None:
            # Searching for the follower (first, or again): a resumed run searches from scratch, and the steps
            # and time of this search count against the run's slowdown all the same, with a checkpoint's.
            seconds, steps = self._search_spent(self._steps.last)
            before = booking(self._saved.get("follower"), self._total_steps) if self._saved is not None else None
            if before is not None:  # a checkpoint's, not yet taken by a follower
                seconds, steps = seconds + before[0], steps + before[1]
            state["follower"] = {"seconds": seconds, "steps": steps}
        elif self._saved is not None and self._saved.get("follower"):
            state["follower"] = self._saved["follower"]
        return state

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Keep a checkpoint's state for the first `step` (checked against the boards then)."""
        self._saved = dict(state) if state else None
        self._kept_from = "saved in the checkpoint"


def check_follow_arguments(
    watts: Any, follow: Any, carbon_intensity_series: Any, electricity_maps_zone: Any, price_per_kwh: Any
) -> tuple[str | None, MeasureOptions | None]:
    """Validate ``follow`` and the cap's own grid arguments; ValueError/TypeError names the argument.

    Returns:
        ``follow``, and the grid arguments as `MeasureOptions` (None when none is given).
    """
    if follow is not None:
        follow = checks.choice("follow", follow, FOLLOW)
        if watts != "auto":
            raise ValueError(f"follow={follow!r} needs watts='auto' (the search measures the curve it follows)")
    given = dict(zip(GRID_ARGUMENTS, (carbon_intensity_series, electricity_maps_zone, price_per_kwh)))
    named = [name for name, value in given.items() if value is not None]
    if not named:
        return follow, None
    wanted = {"carbon": ("carbon_intensity_series", "electricity_maps_zone"), "cost": ("price_per_kwh",)}
    for name in named:
        if follow is None or name not in wanted[follow]:
            needs = "follow='carbon'" if name != "price_per_kwh" else "follow='cost'"
            raise ValueError(f"{name} on a power cap applies only with {needs} (the intensity or price it follows)")
    return follow, MeasureOptions.of("PowerCap", {k: v for k, v in given.items() if v is not None})
