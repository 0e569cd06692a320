"""The argument lists: written once (MeasureArgs, BudgetArgs, CapArgs, TargetArgs), forwarded by every class."""

from __future__ import annotations

import inspect

import pytest

from energy_core import EnergyTracker, MeasureArgs, MeasureOptions
from energy_core.budget.run import BudgetArgs
from energy_core.power import CapArgs, PowerCapRun
from energy_core.target.rule import TargetRule
from energy_core.target.run import TargetArgs
from hf_energy import EnergyBudgetCallback, EnergyCallback, EnergyToTargetCallback, PowerCapCallback
from lightning_energy import EnergyBudget, EnergyMonitor, EnergyToTarget, PowerCap


def test_argument_lists_are_written_once_and_forwarded() -> None:
    names = set(MeasureOptions.names())
    assert set(MeasureArgs.__annotations__) == names
    assert set(BudgetArgs.__annotations__) == names | {"max_kwh", "max_co2e_kg", "max_cost", "forecast"}
    assert set(CapArgs.__annotations__) == set(inspect.signature(PowerCapRun).parameters)
    assert set(TargetArgs.__annotations__) == names | set(inspect.signature(TargetRule).parameters) - {
        "metric",
        "target",
    }
    forwarded = {
        EnergyTracker: "measure",
        EnergyMonitor: "measure",
        EnergyCallback: "measure",
        EnergyBudget: "budget",
        EnergyBudgetCallback: "budget",
        PowerCap: "cap",
        PowerCapCallback: "cap",
        EnergyToTarget: "args",
        EnergyToTargetCallback: "args",
    }
    for cls, name in forwarded.items():
        assert inspect.signature(cls).parameters[name].kind is inspect.Parameter.VAR_KEYWORD
    assert MeasureOptions(devices=["gpu"], pue=1.5).as_args() == {
        **MeasureOptions().as_args(),
        "devices": ["gpu"],
        "pue": 1.5,
    }
    with pytest.raises(TypeError, match=r"EnergyMonitor got unexpected keyword arguments \['countr'\]"):
        EnergyMonitor(countr="FRA")


def test_a_series_file_is_parsed_once_per_construction_and_each_run_gets_its_own_copy(tmp_path, monkeypatch) -> None:
    # A 1e6-row series was parsed three times to build an EnergyLoop (12 s, ~500 MB): the options parse it
    # when they validate it, and every tracker charges with a fresh copy of those rows.
    from energy_core import EnergyLoop
    from energy_core.carbon import factor

    intensity, price = tmp_path / "intensity.csv", tmp_path / "price.csv"
    intensity.write_text("datetime,g_per_kwh\n2026-01-01T00:00:00+00:00,100\n2026-01-01T01:00:00+00:00,300\n")
    price.write_text("datetime,eur_per_kwh\n2026-01-01T00:00:00+00:00,0.2\n")
    parsed: list[str] = []
    parse = factor.parse_series
    monkeypatch.setattr(factor, "parse_series", lambda path, *a: parsed.append(str(path)) or parse(path, *a))

    loop = EnergyLoop(devices=["cpu"], carbon_intensity_series=intensity, price_per_kwh=str(price))
    assert sorted(parsed) == sorted([str(intensity), str(price)])
    parsed.clear()
    EnergyCallback(devices=["cpu"], carbon_intensity_series=intensity)
    EnergyMonitor(devices=["cpu"], carbon_intensity_series=intensity)
    assert parsed == [str(intensity)] * 2

    # A copy per run: the same rows, its own history of values used.
    options = loop.tracker.options
    first, second = options.carbon_factor(), options.carbon_factor()
    assert first is not second and first.times is second.times and first.values is second.values
    assert first.at(first.times[1] + 1).value == 300.0
    assert [v.value for v in first.history] == [300.0] and second.history == []
