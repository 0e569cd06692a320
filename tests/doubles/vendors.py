"""Both GPU vendors' simulations behind one name, so a behaviour test runs for NVIDIA and AMD alike.

``@both_vendors`` on a test that takes the ``sim_gpus`` fixture runs it once with the
simulated NVML and once with the simulated amdsmi; the boards (`SimGpu`) and what the
test reads back (``sim.limit_mw``, ``sim.exact_joules``) are the same for both. Scripts
that tests launch take the vendor's name and call `simulate_for_process`.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.doubles import sim_amdsmi, sim_nvml
from tests.doubles.sim_gpu import SimDriver, SimGpu

VENDORS = ("nvml", "amdsmi")
both_vendors = pytest.mark.parametrize("sim_gpus", VENDORS, indirect=True)
# End-to-end runs (a real Trainer, a child process) of both vendors: AMD's in the slow run. The
# vendor layer itself runs for both in the default run (tests/energy_core/devices, `both_vendors`).
both_vendors_end_to_end = pytest.mark.parametrize(
    "sim_gpus", ["nvml", pytest.param("amdsmi", marks=pytest.mark.slow)], indirect=True
)
SIMULATIONS: dict[str, type[SimDriver]] = {"nvml": sim_nvml.SimNvml, "amdsmi": sim_amdsmi.SimAmdSmi}
# what the one message about missing permission must name: the library's refusal and the tool to ask for
PERMISSION_WORDS = {"nvml": ("CAP_SYS_ADMIN", "nvidia-smi"), "amdsmi": ("AMDSMI_STATUS_NO_PERM", "amd-smi")}


def simulate(monkeypatch: pytest.MonkeyPatch, vendor: str, gpus: list[SimGpu], **kwargs: Any) -> SimDriver:
    """Install one vendor's simulation with these boards for one test (the other vendor has none)."""
    sim = SIMULATIONS[vendor](gpus, **kwargs)
    if vendor == "nvml":
        sim_nvml.install(monkeypatch, sim)  # type: ignore[arg-type]
    else:
        sim_amdsmi.install(monkeypatch, sim)  # type: ignore[arg-type]
    return sim


def simulate_for_process(vendor: str, gpus: list[SimGpu], **kwargs: Any) -> SimDriver:
    """The same for a whole child process: the NVML of a machine without the other vendor."""
    sim = SIMULATIONS[vendor](gpus, **kwargs)
    if vendor == "nvml":
        sim_nvml.install_for_process(sim)  # type: ignore[arg-type]
    else:
        sim_nvml.install_for_process(sim_nvml.SimNvml([], library=False))
        sim_amdsmi.install_for_process(sim)  # type: ignore[arg-type]
    return sim
