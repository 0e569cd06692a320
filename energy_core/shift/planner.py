"""plan_time_shift: when a job should compute, between now and its deadline, to emit least.

The grid intensity is a step function; the job needs ``work_s`` seconds of computing at
``busy_w``. Each mode has its own cost model:

* ``"wait"``: one contiguous run with a flexible start; while it waits the job holds its
  hardware at ``idle_w``;
* ``"pause"``: runs and pauses in one process: ``idle_w`` from ``start`` until the job ends,
  whenever it does not compute, and ``resume_s`` of busy power at each resume (0 by default);
* ``"requeue"``: the job exits at a checkpoint and is started again later: nothing is drawn
  between runs, and each restart costs ``resume_s`` at busy power before its work goes on (a
  first run that begins after ``start`` is a restart too: the job exits at once and comes back).

The optimum is exact. Cut the window into cells on the series' own grid (the intensity is
constant in each). For a fixed pattern of runs the cost is linear in the positions of the
runs' edges, and the work is one linear constraint, so an optimum lies at a vertex: every
edge on a cell boundary but at most one. A dynamic programme over the cells then finds it:
its state is the job's phase at a boundary (not started, running, paused, ended), whether the
one cell cut by an edge has been used, the number of whole cells run and the number of resumes;
for each number of resumes the work fixes how many whole cells and how much of the cut cell
are run. The plan's CO2e is then evaluated on the intensity itself.

Example:
    >>> from datetime import datetime, timedelta, timezone
    >>> t = datetime(2026, 6, 1, tzinfo=timezone.utc)
    >>> dirty_then_clean = [(t, 500.0), (t + timedelta(hours=2), 100.0)]
    >>> plan = plan_time_shift(dirty_then_clean, work_s=3600, start=t, deadline=t + timedelta(hours=4),
    ...                        busy_w=300.0, mode="requeue")
    >>> [(a.hour, b.hour) for a, b in plan.runs], round(plan.saving, 2)
    ([(2, 3)], 0.8)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np

from energy_core import checks
from energy_core.shift.intensity import Intensity
from energy_core.units import J_PER_KWH, MAX_RUN_W

MODES = ("wait", "pause", "requeue")
MAX_CELLS = 200  # a longer window is planned on a coarser grid, each cell at its mean intensity
MAX_RESUMES = 12  # with resume_s > 0: at most this many restarts in a plan
TIE = 1e-9  # of two plans that emit the same, the one with fewer runs that ends sooner
EDGE_S = 1e-6  # seconds: two times closer than this are one
MAX_S = 1e9  # seconds (about 31 years): the most work or resume a plan takes, so that its times stay datetimes
# The latest time a plan starts or ends by, or a checkpoint holds (unix): MAX_S after it is still a datetime.
MAX_UNIX = datetime(9000, 1, 1, tzinfo=timezone.utc).timestamp()

NS, RUN, PAU, END = range(4)  # the job's phase at a cell boundary: not started, running, paused, ended


@dataclass(frozen=True)
class TimeShiftPlan:
    """When a job computes, and what that emits.

    Attributes:
        runs: ``(begin, end)`` aware datetimes (UTC) when the job computes; their lengths add
            up to ``work_s`` plus ``resume_s`` for each resume (`resumes`).
        co2e_kg: The plan's CO2e: busy power while running and resuming, ``idle_w`` while
            waiting or paused (``"wait"``, ``"pause"``), on the intensity given.
        run_now_co2e_kg: Starting at ``start`` without pauses.
        saving: ``1 - co2e_kg / run_now_co2e_kg`` (0 when that is 0).
        mode: ``"wait"``, ``"pause"`` or ``"requeue"``.
        fits: Whether the work fits before the deadline; when it does not, the plan runs now.
        note: Why the plan runs now, when it does; otherwise "".
        exact: False when the window was longer than `MAX_CELLS` steps of the series (or its
            rows too irregular) and was planned on a coarser grid.
    """

    runs: list[tuple[datetime, datetime]]
    co2e_kg: float
    run_now_co2e_kg: float
    saving: float
    mode: str
    start: datetime
    deadline: datetime
    work_s: float
    fits: bool = True
    note: str = ""
    exact: bool = True
    busy_w: float = field(default=0.0, repr=False)
    idle_w: float = field(default=0.0, repr=False)
    resume_s: float = field(default=0.0, repr=False)

    @property
    def end(self) -> datetime:
        """When the last run ends."""
        return self.runs[-1][1]

    @property
    def resumes(self) -> int:
        """How many runs begin with a resume: every run after the first, and in ``"requeue"`` mode
        a first run that begins after ``start`` (the job exits at once and is started again)."""
        late = self.mode == "requeue" and (self.runs[0][0] - self.start).total_seconds() > EDGE_S
        return len(self.runs) - 1 + int(late)

    @property
    def paused_s(self) -> float:
        """Seconds between ``start`` and the end not computing (waiting and pauses)."""
        busy = sum((b - a).total_seconds() for a, b in self.runs)
        return (self.end - self.start).total_seconds() - busy

    @property
    def shifted(self) -> bool:
        """Whether the plan does anything but start now and run to the end."""
        return len(self.runs) > 1 or abs((self.runs[0][0] - self.start).total_seconds()) > EDGE_S

    def describe(self) -> str:
        """One line: the runs (UTC) and the saving."""
        if not self.shifted:
            return f"runs now ({self.note})" if self.note else "runs now: no later start emits less"
        runs = ", ".join(f"{_hhmm(a)}-{_hhmm(b)}" for a, b in self.runs)
        return (
            f"{len(self.runs)} run(s) {runs} UTC, done {_hhmm(self.end)} before the deadline {_hhmm(self.deadline)}: "
            f"{self.co2e_kg * 1000:.4g} g CO2e instead of {self.run_now_co2e_kg * 1000:.4g} g ({self.saving:.1%} less)"
        )

    def to_record(self) -> dict[str, Any]:
        """The plan as a run-record field: unix times and figures."""
        return {
            "mode": self.mode,
            "runs": [[a.timestamp(), b.timestamp()] for a, b in self.runs],
            "co2e_kg": self.co2e_kg,
            "run_now_co2e_kg": self.run_now_co2e_kg,
            "saving": self.saving,
            "work_s": self.work_s,
            "deadline": self.deadline.timestamp(),
            "fits": self.fits,
            "exact": self.exact,
            "note": self.note,
        }


def _hhmm(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%m-%d %H:%M")


def plan_time_shift(
    intensity: Any,
    *,
    work_s: float,
    start: datetime,
    deadline: datetime,
    busy_w: float,
    idle_w: float = 0.0,
    resume_s: float = 0.0,
    mode: str = "pause",
) -> TimeShiftPlan:
    """The plan of least CO2e that computes ``work_s`` seconds between ``start`` and ``deadline``.

    Args:
        intensity: The grid intensity over time: a CSV series path (as for
            ``carbon_intensity_series``), a recorded series or a list of ``(datetime, g_per_kwh)``.
        work_s: Seconds of computing the job needs, in (0, 1e9].
        start: When the job may begin (an aware datetime, from 1970 to 9000 UTC; usually now).
        deadline: When it must be done (an aware datetime, from 1970 to 9000 UTC).
        busy_w: Power while computing (and resuming), W, > 0.
        idle_w: Power while the job waits or pauses in its process, W, in [0, ``busy_w``].
        resume_s: Seconds of busy power each resume costs before work goes on, in [0, 1e9].
        mode: ``"wait"``, ``"pause"`` or ``"requeue"`` (see the module's description).

    Returns:
        The plan. When ``work_s`` does not fit between ``start`` and ``deadline``, it runs
        now and ``fits`` is False (``note`` says so).

    Raises:
        TypeError, ValueError: naming the argument and the allowed range.
    """
    curve = Intensity.of(intensity)
    work_s = checks.number("work_s", work_s, low=0, low_open=True, high=MAX_S, unit=" s")
    busy_w = checks.number("busy_w", busy_w, low=0, low_open=True, high=MAX_RUN_W, unit=" W")
    idle_w = checks.number("idle_w", idle_w, low=0, high=busy_w, what=f"in [0, busy_w={busy_w:g}] W")
    resume_s = checks.number("resume_s", resume_s, low=0, high=MAX_S, unit=" s")
    mode = checks.choice("mode", mode, MODES)
    t0, t1 = unix_time("start", start), unix_time("deadline", deadline)
    model = _Model(curve, mode, busy_w, idle_w, resume_s)
    now = _Plan([(t0, t0 + work_s)], True)
    if work_s > t1 - t0 + EDGE_S:
        note = f"the work ({work_s / 3600:.3g} h) does not fit before the deadline ({(t1 - t0) / 3600:.3g} h away)"
        return model.plan(now, now, t0, t1, work_s, fits=False, note=note)
    best = _optimum(model, t0, t1, work_s) or now
    if model.cost(best.runs, t0) >= model.cost(now.runs, t0) * (1 - 1e-9):
        best = _Plan(now.runs, best.exact)  # no plan emits less: start now
    return model.plan(best, now, t0, t1, work_s)


def unix_time(name: str, value: Any) -> float:
    """An aware datetime's unix time, from 1970 to 9000 UTC (`MAX_UNIX`): a plan's times stay datetimes.

    Raises:
        TypeError, ValueError: naming ``name`` (and the range).
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be an aware datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with its UTC offset), got {value.isoformat()}")
    t = value.timestamp()
    if not 0.0 <= t <= MAX_UNIX:
        raise ValueError(f"{name} must be in [{_utc(0.0).isoformat()}, {_utc(MAX_UNIX).isoformat()}] (UTC), "
                         f"got {value.isoformat()}")  # fmt: skip
    return t


