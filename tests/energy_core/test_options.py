"""The argument lists: written once (MeasureArgs, BudgetArgs, CapArgs, TargetArgs), forwarded by every class."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from energy_core import EnergyTracker, MeasureArgs, MeasureOptions
from energy_core.budget.run import BudgetArgs
from energy_core.power import CapArgs, PowerCapRun
from energy_core.target.rule import TargetRule
from energy_core.target.run import TargetArgs
from hf_energy import EnergyBudgetCallback, EnergyCallback, EnergyToTargetCallback, PowerCapCallback
from lightning_energy import EnergyBudget, EnergyMonitor, EnergyToTarget, PowerCap


def test_argument_lists_are_written_once_and_forwarded() -> None:
    names = {f.name for f in fields(MeasureOptions)}
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
