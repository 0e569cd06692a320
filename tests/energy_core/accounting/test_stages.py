"""Validation, test and predict runs (`energy_core.accounting.stages.Stages`) on a real meter over a simulated GPU.

What is tested: `Stages.start` / `Stages.end` (a run is held until the meter can give its marks
a figure, and `Stages.settle` adds it up then, once, keeping its joules per source on the run),
provisional names (``started_as``), a bad stage name, `Stages.local_j` with a checkpoint's share,
`Stages.fold` at the end of a fit, and `Stages.kwh` from this process's figures or from the
job's (`Stages.set_job`).

The clock is a `ManualClock` moved in steps of 1/8 s and the board's counter ticks every 1/64 s,
so each stage's energy is exactly its trace's integral, worked out by hand below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from energy_core import J_PER_KWH, Ranks
from energy_core.accounting.stages import Stages
from energy_core.sampling.meter import EnergyMeter
from tests.doubles.power_traces import Square
from tests.doubles.sim_nvml import ManualClock, SimGpu

COUNTER_S = 1 / 64  # a binary fraction: with clock steps of 1/8 s every counter reading is exact
TRACE = Square(low=100.0, high=400.0, period=2.0)  # 400 W for the first second of every two, then 100 W


@dataclass
class Bench:
    clock: ManualClock
    meter: EnergyMeter

    def advance(self, seconds: float, read: bool = True) -> None:
        """Move the clock in steps of 1/8 s, with a reading after each (or none: the sampler is late)."""
        for _ in range(round(seconds / 0.125)):
            self.clock.advance(0.125)
            if read:
                self.meter.sampler.sample_once()


@pytest.fixture
def bench(sim_gpus) -> Iterator[Bench]:
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", TRACE, counter_period_s=COUNTER_S), clock=clock)
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=60, clock=clock)
    meter.open()  # the first reading, at t = 0 of the trace; the sampler thread then idles for a minute
    yield Bench(clock, meter)
    meter.close()


def zeros() -> dict[str, float]:
    return {"val": 0.0, "test": 0.0, "predict": 0.0}


def test_ending_a_stage_that_never_started_gives_nothing(bench: Bench) -> None:
    stages = Stages()
    assert stages.end("val", step=3, end=bench.meter.mark()) is None
    assert stages.settle(bench.meter) == []
    assert stages.live_j == zeros()


def test_a_stage_is_added_up_once_with_the_energy_of_its_trace(bench: Bench) -> None:
    stages = Stages()
    bench.advance(0.5)
    stages.start("val", bench.meter.mark())
    assert stages.running("val") and not stages.running("test")
    bench.advance(1.0)  # from 0.5 s to 1.5 s: half a second at 400 W, half at 100 W
    run = stages.end("val", step=7, end=bench.meter.mark())
    assert run is not None and (run.stage, run.step, run.end.t - run.start.t) == ("val", 7, 1.0)
    assert not stages.running("val")
    settled = stages.settle(bench.meter)
    assert settled == [(run, 400.0 * 0.5 + 100.0 * 0.5)]
    assert run.per_source.tolist() == [250.0]  # kept, for the window it ran in to take out exactly
    assert stages.settle(bench.meter) == []  # settled once
    assert stages.live_j == {**zeros(), "val": 250.0}
    assert stages.kwh("val") == 250.0 / J_PER_KWH


def test_a_run_ending_before_the_second_reading_is_held_then_settled_not_counted_as_zero(bench: Bench) -> None:
    stages = Stages()
    stages.start("val", bench.meter.mark())  # at the first reading, t = 0
    bench.advance(0.25, read=False)  # a sanity check shorter than a sampling interval
    run = stages.end("val", step=0, end=bench.meter.mark())
    assert run is not None
    assert stages.settle(bench.meter) == []  # no figure yet: held
    assert stages.live_j["val"] == 0.0
    bench.advance(0.25)  # readings at 0.375 s and 0.5 s fix both marks
    assert stages.settle(bench.meter) == [(run, 400.0 * 0.25)]
    assert stages.live_j["val"] == 100.0


def test_held_runs_of_several_stages_settle_together_each_to_its_own_stage(bench: Bench) -> None:
    stages = Stages()
    stages.start("val", bench.meter.mark())
    bench.advance(0.125, read=False)
    first = stages.end("val", step=1, end=bench.meter.mark())
    stages.start("test", bench.meter.mark())
    bench.advance(0.25, read=False)
    second = stages.end("test", step=1, end=bench.meter.mark())
    assert stages.settle(bench.meter) == []
    bench.advance(1.0)
    assert stages.settle(bench.meter) == [(first, 400.0 * 0.125), (second, 400.0 * 0.25)]
    assert stages.live_j == {"val": 50.0, "test": 100.0, "predict": 0.0}


def test_runs_of_one_stage_add_up(bench: Bench) -> None:
    stages = Stages()
    for _ in range(2):  # [0, 0.75) at 400 W, then [1.25, 2) at 100 W
        stages.start("val", bench.meter.mark())
        bench.advance(0.75)
        stages.end("val", step=0, end=bench.meter.mark())
        stages.settle(bench.meter)
        bench.advance(0.5)
    assert stages.live_j["val"] == 400.0 * 0.75 + 100.0 * 0.75


def test_a_provisional_name_is_counted_as_the_stage_it_turns_out_to_be(bench: Bench) -> None:
    stages = Stages()
    stages.start("inference", bench.meter.mark())  # an HF evaluation or prediction, not known yet
    assert stages.running("inference")
    bench.advance(0.5)
    assert stages.end("val", step=2, end=bench.meter.mark()) is None  # no run started as "val"
    run = stages.end("predict", step=2, end=bench.meter.mark(), started_as="inference")
    assert run is not None and run.stage == "predict"
    assert not stages.running("inference")
    stages.settle(bench.meter)
    assert stages.live_j == {**zeros(), "predict": 400.0 * 0.5}


def test_a_stage_name_outside_val_test_predict_is_a_value_error_naming_it(bench: Bench) -> None:
    stages = Stages()
    stages.start("train", bench.meter.mark())  # any name may be provisional
    with pytest.raises(ValueError, match="'train'"):
        stages.end("train", step=0, end=bench.meter.mark())
    assert stages.running("train")  # refused before the run was taken
    with pytest.raises(ValueError, match="'inference'"):
        stages.end("inference", step=0, end=bench.meter.mark(), started_as="train")


def test_local_joules_add_the_checkpoint_share_to_the_live_runs(bench: Bench) -> None:
    stages = Stages()
    stages.start("test", bench.meter.mark())
    bench.advance(0.5)
    stages.end("test", step=0, end=bench.meter.mark())
    stages.settle(bench.meter)
    stages.resumed_j = {"val": 1000.0, "test": 30.0}
    assert stages.local_j() == {"val": 1000.0, "test": 30.0 + 200.0, "predict": 0.0}
    assert stages.kwh("test") == 230.0 / J_PER_KWH


def test_fold_keeps_the_folded_totals_and_restarts_the_live_counts(bench: Bench) -> None:
    stages = Stages()
    stages.start("val", bench.meter.mark())
    bench.advance(0.25)
    stages.end("val", step=0, end=bench.meter.mark())
    stages.settle(bench.meter)
    assert stages.live_j["val"] == 100.0
    stages.fold({"val": 100.0 + 5000.0, "test": 0.0, "predict": 7.0})  # this fit folded into the totals
    assert stages.live_j == zeros()
    assert stages.local_j() == {"val": 5100.0, "test": 0.0, "predict": 7.0}
    stages.start("val", bench.meter.mark())  # the next fit's run adds to them: [0.25, 1.25)
    bench.advance(1.0)
    stages.end("val", step=0, end=bench.meter.mark())
    stages.settle(bench.meter)
    assert stages.local_j()["val"] == 5100.0 + 400.0 * 0.75 + 100.0 * 0.25


def test_kwh_is_the_jobs_after_a_sum_over_ranks_and_this_processs_without_one(bench: Bench) -> None:
    stages = Stages()
    stages.start("val", bench.meter.mark())
    bench.advance(0.5)
    stages.end("val", step=0, end=bench.meter.mark())
    stages.settle(bench.meter)
    stages.set_job({"val": 2 * J_PER_KWH, "test": 0.5 * J_PER_KWH, "predict": 0.0})
    assert (stages.kwh("val"), stages.kwh("test")) == (2.0, 0.5)
    stages.set_job(None)
    assert (stages.kwh("val"), stages.kwh("test")) == (200.0 / J_PER_KWH, 0.0)


def test_a_sum_over_one_process_leaves_this_processs_figures(bench: Bench) -> None:
    stages = Stages()
    stages.set_job({"val": J_PER_KWH, "test": 0.0, "predict": 0.0})
    stages.start("val", bench.meter.mark())
    bench.advance(0.5)
    stages.end("val", step=0, end=bench.meter.mark())
    stages.settle(bench.meter)
    stages.sum_over(Ranks())  # not distributed: no job figure replaces this process's own
    assert stages.kwh("val") == 200.0 / J_PER_KWH
