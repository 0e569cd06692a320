"""The metric dictionaries (`energy_core.output.metrics`) from typed figures.

What is tested: which keys `cumulative`, `window`, `stage` and `cap` fill and when (a price, a
cap, the device kinds measured; a window of 0 seconds or 0 steps or no work leaves the figures
it cannot resolve out instead of logging zeros or infinities), and that every value is the
figure worked out here from the inputs. A hypothesis property covers every combination of
zero and non-zero window figures.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_core import J_PER_KWH, RunTotals
from energy_core.accounting.figures import WindowFigures
from energy_core.output import keys
from energy_core.output.metrics import cap, cumulative, epoch, stage, window


# ----------------------------------------------------------------------------- cumulative
def test_cumulative_figures_are_kwh_by_kind_co2e_and_the_intensity_now() -> None:
    errors = {"gpu": 0.02 * J_PER_KWH, "dram": 0.25 * J_PER_KWH, "cpu": 0.005 * J_PER_KWH}
    totals = RunTotals(
        {"gpu": 2 * J_PER_KWH, "dram": 0.25 * J_PER_KWH, "cpu": 0.5 * J_PER_KWH},
        co2e_kg=1.1,
        energy_err=errors,
        co2e_err=0.1,
    )
    metrics = cumulative(totals, g_per_kwh=321.0, priced=False, cap_w=None)
    assert metrics == {
        "energy/total_kwh": 2.75,
        "energy/total_kwh_err": 0.275,
        "energy/cpu_kwh": 0.5,
        "energy/cpu_kwh_err": 0.005,
        "energy/dram_kwh": 0.25,
        "energy/dram_kwh_err": 0.25,
        "energy/gpu_kwh": 2.0,
        "energy/gpu_kwh_err": 0.02,
        "carbon/co2e_kg": 1.1,
        "carbon/co2e_kg_err": 0.1,
        "carbon/intensity_g_per_kwh": 321.0,
    }
    kinds = [key for key in metrics if key.startswith("energy/") and not key.endswith("_err")][1:]
    assert kinds == ["energy/cpu_kwh", "energy/dram_kwh", "energy/gpu_kwh"]  # kinds in order


def test_cumulative_figures_list_only_the_kinds_measured() -> None:
    metrics = cumulative(RunTotals({"gpu": 7200.0}), g_per_kwh=0.0, priced=False, cap_w=None)
    assert metrics["energy/total_kwh"] == metrics["energy/gpu_kwh"] == 7200.0 / J_PER_KWH
    assert "energy/cpu_kwh" not in metrics and "energy/dram_kwh" not in metrics
    nothing = cumulative(RunTotals(), g_per_kwh=50.0, priced=False, cap_w=None)
    assert nothing == {
        "energy/total_kwh": 0.0,
        "energy/total_kwh_err": 0.0,
        "carbon/co2e_kg": 0.0,
        "carbon/co2e_kg_err": 0.0,
        "carbon/intensity_g_per_kwh": 50.0,
    }


def test_cost_appears_only_with_a_price_even_when_it_is_zero() -> None:
    totals = RunTotals({"gpu": J_PER_KWH}, cost=0.0)
    assert keys.COST not in cumulative(totals, 100.0, priced=False, cap_w=None)
    assert cumulative(totals, 100.0, priced=True, cap_w=None)[keys.COST] == 0.0
    priced = cumulative(RunTotals(cost=3.5, cost_err=0.25), 100.0, priced=True, cap_w=None)
    assert priced[keys.COST] == 3.5 and priced["cost/total_err"] == 0.25


def test_the_cap_appears_while_one_is_in_force() -> None:
    totals = RunTotals({"gpu": J_PER_KWH})
    assert keys.CAP_W not in cumulative(totals, 100.0, priced=False, cap_w=None)
    assert cumulative(totals, 100.0, priced=False, cap_w=250.0)[keys.CAP_W] == 250.0
    assert cap(None) == {}
    assert cap(175.5) == {"power/cap_w": 175.5}


def test_a_stage_is_its_energy_so_far_under_its_own_key() -> None:
    assert stage("val", 0.125, 0.001) == {"energy/val_kwh": 0.125, "energy/val_kwh_err": 0.001}
    assert stage("predict", 0.0, 0.0) == {"energy/predict_kwh": 0.0, "energy/predict_kwh_err": 0.0}


def test_an_epoch_is_its_energy_in_kwh_with_its_bound() -> None:
    assert epoch(0.5 * J_PER_KWH, 0.01 * J_PER_KWH) == {"energy/epoch_kwh": 0.5, "energy/epoch_kwh_err": 0.01}


# ----------------------------------------------------------------------------- window
def test_a_full_window_gives_power_throughput_and_energy_per_unit_of_work() -> None:
    figures = WindowFigures(
        steps=4,
        seconds=2.5,
        joules=1000.0,
        gpu_j={"gpu0": 600.0, "gpu1": 150.0},
        samples=50,
        tokens=8000,
        joules_err=20.0,
    )
    assert window(figures) == {
        "power/total_w": 400.0,
        "power/gpu0_w": 240.0,
        "power/gpu1_w": 60.0,
        "throughput/samples_per_s": 20.0,
        "throughput/tokens_per_s": 3200.0,
        "energy/step_j": 250.0,
        "energy/step_j_err": 5.0,
        "efficiency/j_per_sample": 20.0,
        "efficiency/j_per_token": 0.125,
    }


def test_a_window_of_zero_seconds_leaves_out_power_and_throughput() -> None:
    figures = WindowFigures(steps=2, seconds=0.0, joules=30.0, gpu_j={"gpu0": 30.0}, samples=6, tokens=12)
    assert window(figures) == {
        "energy/step_j": 15.0,
        "energy/step_j_err": 0.0,
        "efficiency/j_per_sample": 5.0,
        "efficiency/j_per_token": 2.5,
    }


def test_a_window_of_zero_steps_leaves_out_energy_per_step() -> None:
    figures = WindowFigures(steps=0, seconds=2.0, joules=50.0, gpu_j={"gpu0": 50.0}, samples=10, tokens=0)
    assert window(figures) == {
        "power/total_w": 25.0,
        "power/gpu0_w": 25.0,
        "throughput/samples_per_s": 5.0,
        "efficiency/j_per_sample": 5.0,
    }


def test_a_window_without_samples_or_tokens_has_no_throughput_or_efficiency() -> None:
    figures = WindowFigures(steps=3, seconds=1.5, joules=90.0)
    assert window(figures) == {"power/total_w": 60.0, "energy/step_j": 30.0, "energy/step_j_err": 0.0}


def test_a_window_of_zero_seconds_and_zero_steps_without_work_is_empty() -> None:
    assert window(WindowFigures(steps=0, seconds=0.0, joules=0.0, gpu_j={"gpu0": 0.0})) == {}


@given(
    steps=st.integers(0, 3),
    seconds=st.sampled_from([0.0, 0.5, 7.25]),
    joules=st.floats(0.0, 1e6, allow_nan=False),
    gpu_j=st.lists(st.floats(0.0, 1e5), max_size=3),
    samples=st.integers(0, 3),
    tokens=st.integers(0, 3),
)
def test_every_window_figure_is_present_exactly_when_its_divisor_is_not_zero(
    steps: int, seconds: float, joules: float, gpu_j: list[float], samples: int, tokens: int
) -> None:
    per_gpu = {f"gpu{i}": j for i, j in enumerate(gpu_j)}
    metrics = window(WindowFigures(steps, seconds, joules, per_gpu, samples, tokens))
    expected: dict[str, float] = {}
    if seconds:
        expected[keys.TOTAL_W] = joules / seconds
        expected.update({f"power/{name}_w": j / seconds for name, j in per_gpu.items()})
        if samples:
            expected[keys.SAMPLES_PER_S] = samples / seconds
        if tokens:
            expected[keys.TOKENS_PER_S] = tokens / seconds
    if steps:
        expected[keys.STEP_J] = joules / steps
        expected[keys.err(keys.STEP_J)] = 0.0
    if samples:
        expected[keys.J_PER_SAMPLE] = joules / samples
    if tokens:
        expected[keys.J_PER_TOKEN] = joules / tokens
    assert metrics == pytest.approx(expected, rel=1e-12)
    assert all(math.isfinite(v) for v in metrics.values())
    assert set(metrics) <= {*keys.WINDOW_KEYS, *(f"power/{name}_w" for name in per_gpu)}
