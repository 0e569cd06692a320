"""EnergyLoop misused as a hostile user would: nested stages, failing ends, odd batches, calls out of order.

A simulated GPU draws a known 300 W, so a figure that is off shows it.
"""

from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref

import pytest
import torch

from energy_core import J_PER_KWH, BudgetRule, EnergyLoop, PowerCapRun, TimeShiftRun
from energy_core.notices import Notice
from energy_core.output import keys
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.energy_core.shift.manual_job import IDLE_W, STEPS, Job, deadline_in
from tests.helpers.records import read_record

GPU_W = 300.0


def known_gpu(sim_gpus):
    return sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.005, default_limit_mw=400_000,
                    min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip


def loop(**kwargs) -> EnergyLoop:
    return EnergyLoop(devices=["gpu"], sample_interval_s=0.005, country="FRA", **kwargs)


def samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "energy-sampler"]


def test_a_stage_inside_another_is_taken_out_of_training_once(sim_gpus) -> None:
    """A test block inside a val block: its time was taken out of the training window twice, so
    J per step came out near 0 (0.2 J instead of 12 J)."""
    known_gpu(sim_gpus)
    clock = time.perf_counter
    with loop(log_every_n_steps=5) as energy:
        begin = clock()
        for i in range(5):
            time.sleep(0.04)  # 5 steps of about 0.04 s at 300 W: about 12 J each
            if i == 2:
                with energy.stage("val") as val:
                    val_begin = clock()
                    time.sleep(0.1)
                    with energy.stage("test") as test:
                        test_begin = clock()
                        time.sleep(0.2)
                        test_s = clock() - test_begin
                val_s = clock() - val_begin - test_s
            metrics = energy.step()
        train_s = clock() - begin - val_s - test_s
    assert metrics[keys.STEP_J] == pytest.approx(GPU_W * train_s / 5, rel=0.25)
    assert metrics[keys.TOTAL_W] == pytest.approx(GPU_W, rel=0.15)
    # each second counted once, as the innermost stage's
    assert val[keys.stage_kwh("val")] * J_PER_KWH == pytest.approx(GPU_W * val_s, rel=0.25)
    assert test[keys.stage_kwh("test")] * J_PER_KWH == pytest.approx(GPU_W * test_s, rel=0.25)


def test_a_stage_inside_the_same_stage_counts_the_outer_block(sim_gpus) -> None:
    """``with stage("val")`` inside ``with stage("val")`` (a validate() that wraps itself): the outer
    block's time outside the inner one was lost (val_kwh 15 J instead of 45 J)."""
    known_gpu(sim_gpus)
    with loop(log_every_n_steps=5) as energy:
        time.sleep(0.02)
        energy.step()
        with energy.stage("val") as outer:
            begin = time.perf_counter()
            time.sleep(0.05)
            with energy.stage("val"):
                time.sleep(0.05)
            time.sleep(0.05)
            val_s = time.perf_counter() - begin
    assert outer[keys.stage_kwh("val")] * J_PER_KWH == pytest.approx(GPU_W * val_s, rel=0.2)
    assert energy.last_metrics[keys.stage_kwh("val")] == outer[keys.stage_kwh("val")]


def test_a_failing_end_still_restores_the_cap_stops_the_sampler_and_keeps_the_users_error(
    sim_gpus, monkeypatch
) -> None:
    """The run's end failing (here the final totals) replaced the exception that left the block,
    left the GPU capped and the sampler thread running."""
    sim = known_gpu(sim_gpus)

    class Boom(Exception):
        pass

    error = Boom("the model diverged")
    energy = loop(log_every_n_steps=100, power_cap=PowerCapRun(watts=350))

    def broken(*args, **kwargs):
        raise RuntimeError("measurement bug")

    with pytest.raises(Boom) as raised, energy:
        monkeypatch.setattr(energy.tracker, "end_fit", broken)
        assert sim.limit_mw(sim.gpus[0]) == 350_000
        raise error
    assert raised.value is error
    assert sim.limit_mw(sim.gpus[0]) == 400_000  # put back
    assert samplers() == []

    # and a clean exit does not raise it into the script either
    energy = loop(log_every_n_steps=100)
    with energy:
        monkeypatch.setattr(energy.tracker, "end_fit", broken)
        energy.step()
    assert samplers() == []


def test_a_notify_that_raises_does_not_stop_training(sim_gpus) -> None:
    known_gpu(sim_gpus)
    shown: list[Notice] = []

    def fussy(notice: Notice) -> None:
        shown.append(notice)
        raise RuntimeError("my logging handler is broken")

    with loop(log_every_n_steps=1, notify=fussy) as energy:  # no location given: a notice at the start
        for _ in range(3):
            time.sleep(0.01)
            energy.step()
    assert energy.steps == 3 and energy.last_metrics[keys.TOTAL_KWH] > 0


