"""Properties of `EnergyTracker`'s accounting over random runs (hypothesis), on a manual clock and a simulated GPU.

Each example builds its own tracker on a freshly installed simulated GPU with its own
`ManualClock` and drives it through a random run: segments of training steps (random count,
duration, batch size and tokens per sample, counted through lazy attention-mask sums), each
optionally preceded and followed by a validation/test/predict stage (sometimes under a
provisional name), each ending at a logging boundary or an epoch end. The test takes the
sampler's readings itself on a grid of ``reading_s`` seconds (the sampler thread idles), and
in *aligned* runs also a reading at each boundary, right before the hook takes its mark.

Properties:

1. The run record's window and stage lines add up, to floating-point precision, to the
   cumulative total logged at every window line (boundaries between readings included), and
   in aligned runs to the fit's final total, as the epochs do to the total at each epoch's
   end; the window lines' steps, samples and tokens are the work fed in since the last line.
2. In any run, the total is the trace's exact integral over the fit, each stage's and each
   epoch's energy its integral, and the lines the final total, each within a bound derived
   from the counter period and the sampling interval (see `bounds`); CO2e is the total at the
   fixed factor.
3. A new tracker that loads another's `state_dict` reports the same totals, and continues them
   when it starts a fit.

A deterministic example shows how a window closed between two readings (its end extrapolated)
is corrected by the next window, so that the lines still add up.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energy_core import J_PER_KWH, EnergyTracker
from energy_core.accounting.figures import STAGES
from energy_core.output import keys
from tests.doubles.power_traces import Constant, Square, Trace
from tests.doubles.sim_nvml import ManualClock, SimGpu
from tests.helpers.records import read_record

COUNTER_S = 0.02  # the simulated board's energy counter advances every 20 ms, in whole mJ
G_PER_KWH, PUE = 400.0, 1.2
KG_PER_J = PUE * G_PER_KWH / 1000.0 / J_PER_KWH  # the fixed factor, PUE applied
TRACES: dict[str, tuple[Trace, float, float]] = {  # a trace, its lowest and its highest power (W)
    "steady": (Constant(300.0), 300.0, 300.0),
    "square": (Square(low=80.0, high=420.0, period=0.7), 80.0, 420.0),
}
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- random runs
@dataclass(frozen=True)
class Stage:
    name: str
    seconds: float
    provisional: bool  # started as "inference", named when it ends (as the HF Trainer does)


@dataclass(frozen=True)
class Segment:
    """Training steps between two boundaries, with a stage before and after them, or not."""

    before: Stage | None
    steps: int
    step_s: float
    batch: int  # samples per step
    tokens: int  # attention-mask ones per sample
    pause_s: float  # then time passes with no step (a checkpoint being saved, a slow loader)
    after: Stage | None
    epoch_end: bool  # the boundary is an epoch end, else a logging window


stages = st.builds(Stage, st.sampled_from(STAGES), st.floats(0.01, 0.5), st.booleans())


def segments(min_steps: int = 0) -> st.SearchStrategy[Segment]:
    return st.builds(
        Segment,
        before=st.none() | stages,
        steps=st.integers(min_steps, 4),
        step_s=st.floats(0.005, 0.3),
        batch=st.integers(1, 4),
        tokens=st.integers(0, 8),
        pause_s=st.just(0.0) | st.floats(0.005, 0.2),
        after=st.none() | stages,
        epoch_end=st.booleans(),
    )


# The last segment has a step, so that the last boundary closes a window line (the trailing
# training of a fit goes into no window line: end_fit writes the summary, not a window).
runs = st.tuples(st.lists(segments(), max_size=4), segments(min_steps=1)).map(lambda p: [*p[0], p[1]])
reading_intervals = st.floats(0.01, 0.25)


@dataclass
class Drive:
    """One tracker on its own simulated GPU and manual clock, driven through a run."""

    tracker: EnergyTracker
    clock: ManualClock
    sim: Any
    reading_s: float
    aligned: bool
    t0: float
    readings: int = 0  # grid readings taken: at t0 + k * reading_s, k = 1, 2, ...
    rows: int = 1  # readings the meter holds (start_fit takes the first)
    last_read: float = 0.0
    step: int = 0
    epoch: int = 0
    samples: int = 0
    tokens: int = 0
    window_lines: list[tuple[int, int, int]] = field(default_factory=list)  # (steps, samples, tokens) expected
    unresolved: bool = False  # a boundary came before the meter's second reading
    epochs: list[tuple[float, float]] = field(default_factory=list)  # (start, end) of each epoch line expected
    lined: list[bool] = field(default_factory=list)  # whether each epoch end has a line (the meter had two readings)
    stage_runs: list[tuple[str, float, float]] = field(default_factory=list)  # (stage, start, end) on the clock
    _open: list[int] = field(default_factory=lambda: [0, 0, 0])  # steps, samples, tokens since the last line

    @classmethod
    def build(
        cls,
        sim_gpus,
        trace: Trace,
        reading_s: float,
        aligned: bool,
        record: Path | None = None,
        counter_s: float = COUNTER_S,
    ) -> Drive:
        clock = ManualClock()
        sim = sim_gpus(SimGpu("GPU-a", trace, counter_period_s=counter_s), clock=clock)
        tracker = EnergyTracker(
            devices=["gpu"],
            sample_interval_s=60,  # the thread idles: the test takes the readings
            carbon_intensity_g_per_kwh=G_PER_KWH,
            pue=PUE,
            record_path=record,
        )
        tracker.meter.clock = clock
        return cls(tracker, clock, sim, reading_s, aligned, t0=clock(), last_read=clock())

    def __enter__(self) -> Drive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.tracker.close()  # stops the sampler thread, on every path (a failing example too)

    def exact(self, t0: float, t1: float) -> float:
        return self.sim.exact_joules(self.sim.gpus[0], t0, t1)

    def read(self) -> None:
        self.tracker.meter.sampler.sample_once()
        self.last_read = self.clock.now
        self.rows += 1

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, with a reading at every grid time on the way."""
        target = self.clock.now + seconds
        while self.t0 + (self.readings + 1) * self.reading_s <= target:
            self.readings += 1
            self.clock.now = self.t0 + self.readings * self.reading_s
            self.read()
        self.clock.now = target

    def boundary(self) -> None:
        """A hook is about to take a mark: in an aligned run, a reading at that moment."""
        if self.aligned and self.last_read != self.clock.now:
            self.read()

    def start(self, resumed: bool = False) -> list:
        self.fit_start = self.epoch_start = self.clock.now
        notices = self.tracker.start_fit(step=self.step, resumed=resumed)
        self.last_read = self.clock.now  # start_fit read the board
        return notices

    def stage(self, stage: Stage) -> None:
        self.boundary()
        begun = self.clock.now
        self.tracker.start_stage("inference" if stage.provisional else stage.name)
        self.advance(stage.seconds)
        self.boundary()
        self.tracker.end_stage(stage.name, self.step, started_as="inference" if stage.provisional else None)
        self.stage_runs.append((stage.name, begun, self.clock.now))

    def train(self, seg: Segment) -> None:
        """The segment's steps: time passes, then a batch is counted (its tokens as a lazy mask sum)."""
        for _ in range(seg.steps):
            self.advance(seg.step_s)
            mask = torch.zeros(seg.batch, 8, dtype=torch.long)
            mask[:, : seg.tokens] = 1
            self.tracker.add_batch({"input_ids": torch.zeros(seg.batch, 8, dtype=torch.long), "attention_mask": mask})
            self.step += 1
            self.samples += seg.batch
            self.tokens += seg.batch * seg.tokens
            self._open = [self._open[0] + 1, self._open[1] + seg.batch, self._open[2] + seg.batch * seg.tokens]

    def segment(self, seg: Segment) -> None:
        if seg.before:
            self.stage(seg.before)
        self.train(seg)
        self.advance(seg.pause_s)
        if seg.after:
            self.stage(seg.after)
        self.boundary()
        if seg.epoch_end:
            self.tracker.end_epoch(self.step, self.epoch)
            self.lined.append(self.rows >= 2)
            if self.rows >= 2:  # else the epoch has no figure, and no line
                self.epochs.append((self.epoch_start, self.clock.now))
            self.epoch_start = self.clock.now
            self.epoch += 1
        else:
            self.tracker.window(self.step)
        # The window closes into a line when a step was taken since the last one and the meter has two
        # readings to give its end a figure; else it stays open (idle, or left out rather than logged as 0).
        self.unresolved |= self.rows < 2
        if self._open[0] and self.rows >= 2:
            self.window_lines.append((self._open[0], self._open[1], self._open[2]))
            self._open = [0, 0, 0]

    @property
    def unlogged(self) -> bool:
        """Training since the last window line (it goes into no line: end_fit writes the summary)."""
        return self._open[0] > 0

    def end(self) -> dict[str, float]:
        self.boundary()
        metrics = self.tracker.end_fit(step=self.step)
        self.tracker.close()
        self.fit_end = self.clock.now
        return metrics


