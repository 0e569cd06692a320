"""Figures as a person reads them (`energy_core.output.units_text`): the unit that fits, one rounding.

Property-based: over every size a run can have, a figure reads back within its rounding, never
with an exponent, in the largest unit that shows it as at least 1, and a larger figure never
reads smaller (so a total told first never reads above the same total told later).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from energy_core.output import units_text as show
from energy_core.units import J_PER_KWH, MAX_JOULES

LADDERS = {"energy": show.ENERGY, "mass": show.MASS, "power": show.POWER}


def read_back(text: str, ladder: show.Ladder) -> float:
    number, unit = text.split(" ")
    return float(number.replace(",", "")) * dict(ladder)[unit]


sizes = st.floats(min_value=1e-9, max_value=MAX_JOULES, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("name", LADDERS)
@given(value=sizes)
def test_a_figure_reads_back_within_its_rounding_in_the_unit_that_fits(name, value) -> None:
    ladder = LADDERS[name]
    text = show.scaled(value, ladder)
    assert "e" not in text.split(" ")[0] and "E" not in text  # never an exponent
    assert read_back(text, ladder) == pytest.approx(value, rel=0.0051)  # 3 significant digits, or a whole number
    unit = dict(ladder)[text.split(" ")[1]]
    shown = float(text.split(" ")[0].replace(",", ""))
    larger = [size for _, size in ladder if size > unit]
    assert shown >= 1 or unit == ladder[0][1]  # not "0.5 Wh" where "1,800 J" is meant
    assert all(float(show.rounded(value / size).replace(",", "")) < 1 for size in larger)  # the largest that fits


@pytest.mark.parametrize("name", LADDERS)
@given(a=sizes, b=sizes)
def test_a_larger_figure_never_reads_smaller(name, a, b) -> None:
    ladder = LADDERS[name]
    low, high = sorted((a, b))
    assert read_back(show.scaled(low, ladder), ladder) <= read_back(show.scaled(high, ladder), ladder)


def test_figures_a_newcomer_sees() -> None:
    assert show.energy_kwh(2.19221e-05) == "78.9 J"  # was "kWh │ 2.19221e-05"
    assert show.energy(3599.0) == "1 Wh" and show.energy(3580.0) == "3,580 J"
    assert show.energy(0.0) == "0 J" and show.mass(0.0) == "0 kg" and show.power(0.0) == "0 W"
    assert show.energy(1.287e6 * 1000 * J_PER_KWH) == "1,287,000 MWh"  # GPT-3: 1,287 MWh
    assert show.mass(552e3) == "552 t" and show.mass(1.296e-6) == "1.3 mg"
    assert show.power(-12.345) == "-12.3 W"  # a remaining budget can go below zero
    assert show.energy(math.nan) == "-" and show.duration(math.inf) == "-"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0.04 s"),
        (34.62, "34.6 s"),
        (59.96, "1 min 00 s"),
        (725.0, "12 min 05 s"),
        (12_000.0, "3 h 20 min"),
        (2 * 86400 + 4 * 3600 + 60, "2 d 04 h"),
    ],  # fmt: skip
)
def test_durations(seconds, text) -> None:
    assert show.duration(seconds) == text