def test_a_batch_that_cannot_be_counted_counts_nothing(sim_gpus) -> None:
    """A batch whose shape holds an unknown size (a lazy array's NaN) raised from `step`."""
    known_gpu(sim_gpus)

    class Lazy:
        shape = (float("nan"), 3)

    notices: list[Notice] = []
    with loop(log_every_n_steps=2, notify=notices.append) as energy:
        for _ in range(4):
            time.sleep(0.01)
            energy.step(Lazy())
    assert energy.steps == 4 and keys.SAMPLES_PER_S not in energy.last_metrics
    assert sum("could not be counted" in n.text for n in notices) == 1


def test_steps_before_the_start_do_not_claim_a_resume(sim_gpus) -> None:
    """`step` before `start` made the start warn of a checkpoint without energy state."""
    known_gpu(sim_gpus)
    energy = loop(log_every_n_steps=1)
    assert energy.step() == {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with energy:
            time.sleep(0.02)
            energy.step()
    assert not [w for w in caught if "checkpoint" in str(w.message)]


@pytest.mark.parametrize(
    ("state", "error", "named"),
    [
        (None, TypeError, "EnergyLoop state must be a mapping"),
        ([1, 2], TypeError, "EnergyLoop state must be a mapping"),
        ({"steps": -3}, ValueError, "steps"),
        ({"steps": 5, "epochs": "1"}, TypeError, "epochs"),
    ],
)
def test_a_state_that_is_not_a_loops_is_refused_before_any_of_it_is_taken(sim_gpus, state, error, named) -> None:
    # None or a list raised AttributeError from state.get; a bad step count was found only after the
    # checkpoint's energy totals had been taken up, leaving a loop half resumed.
    sim_gpus(SimGpu("GPU-a", Constant(300.0)))
    first = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, notify=lambda notice: None)
    with first:
        first.step(torch.zeros(8, 2))  # 8 samples: totals a resume would carry on
    energy = first.state_dict()["energy"]
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, notify=lambda notice: None)
    fresh = loop.tracker.state_dict()
    bad = state if not isinstance(state, dict) else {"energy": energy, **state}
    with pytest.raises(error, match=named):
        loop.load_state_dict(bad)
    assert loop.steps == 0 and loop.tracker.state_dict() == fresh  # nothing taken


def test_stages_nested_outside_a_run_are_one_run_in_the_record(sim_gpus, tmp_path) -> None:
    # Outside a run each outer stage block is a run of its own: pausing it for an inner block ended that run
    # and began another, so one evaluation made three runs (val, test, val) in the record and the report.
    sim_gpus(SimGpu("GPU-a", Constant(300.0)))
    record = tmp_path / "energy.jsonl"
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.01, record_path=record, notify=lambda notice: None)
    with loop.stage("val") as val:
        time.sleep(0.05)
        with loop.stage("test") as test:
            time.sleep(0.05)
        time.sleep(0.05)
    kinds = [line["type"] for line in read_record(record)]
    assert kinds.count("header") == 1 and kinds.count("summary") == 1 and kinds[-1] == "summary"
    assert val["energy/val_kwh"] > 0 and test["energy/test_kwh"] > 0


def test_an_empty_state_is_no_resume(sim_gpus) -> None:
    # load_state_dict({}) - a first run's ckpt.get("energy", {}) - made the start say it resumed without state.
    sim_gpus(SimGpu("GPU-a", Constant(300.0)))
    shown: list[str] = []
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.02, notify=lambda notice: shown.append(notice.text))
    loop.load_state_dict({})
    with loop:
        loop.step()
    assert not any("Resumed" in text for text in shown) and any("Measuring energy of" in text for text in shown)


def test_a_closed_loop_with_a_budget_and_a_time_shift_is_freed(tmp_path, sim_gpus) -> None:
    """The runs sharing a tracker were linked through a module-level registry keyed by the meter, whose
    entry (a budget's flag) held the tracker: every fit with a budget kept its meter and buffers alive."""
    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.01))

    def one_run() -> weakref.ref:
        loop = EnergyLoop(devices=["gpu"], sample_interval_s=0.01, budget=BudgetRule(max_kwh=1.0),
                          carbon_intensity_g_per_kwh=100, time_shift=TimeShiftRun(deadline=deadline_in(6)))  # fmt: skip
        with loop:
            for _ in range(3):
                loop.step()
        return weakref.ref(loop.tracker.meter)

    refs = [one_run() for _ in range(3)]
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]