def play(
    sim_gpus, trace: Trace, reading_s: float, aligned: bool, run: list[Segment], counter_s: float = COUNTER_S
) -> tuple[Drive, dict[str, float], list[dict]]:
    """``run`` from the fit's start to its end on a fresh tracker: the drive, the fit's last metrics
    and the run record's lines."""
    with tempfile.TemporaryDirectory() as folder:
        record_path = Path(folder) / "run.jsonl"
        with Drive.build(sim_gpus, trace, reading_s, aligned, record=record_path, counter_s=counter_s) as drive:
            drive.start()
            for seg in run:
                drive.segment(seg)
            final = drive.end()
        return drive, final, read_record(record_path)


def bounds(reading_s: float, low_w: float, high_w: float) -> tuple[float, float, float]:
    """(a reading's error, a fixed mark's error, an extrapolated mark's error), in joules, against the exact integral.

    * A reading at time t shows the counter's last update, at most one counter period
      earlier, in whole mJ: it lies in (E(t) - q, E(t)] with ``q = high_w * COUNTER_S + 1 mJ``.
      The fit's first and last marks are taken at readings (start_fit reads the board, end_fit
      reads it when it stops the sampler), so the total is off by less than q whatever the
      sampling interval.
    * A mark between readings a < t <= b is fixed by linear interpolation: a power in
      [low_w, high_w] makes a chord miss the integral by at most (t-a)(b-t)/(b-a) (high_w - low_w)
      <= reading_s (high_w - low_w) / 4, and the readings' own error adds q.
    * A mark past the newest reading a is extrapolated at the power of the readings of the
      last second, c..a, with a - c >= reading_s > t - a: the power misses by at most
      high_w - low_w over t - a < reading_s, the readings' errors add q at a and at most
      q (t - a) / (a - c) < q through the power.
    """
    q = high_w * COUNTER_S + 1e-3 + 1e-6  # (and a µJ for the rounding of floating-point clock times)
    return q, reading_s * (high_w - low_w) / 4 + q, reading_s * (high_w - low_w) + 2 * q


