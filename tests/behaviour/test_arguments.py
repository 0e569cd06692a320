"""Bad arguments raise ValueError at construction, naming the argument and the range."""

from __future__ import annotations

import pytest

from energy_core import EnergyTracker
from hf_energy import EnergyCallback
from lightning_energy import EnergyMonitor


@pytest.mark.parametrize("cls", [EnergyTracker, EnergyMonitor, EnergyCallback])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": ["gpu", "tpu"]}, r"devices must be 'auto' or a non-empty list drawn from 'gpu', 'cpu', 'dram'"),
        ({"devices": []}, "devices"),
        ({"devices": "everything"}, "devices"),
        ({"sample_interval_s": 0}, r"sample_interval_s must be in \[0.001, 60\]"),
        ({"sample_interval_s": -0.1}, "sample_interval_s"),
        ({"sample_interval_s": float("nan")}, "sample_interval_s"),
        ({"pue": -1.0}, r"pue must be in \[1, 10\]"),
        ({"pue": float("inf")}, "pue"),
        ({"pue": 0.5}, "pue"),
        ({"carbon_intensity_g_per_kwh": -5}, "carbon_intensity_g_per_kwh"),
        ({"country": "Narnia"}, "country"),
        ({"country": "USA", "region": "nowhere"}, "region"),
    ],
)
def test_invalid_arguments(cls, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_monitor_specific_arguments(tmp_path) -> None:
    with pytest.raises(ValueError, match="log_every_n_steps must be an integer >= 1"):
        EnergyMonitor(log_every_n_steps=0)
    with pytest.raises(ValueError, match="record_path must be a file"):
        EnergyMonitor(record_path=tmp_path)
    with pytest.raises(ValueError, match="record_path must be a file"):
        EnergyCallback(record_path=tmp_path)


def test_valid_arguments_are_accepted() -> None:
    monitor = EnergyMonitor(devices=["cpu", "gpu"], sample_interval_s=0.5, country="DEU", pue=1.58)
    assert monitor.tracker.meter.kinds == ("cpu", "gpu")
    assert monitor.tracker.carbon_fields()["g_per_kwh"] > 0