def test_a_close_from_another_thread_waits_for_the_step_under_way(sim_gpus, monkeypatch) -> None:
    # A watchdog that closes the loop from its own thread: the close ended the run in the middle of a step's
    # window, which then raised into the training loop (AttributeError, AssertionError: 12 trials in 25).
    sim_gpus(SimGpu("GPU-1", Constant(300.0)))
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=60, log_every_n_steps=1, notify=lambda notice: None)
    loop.start()
    for _ in range(2):  # two readings: the window resolves
        time.sleep(0.01)
        loop.tracker.meter.sampler.sample_once()
    closed: list[dict[str, float]] = []
    closer = threading.Thread(target=lambda: closed.append(loop.close()))
    real = loop.tracker.meter.read

    def read(*marks):  # the step's window reads its end: the watchdog closes the loop right then
        if threading.current_thread() is threading.main_thread() and closer.ident is None:
            closer.start()
            closer.join(0.5)  # long enough for an unguarded close to end the run under the step
        return real(*marks)

    monkeypatch.setattr(loop.tracker.meter, "read", read)
    metrics = loop.step()
    closer.join(30)
    assert closer.ident is not None and not closer.is_alive()
    assert metrics[keys.STEP_J] > 0 and closed and closed[0][keys.TOTAL_KWH] >= metrics[keys.TOTAL_KWH]
    assert loop.step() == {}  # after the close: nothing, and nothing raised


@pytest.mark.parametrize("call", ["state_dict", "summary"])
def test_a_close_from_another_thread_waits_for_a_checkpoint_or_summary_under_way(sim_gpus, monkeypatch, call) -> None:
    # The same for the loop's state and its summary, read on the training thread: a close ended the fit
    # between the tracker's "fitting?" and its read of the fit's start (AttributeError into the loop).
    sim_gpus(SimGpu("GPU-1", Constant(300.0)))
    loop = EnergyLoop(devices=["gpu"], sample_interval_s=60, log_every_n_steps=1, notify=lambda notice: None)
    loop.start()
    for _ in range(2):
        time.sleep(0.01)
        loop.tracker.meter.sampler.sample_once()
        loop.step()
    closer = threading.Thread(target=loop.close)
    real = loop.tracker.meter.read

    def read(*marks):  # the totals read the fit's start: the watchdog closes the loop right then
        at_start = any(mark is loop.tracker._accounts.fit_start for mark in marks)
        if threading.current_thread() is threading.main_thread() and at_start and closer.ident is None:
            closer.start()
            closer.join(0.5)  # long enough for an unguarded close to end the run under the call
        return real(*marks)

    monkeypatch.setattr(loop.tracker.meter, "read", read)
    got = loop.state_dict() if call == "state_dict" else loop.summary
    closer.join(30)
    assert closer.ident is not None and not closer.is_alive()
    if call == "state_dict":
        assert got["steps"] == 2 and got["energy"]["energy_j"]["gpu"] > 0
    else:
        assert got.startswith("Energy: ")


def test_a_loop_closed_by_a_watchdog_plans_and_writes_nothing_more(sim_gpus, monkeypatch, tmp_path) -> None:
    # After a close from another thread the training thread steps on until it notices: the time shift went
    # on deciding, and its plans reached the record after the run's summary.
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)
    with loop:
        job.wait_first_reading()
        job.train(loop, 12)
        closer = threading.Thread(target=loop.close, args=("watchdog",))
        closer.start()
        closer.join(30)
        for _ in range(25):
            job.train_step()
            assert loop.step() == {}
    record = read_record(job.record)
    summary = max(i for i, line in enumerate(record) if line["type"] == "summary")
    assert record[summary]["status"] == "watchdog" and record[summary + 1 :] == []


def test_a_close_from_another_thread_cuts_a_time_shifts_pause_short(sim_gpus, monkeypatch, tmp_path) -> None:
    # The pause sleeps inside step(), which holds the loop's lock: a watchdog's close() waited out the whole
    # two-hour pause (on the manual clock) before it could end the run and put a cap back.
    job = Job(sim_gpus, monkeypatch, tmp_path)
    shift = TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    loop = job.start(shift)
    waited: list[float] = []

    def watchdog() -> None:
        begun = job.clock.now
        loop.close("watchdog")
        waited.append(job.clock.now - begun)

    dog = threading.Thread(target=watchdog)
    naps = shift.sleep

    def sleep(seconds: float) -> None:  # a nap of the pause: the watchdog closes the loop during the first
        if dog.ident is None:
            dog.start()
            dog.join(1.0)  # (it waits for the step the pause holds, or the pause ends first)
        job.idle(seconds)
        naps(0.0)  # the pause's own nap (a cut short pause wakes at once): nothing more of the clock

    shift.sleep = sleep
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    dog.join(30)
    assert waited and waited[0] <= 300.0  # a nap and a few steps of the manual clock, not the two hours
    [summary] = [line for line in read_record(job.record) if line["type"] == "summary"]
    assert summary["status"] == "watchdog" and 0 < summary["time_shift"]["paused_s"] <= 120.0