def lines_of(record: list[dict], kind: str) -> list[dict]:
    return [line for line in record if line["type"] == kind]


def line_j(line: dict) -> float:
    """A record line's energy: a window's from its J/step, a stage's from its kWh."""
    if line["type"] == "stage":
        return line["kwh"] * J_PER_KWH
    return line["metrics"][keys.STEP_J] * line["steps"]


# ----------------------------------------------------------------------------- property 1
@SETTINGS
@given(run=runs, trace=st.sampled_from(sorted(TRACES)), reading_s=reading_intervals, aligned=st.booleans())
def test_window_and_stage_lines_add_up_to_the_total_at_every_window_and_at_the_fits_end(
    sim_gpus, run: list[Segment], trace: str, reading_s: float, aligned: bool
) -> None:
    drive, final, record = play(sim_gpus, TRACES[trace][0], reading_s, aligned, run)
    # Each window line's cumulative total is the sum of the lines so far (a window starts from the joules
    # the last one ended at, extrapolated or not, and takes a stage out at the joules the stage was counted at).
    # A window whose energy came out below zero is logged as 0 J and the next ones pay the excess back first:
    # the lines never fall short of the total, and equal it at every window that logged energy (nothing owed).
    lines_j = 0.0
    for line in record:
        if line["type"] == "stage":
            lines_j += line_j(line)
        elif line["type"] == "window":
            lines_j += line_j(line)
            total_j = line["metrics"][keys.TOTAL_KWH] * J_PER_KWH
            if line_j(line) > 0.0:
                assert lines_j == pytest.approx(total_j, rel=1e-12, abs=1e-9)
            else:
                assert lines_j >= total_j - 1e-9
    windows, stage_lines = lines_of(record, "window"), lines_of(record, "stage")
    for line in windows:  # the window's power over its training seconds gives the same energy
        assert line["metrics"][keys.TOTAL_W] * line["seconds"] == pytest.approx(line_j(line), rel=1e-12, abs=1e-9)
    # One window line per boundary with a step since the last line, with that work; one stage line per run.
    assert [(w["steps"], w["samples"], w["tokens"]) for w in windows] == drive.window_lines
    assert [s["stage"] for s in stage_lines] == [name for name, _, _ in drive.stage_runs]
    [summary] = lines_of(record, "summary")
    assert (summary["samples"], summary["tokens"]) == (drive.samples, drive.tokens)
    if aligned:  # every boundary on a reading: nothing to correct at the fit's end
        assert not drive.unlogged
        assert lines_j == pytest.approx(final[keys.TOTAL_KWH] * J_PER_KWH, rel=1e-12, abs=1e-9)
        # The epochs' energies add up to the total at each epoch's end. (Not to the lines of the epoch: a
        # window with no step since its last line stays open across an epoch's end, logged in a later line.)
        epochs_j = 0.0
        for line in lines_of(record, "epoch"):
            epochs_j += line["metrics"][keys.EPOCH_KWH] * J_PER_KWH
            assert epochs_j == pytest.approx(line["metrics"][keys.TOTAL_KWH] * J_PER_KWH, rel=1e-12, abs=1e-9)


