"""TimeShiftRun through EnergyLoop, on a manual clock: real hours of a simulated GPU that draws
300 W while training and 60 W while paused, priced on an hourly series.

The job pauses through the dirty hours, trains in the clean ones and ends before its deadline;
its CO2e, the time paused and the CO2e saved equal the integrals of the power trace and the
series (within the counter's period); a requeue exits with 75 and a restart carries the plan on.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from energy_core import J_PER_KWH, TimeShiftRun
from energy_core.output.summary import end_status
from tests.energy_core.shift.manual_job import (
    BASE,
    BUSY_W,
    CLEAN,
    DIRTY,
    HOUR,
    IDLE_W,
    STEP_S,
    STEPS,
    Job,
    deadline_in,
    kg,
)
from tests.helpers.records import read_record


def test_pause_mode_trains_in_the_clean_hours_and_saves_what_it_says(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    lines = read_record(job.record)
    events = [(x["event"], x["step"]) for x in lines if x["type"] == "shift"]
    assert ("pause", 3) in events and ("resume", 3) in events  # planned once the pace was measured (3 steps)
    (pause,) = [x for x in lines if x["type"] == "shift" and x["event"] == "pause"]
    assert pause["resume_at"] == pytest.approx(BASE.timestamp() + 2 * HOUR)
    trained_after = job.step_times[3:]
    assert all(2 * HOUR < t <= 4 * HOUR for t in trained_after)  # every later step in the clean hours
    assert job.step_times[-1] < 6 * HOUR and len(job.step_times) == STEPS  # done, before the deadline
    paused = 2 * HOUR - 3 * STEP_S
    final = loop.last_metrics
    assert final["carbon/paused_s"] == pytest.approx(paused, abs=1e-6)
    busy_dirty, busy_clean = 3 * STEP_S, (STEPS - 3) * STEP_S
    actual = kg(BUSY_W, busy_dirty, DIRTY) + kg(BUSY_W, busy_clean, CLEAN) + kg(IDLE_W, paused, DIRTY)
    assert final["carbon/co2e_kg"] == pytest.approx(actual, rel=1e-3)
    run_now = kg(BUSY_W, STEPS * STEP_S, DIRTY)  # the same work from the start: all in dirty hours
    assert final["carbon/saved_kg"] == pytest.approx(run_now - actual, rel=1e-3)
    windows = [x for x in lines if x["type"] == "window" and "power/total_w" in x["metrics"]]
    assert all(x["metrics"]["power/total_w"] == pytest.approx(BUSY_W, rel=1e-3) for x in windows)  # no pause inside
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["time_shift"]["saved_kg"] == pytest.approx(
        run_now - actual, rel=1e-3
    )
    assert "Time shift (pause): paused 1 h 58 min," in loop.summary  # 2 h less 3 steps, in the unit that fits


def test_after_the_last_step_nothing_is_left_to_move(sim_gpus, monkeypatch, tmp_path) -> None:
    """A run of 3 steps measures its pace at its last step. The plan used to count one step more
    there and pause 2 h after the run's end, for nothing; now nothing is planned."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W), total_steps=3)
    with loop:
        job.wait_first_reading()
        job.train(loop, 3)
    assert [x for x in read_record(job.record) if x["type"] == "shift"] == []
    assert job.clock.now == pytest.approx(3 * STEP_S)  # not a second paused