def test_a_step_outside_a_run_says_so_once_and_how_to_start_one(sim_gpus) -> None:
    # Built without `with` or start(), a loop stepped in silence: every step returned {} and the summary said no
    # GPU was found, with a simulated one in the machine.
    known_gpu(sim_gpus)
    said: list[Notice] = []
    energy = loop(log_every_n_steps=2, notify=said.append)
    for _ in range(6):
        assert energy.step() == {}
    assert [n.text for n in said] == [
        "EnergyLoop.step() outside a run (before start() or after close()): nothing is measured. Put the loop in "
        "`with EnergyLoop(...) as energy:`, or call energy.start() before it and energy.close() after it."
    ]
    with energy:  # in a run: measured, and nothing more is said
        for _ in range(4):
            time.sleep(0.02)
            energy.step()
    outside = [n for n in said if "outside a run" in n.text]
    assert len(outside) == 1 and energy.last_metrics[keys.TOTAL_KWH] > 0
    energy.step()  # after close: said once per loop, already said
    assert [n for n in said if "outside a run" in n.text] == outside


def test_a_batch_with_nothing_to_count_is_said_once(sim_gpus) -> None:
    known_gpu(sim_gpus)
    said: list[Notice] = []
    with loop(log_every_n_steps=2, notify=said.append) as energy:
        for _ in range(4):
            energy.step({"text": "no size"})
    assert [n.text for n in said if "no samples to count" in n.text] == [
        "A batch of type dict gave no samples to count (no tensor, array or list of texts in it, or an empty one): "
        "such batches add no samples to the throughput and per-sample figures."
    ]


def test_an_evaluation_before_the_run_is_no_part_of_the_runs_stages(sim_gpus, tmp_path) -> None:
    """A baseline evaluation before training is a run of its own, with its own summary. Its energy was
    also left in the process's stage counts, so the run after it reported a validation energy
    larger than its whole total (and a checkpoint kept it)."""
    known_gpu(sim_gpus)
    record = tmp_path / "energy.jsonl"
    energy = loop(record_path=record, notify=lambda notice: None)
    with energy.stage("val") as baseline:
        time.sleep(0.3)  # about 90 J at 300 W
    with energy:
        for i in range(4):
            time.sleep(0.02)
            if i == 2:
                with energy.stage("val") as inside:
                    time.sleep(0.02)  # about 6 J
            energy.step()
    final = energy.last_metrics
    summaries = [x for x in read_record(record) if x["type"] == "summary"]
    assert [s["stage_kwh"]["val"] for s in summaries] == [baseline["energy/val_kwh"], final["energy/val_kwh"]]
    assert final["energy/val_kwh"] == pytest.approx(inside["energy/val_kwh"], rel=1e-9)  # the run's own, once
    assert final["energy/val_kwh"] < final["energy/total_kwh"]
    assert energy.state_dict()["energy"]["stage_j"]["val"] == pytest.approx(
        final["energy/val_kwh"] * J_PER_KWH, rel=1e-9
    )


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "exception: RuntimeError"), (KeyboardInterrupt, "interrupted")]
)
def test_a_stage_run_of_its_own_that_raises_says_how_it_ended(sim_gpus, tmp_path, error, status) -> None:
    """Outside a run, a stage block is a run of its own: one that raised was summarised "completed"."""
    known_gpu(sim_gpus)
    record = tmp_path / "energy.jsonl"
    energy = loop(record_path=record, notify=lambda notice: None)
    with pytest.raises(error):
        with energy.stage("test"):
            time.sleep(0.03)
            raise error("cut short")
    kinds = [(x["type"], x.get("status")) for x in read_record(record)]
    assert kinds == [("header", None), ("stage", None), ("summary", status)]


def test_a_close_from_a_watchdog_during_a_stage_ends_the_run_and_the_block_with_it(sim_gpus, tmp_path) -> None:
    """close() from another thread while a val block runs: the block's end measured on the closed meter
    and wrote a stage line after the summary, its figure larger than the run's whole total."""
    known_gpu(sim_gpus)
    record = tmp_path / "energy.jsonl"
    energy = loop(record_path=record, notify=lambda notice: None)
    with energy:
        for _ in range(3):
            time.sleep(0.02)
            energy.step()
        with energy.stage("val") as val:
            watchdog = threading.Thread(target=energy.close)
            watchdog.start()
            watchdog.join()
            time.sleep(0.05)
    lines = read_record(record)
    assert [x["type"] for x in lines][-1] == "summary" and "stage" not in [x["type"] for x in lines]
    assert val == {} and lines[-1]["stage_kwh"]["val"] == 0.0
    assert energy.step() == {}  # closed: later calls give nothing
