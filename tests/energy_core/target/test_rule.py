"""TargetRule: its arguments checked once, when a value reaches the target, the gain per kWh."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_core import TargetRule

finite = st.floats(-1e6, 1e6, allow_nan=False)
energy = st.floats(0.0, 1e3, allow_nan=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metric": "", "target": 1.0}, ValueError, "metric must be the name of a logged metric, got ''"),
        ({"metric": 3, "target": 1.0}, TypeError, "metric must be the name of a logged metric, got int"),
        ({"metric": "acc", "target": math.inf}, ValueError, "target must be a finite number"),
        ({"metric": "acc", "target": True}, TypeError, "target must be a finite number"),
        ({"metric": "acc", "target": "0.9"}, TypeError, "target must be a finite number"),
        ({"metric": "acc", "target": 0.9, "mode": "maximize"}, ValueError, "mode must be one of 'max', 'min'"),
        ({"metric": "acc", "target": 0.9, "stop": 1}, TypeError, "stop must be True or False"),
        ({"metric": "acc", "target": 0.9, "min_gain_per_kwh": -1.0}, ValueError, "min_gain_per_kwh must be a finite"),
        ({"metric": "acc", "target": 0.9, "min_gain_per_kwh": math.nan}, ValueError, "min_gain_per_kwh"),
        ({"metric": "acc", "target": 0.9, "patience": 0}, ValueError, "patience must be an integer >= 1, got 0"),
        ({"metric": "acc", "target": 0.9, "patience": 2.0}, TypeError, "patience must be an integer >= 1"),
        ({"metric": "acc", "target": None}, ValueError, "needs a target value, a min_gain_per_kwh, or both"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_range(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        TargetRule(**kwargs)


@given(value=finite, target=finite)
def test_reached_is_at_or_beyond_the_target_in_the_modes_direction(value: float, target: float) -> None:
    assert TargetRule("m", target, mode="max").reached(value) == (value >= target)
    assert TargetRule("m", target, mode="min").reached(value) == (value <= target)
    assert not TargetRule("m", None, min_gain_per_kwh=1.0).reached(value)  # no target: never reached


@given(now=finite, then=finite, kwh=energy, spent=st.floats(1e-9, 1e3))
def test_the_gain_is_the_improvement_per_kwh_positive_when_better(now, then, kwh, spent) -> None:
    later = kwh + spent
    higher = TargetRule("acc", 1.0, mode="max").gain((now, later), (then, kwh))
    lower = TargetRule("loss", 0.0, mode="min").gain((now, later), (then, kwh))
    assert higher == pytest.approx((now - then) / (later - kwh), rel=1e-12, abs=1e-12)
    assert lower == pytest.approx(-higher, rel=1e-9, abs=1e-9)


@given(value=finite, kwh=energy, back=st.floats(0.0, 1e3))
def test_no_energy_between_two_evaluations_gives_no_gain_rather_than_an_infinite_one(value, kwh, back) -> None:
    assert TargetRule("acc", 1.0).gain((value, kwh), (value - 1.0, kwh + back)) is None


def test_too_small_only_with_a_limit() -> None:
    assert TargetRule("acc", 0.9, min_gain_per_kwh=10.0).too_small(9.99)
    assert not TargetRule("acc", 0.9, min_gain_per_kwh=10.0).too_small(10.0)
    assert not TargetRule("acc", 0.9).too_small(-1e9)
    assert TargetRule("loss", 0.2, mode="min").describe() == "loss <= 0.2"