def test_a_given_idle_power_of_zero_counts_before_any_power_is_measured(sim_gpus, monkeypatch, tmp_path) -> None:
    """Two steps left at step 3, no reading since the start: the plan weighs the pause on the
    idle power given (0 W), not a quarter of the busy power. At a quarter, 2 h paused would cost
    more than the 72 s of training it moves, and the run used to go on in the dirty hours."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=0.0), total_steps=5)
    with loop:
        job.wait_first_reading()
        for _ in range(3):  # steps whose energy no reading shows (the clock moves, nothing is sampled)
            job.clock.advance(STEP_S)
            loop.step()
        job.train(loop, 2)
    (pause,) = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "pause"]
    assert pause["step"] == 3 and pause["resume_at"] == pytest.approx(BASE.timestamp() + 2 * HOUR)


def test_wait_mode_with_an_expected_duration_waits_before_the_first_step(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="wait", idle_w=IDLE_W, expected_duration_s=STEPS * STEP_S)
    loop = job.start(shift)
    with loop:  # the plan is made as the loop starts: it waits there for the clean hours
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert job.step_times[0] == pytest.approx(2 * HOUR + STEP_S)  # the first step began with the clean hours
    gaps = [b - a for a, b in zip(job.step_times, job.step_times[1:])]
    assert max(gaps) == pytest.approx(STEP_S)  # then one contiguous run
    assert loop.last_metrics["carbon/paused_s"] == pytest.approx(2 * HOUR)
    events = [(x["event"], x["step"]) for x in read_record(job.record) if x["type"] == "shift"]
    assert events[:3] == [("plan", 0), ("pause", 0), ("resume", 0)]


def test_without_a_time_shift_the_same_job_emits_more(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(None)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert loop.last_metrics["carbon/co2e_kg"] == pytest.approx(kg(BUSY_W, STEPS * STEP_S, DIRTY), rel=1e-3)
    assert "carbon/paused_s" not in loop.last_metrics


def test_requeue_exits_75_and_the_restart_carries_the_plan_on(sim_gpus, monkeypatch, tmp_path) -> None:
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=120.0)
    loop = job.start(shift)
    with pytest.raises(SystemExit) as exited, loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
        checkpoint = loop.state_dict()
    assert exited.value.code == 75 and len(job.step_times) == 3
    (requeue,) = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "requeue"]
    resume_at = requeue["resume_at"]
    assert resume_at == BASE.timestamp() + 2 * HOUR
    assert checkpoint["time_shift"]["shift"]["resume_at"] == resume_at
    # the scheduler starts it again a minute early: it waits for resume_at, then trains to the end
    job.clock.advance(resume_at - BASE.timestamp() - job.clock.now - 60.0)
    again = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=120.0)
    loop = job.start(again)
    loop.load_state_dict(checkpoint)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS - 3)
    assert len(job.step_times) == STEPS and job.step_times[-1] < 6 * HOUR
    assert all(t > resume_at - BASE.timestamp() for t in job.step_times[3:])
    final = loop.last_metrics
    assert final["carbon/paused_s"] == pytest.approx(resume_at - BASE.timestamp() - 3 * STEP_S, abs=1e-6)
    early = kg(IDLE_W, 60.0, DIRTY)  # the minute waited before resume_at (2 h, when the clean hours begin)
    actual = kg(BUSY_W, 3 * STEP_S, DIRTY) + kg(BUSY_W, (STEPS - 3) * STEP_S, CLEAN) + early
    assert final["carbon/co2e_kg"] == pytest.approx(actual, rel=2e-3)
    events = [x["event"] for x in read_record(job.record) if x["type"] == "shift"]
    assert events[events.index("requeue") :][:4] == ["requeue", "resume", "pause", "resume"]


def test_between_decisions_a_step_reads_only_the_clock(sim_gpus, monkeypatch, tmp_path) -> None:
    """The hot path: no plan, no energy read, no record line per step; only at logging steps and decisions."""
    from energy_core.shift import run as shift_run

    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)
    calls = {"plan": 0, "totals": 0}
    plan = shift_run.plan_time_shift
    totals = loop.tracker.totals

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    monkeypatch.setattr(shift_run, "plan_time_shift", counted("plan", plan))
    monkeypatch.setattr(loop.tracker, "totals", counted("totals", totals))
    with loop:
        job.wait_first_reading()
        converted, convert = [], shift_run.Intensity.of  # the charged series: converted once, as the run starts

        def of(intensity, *args):
            converted.append(type(intensity).__name__)
            return convert(intensity, *args)

        monkeypatch.setattr(shift_run.Intensity, "of", of)
        job.train(loop, STEPS)
    assert calls["plan"] <= 3  # at the pace's measure, after the pause, once more at most
    assert calls["totals"] <= STEPS / 10 + 10  # the reviews at logging steps (every 10) and the pause's bookkeeping
    assert "Series" not in converted  # not again at each review: a 1e6-row file took 0.1 s a time


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"deadline": datetime(2030, 1, 7)}, ValueError, "deadline"),
        ({"deadline": 1893888000}, TypeError, "deadline"),
        ({"deadline": "tomorrow"}, ValueError, "deadline"),
        ({"mode": "sleep"}, ValueError, "mode"),
        ({"exit_code": 0}, ValueError, "exit_code"),
        ({"exit_code": True}, TypeError, "exit_code"),
        ({"expected_duration_s": -1.0}, ValueError, "expected_duration_s"),
        ({"idle_w": float("inf")}, ValueError, "idle_w"),
        ({"resume_s": "60"}, TypeError, "resume_s"),
        ({"forecast": []}, ValueError, "forecast"),
        ({"forecast": [("2030-01-07", 100.0)]}, ValueError, "forecast"),
    ],
)
def test_bad_arguments_name_themselves(arguments, error, named) -> None:
    with pytest.raises(error, match=named):
        TimeShiftRun(**{"deadline": deadline_in(6), **arguments})


def test_the_adapters_need_a_deadline_and_know_their_arguments() -> None:
    with pytest.raises(TypeError, match="needs a deadline"):
        TimeShiftRun.from_args("TimeShift")
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['dedline'\\]"):
        TimeShiftRun.from_args("TimeShift", deadline=deadline_in(6), dedline=deadline_in(6))  # type: ignore[call-arg]
    run = TimeShiftRun.from_args("TimeShift", deadline=deadline_in(6).isoformat(), country="FRA",
                                 forecast=[(BASE, 100.0)])  # fmt: skip
    assert run.args["deadline"] == deadline_in(6).isoformat() and run.args["country"] == "FRA"
    assert TimeShiftRun.from_args("TimeShift", **run.args).args == run.args  # JSON re-creates it (HF's restore)


@pytest.mark.parametrize(
    "state",
    [
        {"shift": [1, 2]},
        {"shift": {"origin": 1.0}},
        {
            "shift": {
                **dict.fromkeys(("origin", "co2e_at_origin", "kwh_at_origin", "paused_s", "idle_kwh", "idle_s"), 0.0),
                "stretches": [],
                "exited_at": None,
                "resume_at": None,
                "resume_s": None,
                "paused_s": -5.0,
            }
        },
    ],  # fmt: skip
)
def test_a_damaged_checkpoint_state_is_a_clear_error(state) -> None:
    with pytest.raises(ValueError, match="time shift state"):
        TimeShiftRun(deadline=deadline_in(6)).load_state_dict(state)


def test_a_requeue_planned_as_the_loop_starts_stops_it_before_its_first_step(sim_gpus, monkeypatch, tmp_path) -> None:
    """With ``expected_duration_s`` the plan is made as the loop starts: its first run begins at 2 h, so
    the run is requeued there. `should_stop` used to stay False, and the loop trained the whole job in
    the dirty hours before exiting 75."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=60.0, expected_duration_s=STEPS * STEP_S)
    loop = job.start(shift)
    with pytest.raises(SystemExit) as exited, loop:
        assert loop.should_stop and shift.requeued_until == BASE.timestamp() + 2 * HOUR
        checkpoint = loop.state_dict()
        for _ in range(STEPS):
            if loop.should_stop:
                break
            job.train_step()
            loop.step()
    assert exited.value.code == 75 and job.step_times == [] and job.clock.now == 0.0
    (requeue,) = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "requeue"]
    assert requeue["step"] == 0 and requeue["resume_at"] == BASE.timestamp() + 2 * HOUR
    assert checkpoint["time_shift"]["shift"]["resume_at"] == BASE.timestamp() + 2 * HOUR