# ----------------------------------------------------------------------------- property 2
@SETTINGS
@given(run=runs, trace=st.sampled_from(sorted(TRACES)), reading_s=reading_intervals, aligned=st.booleans())
def test_the_fits_stages_and_windows_match_the_traces_integral_within_the_sampling_bound(
    sim_gpus, run: list[Segment], trace: str, reading_s: float, aligned: bool
) -> None:
    power, low_w, high_w = TRACES[trace]
    reading_err, fixed_err, extrapolated_err = bounds(reading_s, low_w, high_w)
    drive, final, record = play(sim_gpus, power, reading_s, aligned, run)
    tracker = drive.tracker
    total_j = final[keys.TOTAL_KWH] * J_PER_KWH
    assert abs(total_j - drive.exact(drive.fit_start, drive.fit_end)) <= reading_err
    # Stage lines settle in the order the runs ended; a stage's marks are readings in aligned runs.
    stage_lines = lines_of(record, "stage")
    assert [s["stage"] for s in stage_lines] == [name for name, _, _ in drive.stage_runs]
    stage_err = reading_err if aligned else 2 * extrapolated_err
    for line, (name, begun, ended) in zip(stage_lines, drive.stage_runs):
        assert abs(line_j(line) - drive.exact(begun, ended)) <= stage_err, (name, begun, ended)
    for name in STAGES:
        mine = sum(line_j(s) for s in stage_lines if s["stage"] == name)
        assert tracker.stage_kwh(name) * J_PER_KWH == pytest.approx(mine, rel=1e-12, abs=1e-9)
    # An epoch runs from the last one's end (or the fit's start) to its own. In a free run its end is
    # extrapolated and its start fixed by a reading since (or, with no reading since, both extrapolated from
    # the same readings: less than one extrapolated mark's error).
    epoch_lines = lines_of(record, "epoch")
    assert len(epoch_lines) == len(drive.epochs)
    epoch_err = reading_err if aligned else fixed_err + extrapolated_err
    for line, (begun, ended) in zip(epoch_lines, drive.epochs):
        assert abs(line["metrics"][keys.EPOCH_KWH] * J_PER_KWH - drive.exact(begun, ended)) <= epoch_err
        assert line["seconds"] == pytest.approx(ended - begun, rel=1e-12, abs=1e-12)
    windows = lines_of(record, "window")
    assert [(w["steps"], w["samples"], w["tokens"]) for w in windows] == drive.window_lines
    if drive.unresolved:  # said once, not logged as zeros
        assert any("before the sampler's second hardware reading" in n.text for n in tracker.pop_notices())
    clamped = not aligned and any(line_j(w) == 0.0 for w in windows)  # see property 1
    if not drive.unlogged and not clamped:  # (a run shorter than a reading interval has no window line)
        # The lines add up to the total at the last window (property 1), whose end the fit's end reads
        # at once: in a free run they miss the exact total by that extrapolated end's error and a reading's.
        lines_j = sum(map(line_j, windows)) + sum(map(line_j, stage_lines))
        assert abs(lines_j - total_j) <= (0.0 if aligned else extrapolated_err + reading_err) + 1e-9
    assert final[keys.CO2E_KG] == pytest.approx(total_j * KG_PER_J, rel=1e-9)
    assert final[keys.INTENSITY] == G_PER_KWH
    assert tracker.fit_seconds() == pytest.approx(drive.fit_end - drive.fit_start, rel=1e-12)


