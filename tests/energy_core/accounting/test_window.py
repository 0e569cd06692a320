"""The logging window (`energy_core.accounting.window.Window`) on a real meter over simulated GPUs.

What is tested: `Window.add_batch` counting samples and tokens (an attention mask stays a lazy
torch sum that `counted` leaves out and `work` reads once), `Window.idle`, `Window.exclude` (a
stage run inside the window is taken out of its time and of its energy, at the joules the run
was settled at; one that began before the window is not), and `Window.close` / `Window.measure`
(the typed figures of the window; a window starts from the joules it is given, those its
predecessor ended at, and its energy is never below zero).

Every figure is exact: the clock is a `ManualClock` moved in steps of 1/8 s, the boards' energy
counters tick every 1/64 s, and every mark is taken right after a reading, so the meter's value
of a mark is the trace's integral with no interpolation or counter lag. Expected values are
worked out by hand from the traces below.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from energy_core.accounting.figures import WindowFigures
from energy_core.accounting.stages import StageRun
from energy_core.accounting.window import Window
from energy_core.sampling.meter import EnergyMeter, Mark
from tests.doubles.power_traces import Constant, Square
from tests.doubles.sim_nvml import ManualClock, SimGpu

COUNTER_S = 1 / 64  # a binary fraction: with clock steps of 1/8 s every counter reading is exact
# gpu0 draws 500 W for the first second of every two, then 100 W; gpu1 a steady 100 W.
GPU0 = Square(low=100.0, high=500.0, period=2.0)
GPU1 = Constant(100.0)


@dataclass
class Bench:
    """A meter over the two boards, read by the test: `advance` moves the clock with a reading every 1/8 s."""

    clock: ManualClock
    meter: EnergyMeter

    def advance(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.125)):
            self.clock.advance(0.125)
            self.meter.sampler.sample_once()

    def boundary(self) -> tuple[Mark, np.ndarray]:
        """A mark now (right after a reading) and its cumulative joules per source."""
        mark = self.meter.mark()
        [joules] = self.meter.joules(mark)
        return mark, joules


@pytest.fixture
def bench(sim_gpus) -> Iterator[Bench]:
    clock = ManualClock()
    sim_gpus(
        SimGpu("GPU-a", GPU0, counter_period_s=COUNTER_S),
        SimGpu("GPU-b", GPU1, counter_period_s=COUNTER_S),
        clock=clock,
    )
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=60, clock=clock)
    meter.open()  # the first reading, at t = 0 of the traces; the sampler thread then idles for a minute
    yield Bench(clock, meter)
    meter.close()


def mask(*lengths: int) -> torch.Tensor:
    """An attention mask with one row per sample, ``length`` ones then padding, 8 columns."""
    rows = torch.zeros(len(lengths), 8, dtype=torch.long)
    for i, length in enumerate(lengths):
        rows[i, :length] = 1
    return rows


# ----------------------------------------------------------------------------- counting work
def test_a_tensor_batch_counts_its_first_dimension_as_samples_and_no_tokens() -> None:
    window = Window()
    window.add_batch(torch.zeros(6, 3))
    window.add_batch((torch.zeros(4, 2), torch.zeros(4)))  # the first tensor of a tuple
    assert window.counted() == (10, 0)
    assert window.work() == (10, 0)


def test_a_batch_of_texts_and_labels_counts_its_texts() -> None:
    # What default_collate gives for a dataset of (text, label) pairs: it counted 0 samples, silently.
    window = Window()
    texts = tuple(f"sentence {i}" for i in range(8))
    assert window.add_batch([texts, torch.zeros(8)]) == 8
    assert window.add_batch(list(texts[:3])) == 3  # texts alone
    assert window.add_batch([[1.0, 2.0], torch.zeros(5)]) == 5  # the first item with a size
    assert window.add_batch({"text": "one"}) == 0  # nothing to count
    assert window.counted() == (16, 0)


def test_input_ids_without_a_mask_count_every_id_as_a_token_at_once() -> None:
    window = Window()
    window.add_batch({"input_ids": torch.zeros(3, 5, dtype=torch.long)})
    window.add_batch({"input_ids": torch.zeros(2, 7, dtype=torch.long)})
    assert window.counted() == (5, 3 * 5 + 2 * 7)


def test_an_attention_mask_is_a_lazy_sum_that_counted_leaves_out_and_work_reads_once() -> None:
    window = Window()
    window.add_batch({"input_ids": torch.zeros(2, 4, dtype=torch.long)})  # 8 tokens, counted at once
    window.add_batch({"input_ids": torch.zeros(3, 8, dtype=torch.long), "attention_mask": mask(8, 3, 0)})
    window.add_batch({"attention_mask": mask(5, 1)})
    assert window.counted() == (2 + 3 + 2, 8)  # samples at once; the masks' tokens not yet read
    assert window.work() == (7, 8 + 11 + 6)
    assert window.work() == (7, 25)  # read once: a second call adds nothing
    assert window.counted() == (7, 25)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.bool, torch.int8])
def test_a_low_precision_mask_is_summed_in_an_integer_dtype_past_its_own_range(dtype) -> None:
    # float16 holds integers exactly only up to 2,048 and overflows at 65,504; int8 wraps at 127: the
    # lazy sum is kept as a 64-bit integer, still without reading the device per step.
    window = Window()
    for _ in range(3):
        window.add_batch({"attention_mask": torch.ones(256, 128, dtype=dtype)})  # 32,768 tokens each
    assert window.counted() == (768, 0)
    assert window.work() == (768, 3 * 32_768)
    window.add_batch({"attention_mask": torch.ones(1, 2049, dtype=dtype)})  # 2,049: not a float16 value
    assert window.work() == (769, 3 * 32_768 + 2049)


def test_a_token_sum_no_device_can_read_leaves_the_windows_tokens_unknown_not_wrong() -> None:
    # A mask on the meta device (a model built before its weights) made Window.work raise at the logging
    # boundary, into the training loop; counted partly, the window's tokens per second would be wrong.
    window = Window()
    window.add_batch({"input_ids": torch.ones(2, 3, dtype=torch.long)})  # 6 tokens at once
    window.add_batch({"attention_mask": torch.ones(4, 5, dtype=torch.long, device="meta")})
    assert window.counted() == (6, 6)
    assert window.work() == (6, 0)  # its samples, and no token figure
    assert window.work() == (6, 0)


def test_a_window_with_nothing_trained_is_idle_until_a_step_or_a_sample() -> None:
    window = Window(Mark(0.0), step=5)
    assert window.idle(5) and window.idle(4)
    assert not window.idle(6)  # an optimizer step was taken
    sampled = Window(Mark(0.0), step=5)
    sampled.add_batch(torch.zeros(2, 1))
    assert not sampled.idle(5)  # micro-batches of an accumulating step


def test_a_window_with_only_a_pending_token_sum_is_not_idle() -> None:
    window = Window(Mark(0.0), step=5)
    window.add_batch({"attention_mask": torch.ones(0, 4)})  # no sample, but a lazy sum is queued
    assert window.counted() == (0, 0)
    assert not window.idle(5)
    window.work()
    assert window.idle(5)  # the sum was read (zero tokens): nothing trained after all


# ----------------------------------------------------------------------------- closing
def test_closing_gives_the_window_steps_seconds_and_energy_per_gpu(bench: Bench) -> None:
    bench.advance(0.5)  # the window opens at t = 0.5 s of the traces
    start, _ = bench.boundary()
    window = Window(start, step=3)
    window.add_batch({"input_ids": torch.zeros(4, 2, dtype=torch.long), "attention_mask": mask(2, 2, 1, 0)})
    bench.advance(1.25)  # to t = 1.75 s
    end, end_j = bench.boundary()
    figures, _ = window.close(bench.meter, end, end_j, step=8)
    gpu0_j = 500.0 * 0.5 + 100.0 * 0.75  # high until t = 1 s, then low
    gpu1_j = 100.0 * 1.25
    assert replace(figures, joules_err=0.0) == WindowFigures(
        5, 1.25, gpu0_j + gpu1_j, {"gpu0": gpu0_j, "gpu1": gpu1_j}, 4, 5
    )
    # the bound: both ends extrapolated at most 0.1 s past a reading at 500 + 100 W, the counter's lag 0.1 s at 500 W
    assert 0.0 < figures.joules_err <= 2 * 0.1 * 600.0 + 0.1 * 1000.0


def test_closing_uses_the_end_joules_given_not_a_fresh_reading(bench: Bench) -> None:
    start, _ = bench.boundary()
    window = Window(start, step=0)
    bench.advance(1.0)
    end, _ = bench.boundary()
    figures, _ = window.close(bench.meter, end, np.array([1234.0, 56.0]), step=1)
    assert figures.joules == 1234.0 + 56.0 and figures.gpu_j == {"gpu0": 1234.0, "gpu1": 56.0}


def test_a_stage_inside_the_window_is_taken_out_of_its_energy_and_time(bench: Bench) -> None:
    start, _ = bench.boundary()
    window = Window(start, step=0)
    bench.advance(0.75)  # training at 500 + 100 W
    stage_start, _ = bench.boundary()
    bench.advance(0.5)  # validation from 0.75 s to 1.25 s: gpu0 at 500 W then 100 W
    run = StageRun("val", stage_start, bench.boundary()[0], step=0)  # not settled: the window reads its marks
    window.exclude(run)
    bench.advance(0.5)  # training again from 1.25 s to 1.75 s at 100 + 100 W
    end, end_j = bench.boundary()
    per_source, seconds, _, _ = window.measure(bench.meter, end, end_j)
    assert seconds == 1.25
    assert per_source.tolist() == [500.0 * 0.75 + 100.0 * 0.5, 100.0 * 1.25]
    figures, _ = window.close(bench.meter, end, end_j, step=2)
    assert figures.joules == 500.0 * 0.75 + 100.0 * 0.5 + 100.0 * 1.25
    assert figures.seconds == 1.25


def test_a_settled_stage_is_taken_out_at_the_joules_it_was_counted_at(bench: Bench) -> None:
    start, _ = bench.boundary()
    window = Window(start, step=0)
    bench.advance(0.25)
    stage_start, _ = bench.boundary()
    bench.advance(0.5)  # what the meter says of the stage: 250 J and 50 J
    run = StageRun("val", stage_start, bench.boundary()[0], step=0, per_source=np.array([240.0, 55.0]))
    window.exclude(run)
    bench.advance(0.25)
    end, end_j = bench.boundary()
    per_source, seconds, _, _ = window.measure(bench.meter, end, end_j)
    assert seconds == 0.5
    assert per_source.tolist() == [500.0 * 1.0 - 240.0, 100.0 * 1.0 - 55.0]  # the stage's own figure, not a re-read


def test_two_stages_in_one_window_are_both_taken_out(bench: Bench) -> None:
    start, _ = bench.boundary()
    window = Window(start, step=0)
    for _ in range(2):  # 0.25 s of training, then a 0.5 s stage, twice: [0, .25) [.25, .75) [.75, 1) [1, 1.5)
        bench.advance(0.25)
        stage_start, _ = bench.boundary()
        bench.advance(0.5)
        window.exclude(StageRun("test", stage_start, bench.boundary()[0], step=0))
    bench.advance(0.5)  # training from 1.5 s to 2 s at 100 + 100 W
    end, end_j = bench.boundary()
    per_source, seconds, _, _ = window.measure(bench.meter, end, end_j)
    assert seconds == 0.25 + 0.25 + 0.5
    assert per_source.tolist() == [500.0 * 0.5 + 100.0 * 0.5, 100.0 * 1.0]


def test_a_stage_that_began_before_the_window_is_not_taken_out(bench: Bench) -> None:
    stage_start, _ = bench.boundary()  # a stage that was running when the window opened
    bench.advance(0.25)
    start, _ = bench.boundary()
    window = Window(start, step=0)
    bench.advance(0.25)
    window.exclude(StageRun("val", stage_start, bench.boundary()[0], step=0))
    bench.advance(0.5)
    end, end_j = bench.boundary()
    per_source, seconds, _, _ = window.measure(bench.meter, end, end_j)
    assert seconds == 0.75
    assert per_source.tolist() == [500.0 * 0.75, 100.0 * 0.75]


def test_a_window_starts_from_the_joules_its_predecessor_ended_at(bench: Bench) -> None:
    bench.advance(0.5)
    start, start_j = bench.boundary()  # 250 J and 50 J, but the last window ended at an extrapolated 260 J, 52 J
    window = Window(start, step=4, start_j=start_j + np.array([10.0, 2.0]))
    bench.advance(0.5)
    end, end_j = bench.boundary()
    figures, _ = window.close(bench.meter, end, end_j, step=6)
    assert figures.gpu_j == {"gpu0": 250.0 - 10.0, "gpu1": 50.0 - 2.0}  # it carries the correction
    assert (figures.steps, figures.seconds, figures.joules) == (2, 0.5, 288.0)


def test_a_windows_energy_is_never_below_zero(bench: Bench) -> None:
    start, start_j = bench.boundary()
    window = Window(start, step=0, start_j=start_j + np.array([200.0, 0.0]))  # its predecessor ran 200 J high
    bench.advance(0.25)  # 125 J and 25 J
    end, end_j = bench.boundary()
    per_source, seconds, carried, _ = window.measure(bench.meter, end, end_j)
    assert per_source.tolist() == [0.0, 25.0] and seconds == 0.25
    # the next window starts from what this one accounted for, 75 J above the end: it pays them back
    assert (carried - end_j).tolist() == [75.0, 0.0]