def test_a_time_shift_used_again_for_a_second_fit_is_not_still_requeued(sim_gpus, monkeypatch, tmp_path) -> None:
    """The same TimeShiftRun for a second fit in one process (a notebook): it used to stay requeued
    (`requeued_until` from the first fit): the second fit was never planned, ended "requeued", and
    kept the exit code an adapter clears once it has exited."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=60.0)
    loop = job.start(shift)
    with pytest.raises(SystemExit) as exited, loop:
        job.train(loop, STEPS)
        checkpoint = loop.state_dict()
    assert exited.value.code == 75 and len(job.step_times) == 3
    shift.exit_code = None  # as the adapters do once they have exited with it
    job.clock.advance(2 * HOUR - job.clock.now)  # started again at resume_at, in the same process
    loop = job.start(shift)
    loop.load_state_dict(checkpoint)
    with loop:
        assert not loop.should_stop and shift.requeued_until is None and shift.exit_code == 75
        job.train(loop, STEPS - 3)
    assert len(job.step_times) == STEPS and job.step_times[-1] == pytest.approx(2 * HOUR + (STEPS - 3) * STEP_S)
    assert shift.requeued_until is None and shift.exit_status is None and not loop.should_stop
    lines = read_record(job.record)
    events = [(x["event"], x["step"]) for x in lines if x["type"] == "shift"]
    after = [event for event in events[events.index(("requeue", 3)) + 1 :] if event[0] != "plan"]
    assert after == [("resume", 3)]  # then trained to the end, in the clean hours
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["time_shift"]["resume_at"] is None
    assert loop.last_metrics["carbon/paused_s"] == pytest.approx(2 * HOUR - 3 * STEP_S, abs=1e-6)
    # a third fit, with no checkpoint loaded, starts afresh: not a restart of the first one's requeue
    job.clock.advance(4 * HOUR - job.clock.now)
    loop = job.start(shift)
    with loop:
        job.train(loop, STEPS)
    assert job.step_times[-1] == pytest.approx(4 * HOUR + STEPS * STEP_S)  # nothing cleaner before the deadline
    assert loop.last_metrics["carbon/paused_s"] == 0.0
    assert [x for x in read_record(job.record) if x["type"] == "shift" and "away_s" in x][1:] == []


def test_without_total_steps_the_seconds_trained_are_taken_from_the_expected_duration(
    sim_gpus, monkeypatch, tmp_path
) -> None:
    """Clean 0-1 h, 300 g/kWh 1-2 h, clean 2-3 h, then dirty: a 1.5 h job of unknown steps trains the
    first clean hour, pauses through the second and ends in the third. Every replan used to take the
    whole ``expected_duration_s`` as still left: 1.5 h of work at 1 h could not wait for the clean
    hour, and the rest was trained at 300 g/kWh."""
    job = Job(sim_gpus, monkeypatch, tmp_path, hours=[CLEAN, 300.0, CLEAN, 900.0, 900.0, 900.0])
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=0.0, expected_duration_s=STEPS * STEP_S)
    loop = job.start(shift, total_steps=None)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    (pause,) = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "pause"]
    assert pause["step"] == 100 and pause["resume_at"] == BASE.timestamp() + 2 * HOUR
    assert job.step_times[-1] == pytest.approx(2.5 * HOUR)  # the last 50 steps in the clean hour 2-3
    final = loop.last_metrics
    assert final["carbon/paused_s"] == pytest.approx(HOUR, abs=1e-6)
    actual = kg(BUSY_W, STEPS * STEP_S, CLEAN) + kg(IDLE_W, HOUR, 300.0)
    assert final["carbon/co2e_kg"] == pytest.approx(actual, rel=1e-3)


@pytest.mark.parametrize(
    ("forecast", "paused_s"),
    [
        ([DIRTY, DIRTY, CLEAN, CLEAN, DIRTY, DIRTY], 2 * HOUR - 3 * STEP_S),  # pauses as the forecast says
        ([CLEAN] * 8, 0.0),  # flat: never pauses
    ],
)
def test_saved_is_priced_on_the_fixed_intensity_the_run_is_charged_with(
    sim_gpus, monkeypatch, tmp_path, forecast, paused_s
) -> None:
    """Charged at a fixed 300 g/kWh, planned on a forecast: the same work started at once is priced at
    300 g/kWh too, so the saving is the idle energy's CO2e, negated (0 for a run that never pauses).
    It used to be priced on the forecast: 500 g/kWh for the first, 80 for the second."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    curve = [(BASE + timedelta(hours=h), g) for h, g in enumerate(forecast)]
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W, forecast=curve)
    loop = job.start(shift, carbon_intensity_series=None, carbon_intensity_g_per_kwh=300.0)
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    final = loop.last_metrics
    assert len(job.step_times) == STEPS and final["carbon/paused_s"] == pytest.approx(paused_s, abs=1e-6)
    assert final["carbon/co2e_kg"] == pytest.approx(
        kg(BUSY_W, STEPS * STEP_S, 300.0) + kg(IDLE_W, paused_s, 300.0), rel=1e-3
    )
    assert final["carbon/saved_kg"] == pytest.approx(-kg(IDLE_W, paused_s, 300.0), abs=1e-3 * final["carbon/co2e_kg"])
    summary = read_record(job.record)[-1]["time_shift"]
    assert summary["run_now_kg"] == pytest.approx(kg(BUSY_W, STEPS * STEP_S, 300.0), rel=1e-3)