# ----------------------------------------------------------------------------- property 2b
@SETTINGS
@given(run=runs, trace=st.sampled_from(sorted(TRACES)), reading_s=reading_intervals, aligned=st.booleans())
def test_every_figures_bound_holds_its_true_value(
    sim_gpus, run: list[Segment], trace: str, reading_s: float, aligned: bool
) -> None:
    """The ``_err`` figures (issue 28): the fit's total, every stage line, every epoch and every window lie
    within their bound of the trace's exact integral; and a fit's bound, once the readings span a second,
    is no wider than the physics demands (at each end, the counter's lag at the highest power and one
    reading interval's energy). Before that, the power is not known yet and the board's highest power
    stands in for it (tightness on longer runs: benchmarks/accuracy.py)."""
    power, _, high_w = TRACES[trace]
    drive, final, record = play(sim_gpus, power, reading_s, aligned, run)
    widest = 4 * 1.25 * high_w * (0.1 + 1.2 * reading_s)  # lag and one interval at each end, levels within 25%
    total_err = final[keys.err(keys.TOTAL_KWH)] * J_PER_KWH
    assert abs(final[keys.TOTAL_KWH] * J_PER_KWH - drive.exact(drive.fit_start, drive.fit_end)) <= total_err
    assert final[keys.err(keys.kind_kwh("gpu"))] == final[keys.err(keys.TOTAL_KWH)]
    if drive.fit_start - drive.t0 >= 1.0 or drive.fit_end - drive.fit_start >= 1.0 + 2 * reading_s:
        assert total_err <= widest
    assert final[keys.err(keys.CO2E_KG)] == pytest.approx(total_err * KG_PER_J, rel=1e-9)
    [summary] = lines_of(record, "summary")
    assert summary["energy_j_err"] == pytest.approx(total_err, rel=1e-12)
    for line, (name, begun, ended) in zip(lines_of(record, "stage"), drive.stage_runs):
        assert abs(line_j(line) - drive.exact(begun, ended)) <= line["kwh_err"] * J_PER_KWH, name
    for line, (begun, ended) in zip(lines_of(record, "epoch"), drive.epochs):
        epoch_err = line["metrics"][keys.err(keys.EPOCH_KWH)] * J_PER_KWH
        assert abs(line["metrics"][keys.EPOCH_KWH] * J_PER_KWH - drive.exact(begun, ended)) <= epoch_err
    # A window line runs from the last one's end (or the fit's start) to its own, the stages in it taken out;
    # its figure and its bound are per step.
    begun = drive.fit_start
    for line in lines_of(record, "window"):
        ended = drive.fit_start + line["elapsed_s"]
        inside = [(b, e) for _, b, e in drive.stage_runs if begun <= b and e <= ended]
        truth = drive.exact(begun, ended) - sum(drive.exact(b, e) for b, e in inside)
        window_err = line["metrics"][keys.err(keys.STEP_J)] * line["steps"]
        assert abs(line_j(line) - truth) <= window_err + 1e-9, (begun, ended)
        begun = ended