class _Plan(NamedTuple):
    runs: list[tuple[float, float]]  # unix times
    exact: bool


@dataclass(frozen=True)
class _Model:
    """One mode's cost model on one intensity curve."""

    curve: Intensity
    mode: str
    busy_w: float
    idle_w: float
    resume_s: float

    @property
    def held_w(self) -> float:
        """Power drawn while not computing, from ``start`` to the job's end."""
        return 0.0 if self.mode == "requeue" else self.idle_w

    def cost(self, runs: list[tuple[float, float]], t0: float) -> float:
        """kg CO2e of these runs (unix times) for a job that may start at ``t0``."""
        busy = sum(self.curve.integral(a, b) for a, b in runs)
        held = self.curve.integral(t0, runs[-1][1]) - busy
        return (self.busy_w * busy + self.held_w * held) / J_PER_KWH / 1000.0

    def plan(
        self, best: _Plan, now: _Plan, t0: float, t1: float, work_s: float, fits: bool = True, note: str = ""
    ) -> TimeShiftPlan:
        co2e, run_now = self.cost(best.runs, t0), self.cost(now.runs, t0)
        utc = [(_utc(a), _utc(b)) for a, b in best.runs]
        return TimeShiftPlan(
            utc, co2e, run_now, 1 - co2e / run_now if run_now > 0 else 0.0, self.mode, _utc(t0), _utc(t1),
            work_s, fits, note, best.exact, self.busy_w, self.idle_w, self.resume_s,
        )  # fmt: skip


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