def test_wait_mode_never_pauses_once_training_has_begun(sim_gpus, monkeypatch, tmp_path) -> None:
    """Clean 0-1 h, dirty 1-3 h, then cleaner: with no expected_duration_s the run starts at once, and a
    pace measured slower than the first steps' made it pause mid-run until 3 h. "wait" is one
    contiguous run: once begun, it trains to the end."""
    job = Job(sim_gpus, monkeypatch, tmp_path, hours=[CLEAN, DIRTY, DIRTY, 75.0, 75.0, 75.0])
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="wait", idle_w=0.0), total_steps=STEPS)
    with loop:
        job.wait_first_reading()
        for i in range(STEPS):
            job.trace.set(job.clock.now, BUSY_W)
            job.advance(12.0 if i < 3 else STEP_S)  # the first 3 steps fast (a warm cache), then 36 s
            job.step_times.append(job.clock.now)
            loop.step()
    assert job.step_times[-1] == pytest.approx(3 * 12.0 + (STEPS - 3) * STEP_S)  # no gap: one run
    assert [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "pause"] == []
    assert loop.last_metrics["carbon/paused_s"] == 0.0


def test_a_restart_before_resume_at_does_not_wait_past_its_deadline(sim_gpus, monkeypatch, tmp_path) -> None:
    """Requeued until 2 h, started again at 0.5 h with a deadline at 1 h: it used to wait until 2 h,
    past its deadline; now it plans again at once (the work does not fit: it trains now)."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="requeue", resume_s=60.0))
    with pytest.raises(SystemExit), loop:
        job.train(loop, STEPS)
        checkpoint = loop.state_dict()
    assert checkpoint["time_shift"]["shift"]["resume_at"] == BASE.timestamp() + 2 * HOUR
    job.clock.advance(0.5 * HOUR - job.clock.now)
    loop = job.start(TimeShiftRun(deadline=deadline_in(1), mode="requeue", resume_s=60.0))
    loop.load_state_dict(checkpoint)
    with loop:
        job.train(loop, STEPS - 3)
    assert job.step_times[3] == pytest.approx(0.5 * HOUR + STEP_S)  # the first step, at once
    assert job.step_times[-1] == pytest.approx(0.5 * HOUR + (STEPS - 3) * STEP_S)  # then without a pause
    events = [x["event"] for x in read_record(job.record) if x["type"] == "shift"]
    assert [e for e in events[events.index("requeue") + 1 :] if e != "plan"] == ["resume"]  # no wait for resume_at
    assert loop.last_metrics["carbon/paused_s"] == pytest.approx(0.5 * HOUR - 3 * STEP_S, abs=1e-6)  # the time away


def _state(**change: float | None) -> dict:
    t = BASE.timestamp()
    stored = {"origin": t, "co2e_at_origin": 0.0, "kwh_at_origin": 0.0, "stretches": [], "paused_s": 0.0,
              "idle_kwh": 0.0, "idle_s": 0.0, "exited_at": t, "resume_at": t + HOUR, "resume_s": 60.0}  # fmt: skip
    return {"shift": {**stored, **change}}


@pytest.mark.parametrize(
    "change",
    [
        {"resume_at": float("inf")},
        {"resume_at": float("nan")},
        {"resume_at": 1e300},
        {"resume_at": -1.0},
        {"exited_at": 1e300},
        {"resume_s": float("inf")},
        {"resume_s": 1e12},
    ],
)
def test_a_checkpoint_state_with_times_out_of_range_is_a_clear_error(change) -> None:
    """exited_at, resume_at and resume_s were not checked: resume_at=inf was taken, and the restarted
    run paused for ever; 1e300 raised OverflowError out of the loop's start."""
    TimeShiftRun(deadline=deadline_in(6)).load_state_dict(_state())  # the same state, in range, is taken
    with pytest.raises(ValueError, match="time shift state"):
        TimeShiftRun(deadline=deadline_in(6)).load_state_dict(_state(**change))