def test_a_window_after_a_short_stage_holds_its_bound_when_the_counter_lags_a_burst(sim_gpus) -> None:
    """Found by the property above in CI: read every 12 ms, a counter updated every 20 ms showed, at
    a window's start just after a 31 ms validation, 8 J less than the truth (420 W for 19 ms). The
    readings told that its value had stood 19.5 ms, but the power levels, taken over 0.4 s spans,
    read 347 W there (they blur the 0.35 s phases): 347 W x 19.5 ms missed the lag. The lag is now
    the whole update period at those levels."""
    inner = test_every_figures_bound_holds_its_true_value.hypothesis.inner_test  # type: ignore[attr-defined]
    run = [
        Segment(None, 1, 0.015625, 1, 0, 0.1953125, None, False),
        Segment(None, 3, 0.265625, 1, 0, 0.0, Stage("val", 0.03125, False), False),
        Segment(None, 1, 0.25, 1, 0, 0.0, None, False),
    ]
    inner(sim_gpus, run, "square", 0.01171875, True)


# ----------------------------------------------------------------------------- property 3
def state_of(tracker: EnergyTracker) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """A checkpoint's state, the totals and the stages' kWh at that moment (the state first: it reads the
    queued token sums)."""
    state = tracker.state_dict()
    return state, tracker.totals(), {s: tracker.stage_kwh(s) for s in STAGES}