# --------------------------------------------------------------------------- the cells
def _cells(curve: Intensity, t0: float, t1: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """The window cut on the series' grid: (edges, the intensity of each cell, exact).

    The grid runs through every row of the series at its common step (extended past its
    ends, where the end values hold); a window of more than `MAX_CELLS` steps is cut on a
    multiple of the step and each cell takes its mean intensity (not exact then).
    """
    step = curve.step_s()
    exact = True
    if (t1 - t0) / step > MAX_CELLS:
        step *= math.ceil((t1 - t0) / step / MAX_CELLS)
        exact = False
    anchor = curve.times[0]
    first = math.floor((t0 - anchor) / step) + 1
    inside = [anchor + k * step for k in range(first, first + MAX_CELLS + 2)]
    inside = [t for t in inside if t0 + EDGE_S < t < t1 - EDGE_S]
    edges = np.array([t0, *inside, t1])
    values = np.array([curve.mean(a, b) for a, b in zip(edges[:-1], edges[1:])])
    return edges, values, exact


# --------------------------------------------------------------------------- the programme
class _Move(NamedTuple):
    """What the job does in one cell, from the phase at its start to the phase at its end."""

    kind: str  # "idle", "full", "stop" (run ended at the cell's start), "in" (starts inside, runs to
    # the end), "out" (runs from the start for part of the cell), "none" (after the end)
    frm: int
    to: int
    cut: bool  # the cell cut by an edge
    resume: bool


def _moves(mode: str) -> list[_Move]:
    moves = [
        _Move("idle", NS, NS, False, False),
        _Move("full", NS, RUN, False, False),
        _Move("in", NS, RUN, True, False),
        _Move("out", NS, END, True, False),
        _Move("full", RUN, RUN, False, False),
        _Move("stop", RUN, END, False, False),
        _Move("out", RUN, END, True, False),
        _Move("none", END, END, False, False),
    ]
    if mode != "wait":
        moves += [
            _Move("out", NS, PAU, True, False),
            _Move("stop", RUN, PAU, False, False),
            _Move("out", RUN, PAU, True, False),
            _Move("idle", PAU, PAU, False, False),
            _Move("full", PAU, RUN, False, True),
            _Move("in", PAU, RUN, True, True),
            _Move("out", PAU, PAU, True, True),
            _Move("out", PAU, END, True, True),
        ]
    return moves


class _Layout(NamedTuple):
    """Which cell the cutting edge falls in, and whether the first and last cells are run whole."""

    cut: str  # "first", "last" or "inner"
    first_full: bool
    last_full: bool


def _optimum(model: _Model, t0: float, t1: float, work_s: float) -> _Plan | None:
    """The least-CO2e plan over the vertices (see the module's description); None when nothing
    but starting now fits."""
    edges, values, exact = _cells(model.curve, t0, t1)
    lengths = np.diff(edges)
    if len(lengths) < 2:
        return None  # one cell, one intensity: starting now is optimal
    counting = model.resume_s > 0  # resumes change the work only when they cost time
    inner = len(lengths) - 2
    most = min(MAX_RESUMES, inner // 2 + 2) if counting else 0  # runs alternate with pauses; each may resume
    both = (False, True)
    layouts = [_Layout("inner", head, tail) for head in both for tail in both]
    layouts += [_Layout("first", False, tail) for tail in both] + [_Layout("last", head, False) for head in both]
    best: tuple[float, _Layout, int] | None = None
    for layout in layouts:
        targets = _targets(layout, lengths, work_s, model.resume_s, most)
        if not targets:
            continue
        value = _sweep(model, values, lengths, layout, targets, counting, keep=False)[0]
        for resumes, cost in value.items():
            if best is None or cost < best[0]:
                best = (cost, layout, resumes)
    if best is None:
        return None
    _, layout, resumes = best
    target = {resumes: _targets(layout, lengths, work_s, model.resume_s, most)[resumes]}
    _, path = _sweep(model, values, lengths, layout, target, counting, keep=True)
    return _Plan(_runs(path, edges, target[resumes][1], work_s, model.resume_s, model.mode), exact)


def _targets(
    layout: _Layout, lengths: np.ndarray, work_s: float, resume_s: float, most: int
) -> dict[int, tuple[int, float]]:
    """For each number of resumes: (whole inner cells run, seconds run in the cut cell), where
    the layout allows the work to be done that way."""
    step, first, last = float(lengths[1]) if len(lengths) > 2 else 0.0, float(lengths[0]), float(lengths[-1])
    inner = len(lengths) - 2
    found = {}
    for resumes in range(most + 1):
        whole = work_s + resume_s * resumes - first * layout.first_full - last * layout.last_full
        room = {"inner": step, "first": first, "last": last}[layout.cut]
        if whole <= 0 or room <= 0:
            continue
        cells = max(0, math.ceil((whole - room) / step - 1e-9)) if step > 0 else 0
        cut = whole - cells * step
        if not (EDGE_S / 2 < cut <= room + EDGE_S) or cells + (layout.cut == "inner") > inner:
            continue
        found[resumes] = (cells, min(cut, room))
    return found


def _sweep(
    model: _Model,
    values: np.ndarray,
    lengths: np.ndarray,
    layout: _Layout,
    targets: dict[int, tuple[int, float]],
    counting: bool,
    keep: bool,
) -> tuple[dict[int, float], list[_Move]]:
    """The programme for one layout: the least cost for each number of resumes in ``targets``
    and, with ``keep``, the moves of the best one (one per cell)."""
    resumes = sorted(targets)
    wanted = np.array([targets[r][0] for r in resumes])
    cut = np.array([targets[r][1] for r in resumes])[:, None, None]  # seconds in the cut cell, per target
    shape = (len(resumes), int(wanted.max()) + 1, (max(resumes) + 1) if counting else 1)
    scale = model.busy_w * float(values.max() or 1.0) * float(lengths.sum())
    moves = _moves(model.mode)
    state = {(p, c): np.full(shape, np.inf) for p in range(4) for c in (False, True)}
    state[(NS, False)][:, 0, 0] = 0.0
    chosen: list[dict[tuple[int, bool], np.ndarray]] = []
    last = len(lengths) - 1
    for j, (length, value) in enumerate(zip(lengths, values)):
        busy, held = model.busy_w * value, max(model.held_w, TIE * model.busy_w) * value
        where = "first" if j == 0 else "last" if j == last else "inner"
        new = {key: np.full(shape, np.inf) for key in state}
        picks = {key: np.full(shape, -1, dtype=np.int16) for key in state} if keep else {}
        for index, move in enumerate(moves):
            if not _allowed(move, where, layout):
                continue
            for was_cut in (False, True):
                if move.cut and was_cut:
                    continue
                source = state[(move.frm, was_cut)]
                if not np.isfinite(source).any():
                    continue
                counted = move.kind == "full" and where == "inner"
                resumed = _resumes(move, where, model.mode)
                shifted = _shift(source, int(counted), int(resumed and counting))
                price: float | np.ndarray = _price(move, length, busy, held) + (TIE * scale if resumed else 0.0)
                if move.cut:
                    price = price + _cut_rate(move, busy, held) * cut
                key = (move.to, was_cut or move.cut)
                candidate = shifted + price
                better = candidate < new[key]
                new[key] = np.where(better, candidate, new[key])
                if keep:
                    picks[key][better] = index
        state = new
        chosen.append(picks)
    value = {}
    for i, r in enumerate(resumes):
        r_index = r if counting else 0
        finals = [state[(p, True)][i, wanted[i], r_index] for p in (RUN, END)]
        if min(finals) < np.inf:
            value[r] = float(min(finals))
    if not keep or not value:
        return value, []
    i, a, r_index = 0, int(wanted[0]), resumes[0] if counting else 0
    phase = RUN if state[(RUN, True)][i, a, r_index] <= state[(END, True)][i, a, r_index] else END
    key, path = (phase, True), []
    for j in range(last, -1, -1):
        move = moves[int(chosen[j][key][i, a, r_index])]
        path.append(move)
        a -= int(move.kind == "full" and 0 < j < last)
        r_index -= int(_resumes(move, "first" if j == 0 else "later", model.mode) and counting)
        key = (move.frm, key[1] and not move.cut)
    return value, path[::-1]


def _allowed(move: _Move, where: str, layout: _Layout) -> bool:
    """Whether the layout lets this move happen in a first, last or inner cell."""
    busy = move.kind in ("full", "in", "out")
    if where == "first":
        if layout.cut == "first":
            return move.cut
        return (move.kind == "full") if layout.first_full else not busy
    if where == "last":
        if layout.cut == "last":
            return move.cut
        return (move.kind == "full") if layout.last_full else not busy
    return layout.cut == "inner" or not move.cut


def _resumes(move: _Move, where: str, mode: str) -> bool:
    """Whether the run this move computes begins with a resume: after a pause, or in ``"requeue"``
    mode a first run that begins after the window's start (the job exits at once and comes back)."""
    if move.resume:
        return True
    late = where != "first" or move.kind == "in"  # "full" and "out" in the first cell begin at its start
    return mode == "requeue" and move.frm == NS and move.kind in ("full", "in", "out") and late


def _price(move: _Move, length: float, busy: float, held: float) -> float:
    """The part of a move's cost that does not depend on the cut (W x g/kWh x s)."""
    if move.kind == "full":
        return busy * length
    if move.to == END and move.kind in ("stop", "out", "none"):
        return 0.0  # after the job's end nothing is drawn (what "out" runs is in `_cut_rate`)
    return held * length  # waiting or paused the whole cell, less what the cut runs (in `_cut_rate`)


def _cut_rate(move: _Move, busy: float, held: float) -> float:
    """What each second run in the cut cell adds to the cost."""
    return busy if move.to == END else busy - held


def _shift(source: np.ndarray, cells: int, resumes: int) -> np.ndarray:
    """``source`` with one more whole cell and/or resume counted (inf where none can be)."""
    if not cells and not resumes:
        return source
    out = np.full_like(source, np.inf)
    a, r = source.shape[1], source.shape[2]
    out[:, cells:, resumes:] = source[:, : a - cells, : r - resumes]
    return out


def _runs(
    path: list[_Move], edges: np.ndarray, cut: float, work_s: float, resume_s: float, mode: str
) -> list[tuple[float, float]]:
    """The runs (unix times) a path of moves computes, joined where they touch; a run that does
    more than the work (two runs that touch lose a resume) ends early."""
    busy: list[tuple[float, float]] = []
    for move, a, b in zip(path, edges[:-1], edges[1:]):
        if move.kind == "full":
            busy.append((float(a), float(b)))
        elif move.kind == "in":
            busy.append((float(b) - cut, float(b)))
        elif move.kind == "out":
            busy.append((float(a), float(a) + cut))
    runs: list[tuple[float, float]] = []
    for a, b in busy:
        if runs and a - runs[-1][1] <= EDGE_S:
            runs[-1] = (runs[-1][0], b)
        else:
            runs.append((a, b))
    late = mode == "requeue" and runs[0][0] - edges[0] > EDGE_S  # the first run is a restart too
    extra = sum(b - a for a, b in runs) - resume_s * (len(runs) - 1 + int(late)) - work_s
    if extra > EDGE_S:
        runs[-1] = (runs[-1][0], runs[-1][1] - extra)
    return runs