@pytest.mark.parametrize(
    ("arguments", "named"),
    [({"expected_duration_s": 1e12}, r"expected_duration_s must be in \(0, 1e\+09\] s"),
     ({"resume_s": 1e300}, r"resume_s must be in \[0, 1e\+09\] s")],
)  # fmt: skip
def test_durations_beyond_the_planners_range_are_refused_at_construction(arguments, named) -> None:
    """1e12 s used to pass, then raise "year 35303 is out of range" out of the loop's start."""
    with pytest.raises(ValueError, match=named):
        TimeShiftRun(deadline=deadline_in(6), **arguments)
    assert TimeShiftRun(deadline=deadline_in(6), expected_duration_s=1e9, resume_s=1e9).expected_duration_s == 1e9


@pytest.mark.parametrize(
    "deadline",
    [
        datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))),  # 10000-01-01 04:00 UTC
        datetime.max.replace(tzinfo=timezone.utc),
        "9999-12-31T23:00:00-05:00",
        datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),  # year 0 in UTC
    ],
)
def test_a_deadline_outside_the_plans_range_is_refused_at_construction(deadline) -> None:
    """A deadline past year 9999 in UTC used to pass, then raise "year 10000 is out of range" out of the
    training loop, at the first plan."""
    with pytest.raises(ValueError, match=r"deadline must be in \[1970-01-01T00:00:00\+00:00, 9000-01-01T00:00:00"):
        TimeShiftRun(deadline=deadline)