@SETTINGS
@given(
    first=runs,
    second=runs,
    trace=st.sampled_from(sorted(TRACES)),
    reading_s=reading_intervals,
    mid_window=segments(),
)
def test_a_checkpoints_totals_survive_a_state_dict_round_trip_and_continue_in_the_next_fit(
    sim_gpus, first: list[Segment], second: list[Segment], trace: str, reading_s: float, mid_window: Segment
) -> None:
    power, low_w, high_w = TRACES[trace]
    reading_err, _, extrapolated_err = bounds(reading_s, low_w, high_w)
    with Drive.build(sim_gpus, power, reading_s, aligned=False) as a:
        a.start()
        for seg in first:
            a.segment(seg)
        a.train(mid_window)  # a checkpoint in the middle of a window, its tokens still queued device sums
        a.advance(mid_window.step_s / 3)  # and between readings
        state, totals, stage_kwh = state_of(a.tracker)
        checkpoint_t = a.clock.now
        a.end()

    folder = tempfile.TemporaryDirectory()
    record_path = Path(folder.name) / "run.jsonl"
    with folder, Drive.build(sim_gpus, power, reading_s, aligned=False, record=record_path) as b:  # a new process
        b.tracker.load_state_dict(state)
        assert b.tracker.totals() == totals
        assert {s: b.tracker.stage_kwh(s) for s in STAGES} == stage_kwh
        assert b.tracker.state_dict() == state
        b.step, b.epoch = a.step, a.epoch  # the epoch under way goes on
        notices = b.start(resumed=True)
        assert not any("restart at zero" in n.text for n in notices)
        for seg in second:
            b.segment(seg)
        final = b.end()
        epoch_lines = lines_of(read_record(record_path), "epoch")
    # The epoch under way at the checkpoint goes on after it: its end counts its part before too (an end
    # with no line, before the meter's second reading, ends it with no figure).
    before_s = checkpoint_t - a.epoch_start
    assert state["epoch"]["seconds"] == pytest.approx(before_s, rel=1e-9, abs=1e-9)
    if b.lined[:1] == [True]:
        (begun, ended), line = b.epochs[0], epoch_lines[0]
        truth = a.exact(a.epoch_start, checkpoint_t) + b.exact(begun, ended)
        epoch_err = line["metrics"][keys.err(keys.EPOCH_KWH)] * J_PER_KWH
        assert abs(line["metrics"][keys.EPOCH_KWH] * J_PER_KWH - truth) <= epoch_err + 1e-9
        assert line["seconds"] == pytest.approx(before_s + ended - begun, rel=1e-9)
    assert (state["samples"], state["tokens"]) == (a.samples, a.tokens)
    assert state["fit_s"] == pytest.approx(checkpoint_t - a.fit_start, rel=1e-12)
    carried_j = totals[keys.TOTAL_KWH] * J_PER_KWH
    assert carried_j == pytest.approx(sum(state["energy_j"].values()), rel=1e-12)
    fit_j = b.exact(b.fit_start, b.fit_end)
    assert abs(final[keys.TOTAL_KWH] * J_PER_KWH - (carried_j + fit_j)) <= reading_err
    assert final[keys.CO2E_KG] == pytest.approx(state["co2e_kg"] + fit_j * KG_PER_J, abs=reading_err * KG_PER_J)
    after = b.tracker.state_dict()
    assert (after["samples"], after["tokens"]) == (a.samples + b.samples, a.tokens + b.tokens)
    assert after["fit_s"] == pytest.approx(state["fit_s"] + (b.fit_end - b.fit_start), rel=1e-12)
    for name in STAGES:
        new_j = sum(b.exact(t0, t1) for stage, t0, t1 in b.stage_runs if stage == name)
        runs_b = sum(1 for stage, _, _ in b.stage_runs if stage == name)
        carried = state["stage_j"][name]
        assert abs(b.tracker.stage_kwh(name) * J_PER_KWH - (carried + new_j)) <= 2 * extrapolated_err * runs_b + 1e-9


def test_a_checkpoint_after_an_epochs_last_step_adds_nothing_to_the_next_epoch(sim_gpus) -> None:
    # Written after an epoch's last step but before its end (a save interval that divides the epoch), the
    # checkpoint held nearly the whole epoch as the one under way; the frameworks resume at the next epoch,
    # whose energy/epoch_kwh then counted the previous epoch's energy too (197 J for 99 J trained).
    power = TRACES["steady"][0]
    with Drive.build(sim_gpus, power, 0.05, aligned=True) as a:
        a.start()
        a.tracker.start_epoch(0)  # as the adapters say it
        a.train(Segment(None, 4, 0.25, 1, 0, 0.0, None, False))  # epoch 0: its steps, no end yet
        state = a.tracker.state_dict()
        a.end()
    assert state["epoch"]["epoch"] == 0 and state["epoch"]["energy_j"] == pytest.approx(300.0, rel=0.01)
    folder = tempfile.TemporaryDirectory()
    record_path = Path(folder.name) / "run.jsonl"
    with folder, Drive.build(sim_gpus, power, 0.05, aligned=True, record=record_path) as b:
        b.tracker.load_state_dict(state)
        b.step, b.epoch = a.step, 1  # resumed at the next epoch
        b.start(resumed=True)
        b.segment(Segment(None, 2, 0.25, 1, 0, 0.0, None, True))
        b.end()
        [line] = lines_of(read_record(record_path), "epoch")
    (begun, ended) = b.epochs[0]
    assert line["epoch"] == 1 and line["seconds"] == pytest.approx(ended - begun)
    err = line["metrics"][keys.err(keys.EPOCH_KWH)] * J_PER_KWH
    assert abs(line["metrics"][keys.EPOCH_KWH] * J_PER_KWH - b.exact(begun, ended)) <= err < state["epoch"]["energy_j"]