def test_the_latest_deadline_plans_in_the_loop(sim_gpus, monkeypatch, tmp_path) -> None:
    latest = datetime(8999, 12, 31, 19, tzinfo=timezone(timedelta(hours=-5)))  # 9000-01-01 UTC
    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=latest, mode="pause", idle_w=IDLE_W))
    with loop:
        job.wait_first_reading()
        job.train(loop, 10)
    plans = [x for x in read_record(job.record) if x["type"] == "shift" and x["event"] == "plan"]
    assert plans and plans[0]["plan"]["deadline"] == datetime(9000, 1, 1, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])  # Ctrl-C; SIGTERM where a handler exits
def test_a_pause_cut_short_by_an_interrupt_still_counts(sim_gpus, monkeypatch, tmp_path, error) -> None:
    """Interrupted an hour into the pause after step 3: the error went on, but the hour was lost from the
    figures (``paused_s`` 0), its idle energy from the pauses' and the record had no resume line."""
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)

    def sleep(seconds: float) -> None:
        job.idle(seconds)
        if job.clock.now >= 3 * STEP_S + HOUR:
            raise error

    shift.sleep = sleep
    with pytest.raises(error), loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    assert len(job.step_times) == 3 and job.clock.now == pytest.approx(3 * STEP_S + HOUR)
    lines = read_record(job.record)
    events = [(x["event"], x["step"]) for x in lines if x["type"] == "shift"]
    assert events[-2:] == [("pause", 3), ("resume", 3)]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["status"] == end_status(error)
    assert summary["time_shift"]["paused_s"] == pytest.approx(HOUR, abs=1e-6)
    assert loop.tracker.link.paused_s == pytest.approx(HOUR, abs=1e-6)
    assert loop.tracker.link.paused_kwh == pytest.approx(IDLE_W * HOUR / J_PER_KWH, rel=1e-3)