# ----------------------------------------------------------------------------- between readings
def test_a_window_closed_between_readings_is_corrected_by_the_next_so_the_lines_add_up(sim_gpus) -> None:
    # 500 W for the first second of every two, then 100 W; readings every 1/4 s, the counter every 1/64 s:
    # every reading is exact. The first window closes at 1.125 s, between the readings at 1 s and 1.25 s:
    # its end is extrapolated at the last second's 500 W, 562.5 J though 512.5 J were used. The second
    # window, to 2 s (a reading), starts from those 562.5 J: 37.5 J, and the lines add up to the 600 J used.
    square = Square(100.0, 500.0, 2.0)
    run = [
        Segment(None, 9, 0.125, 1, 0, 0.0, None, False),  # 9 steps of 1/8 s: a window at 1.125 s
        Segment(None, 7, 0.125, 1, 0, 0.0, None, False),  # 7 more: a window at 2 s
    ]
    _, final, record = play(sim_gpus, square, 0.25, False, run, counter_s=1 / 64)
    windows = lines_of(record, "window")
    assert [(w["steps"], line_j(w)) for w in windows] == [(9, 562.5), (7, 37.5)]
    assert [w["metrics"][keys.TOTAL_KWH] * J_PER_KWH for w in windows] == [562.5, 600.0]
    assert final[keys.TOTAL_KWH] * J_PER_KWH == 600.0  # exact at the fit's end


def test_a_stage_counted_high_is_paid_back_by_the_next_window_so_the_lines_add_up(sim_gpus) -> None:
    # 500 W for the first second of every two, then 100 W; readings every 1/4 s, the counter every 1/64 s.
    # Training to 0.5 s (a window: 250 J), validation from 0.5 s to 1.125 s, settled at its end extrapolated
    # at 500 W: 562.5 - 250 = 312.5 J (262.5 J used). Training to 1.3125 s, past the reading at 1.25 s
    # (525 J): a window ending at 525 + 400 W x 1/16 s = 550 J, so 550 - 250 - 312.5 = -12.5 J. Training
    # to 2 s, on a reading (600 J): a window of 50 J. The lines should add up to 600 J.
    square = Square(100.0, 500.0, 2.0)
    run = [
        Segment(None, 4, 0.125, 1, 0, 0.0, None, False),
        Segment(Stage("val", 0.625, False), 3, 0.0625, 1, 0, 0.0, None, False),
        Segment(None, 11, 0.0625, 1, 0, 0.0, None, False),
    ]
    _, final, record = play(sim_gpus, square, 0.25, False, run, counter_s=1 / 64)
    assert final[keys.TOTAL_KWH] * J_PER_KWH == 600.0
    assert [w["metrics"][keys.TOTAL_KWH] * J_PER_KWH for w in lines_of(record, "window")] == [250.0, 550.0, 600.0]
    assert [line_j(s) for s in lines_of(record, "stage")] == [312.5]
    assert sum(line_j(line) for line in record if line["type"] in ("window", "stage")) == 600.0
