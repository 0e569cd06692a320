"""The run record's header: what ran, where, on which devices, with which carbon factor."""

from __future__ import annotations

import importlib.metadata
import platform
import socket
import sys
from collections.abc import Sequence
from typing import Any

from energy_core import devices
from energy_core.devices.cpu_estimate import cpu_model
from energy_core.notices import Notice
from energy_core.output.record import RECORD_VERSION
from energy_core.output.summary import not_counted
from energy_core.sampling.meter import EnergyMeter

_VERSIONED = (
    "energy-callbacks",
    "torch",
    "lightning",
    "pytorch-lightning",
    "transformers",
    "nvidia-ml-py",
    "amdsmi",
    "codecarbon",
)


def software_versions() -> dict[str, str]:
    """Installed versions of the packages that matter for a run (absent ones omitted)."""
    found = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def this_process(meter: EnergyMeter) -> dict[str, Any]:
    """This process's host and the sources it measures (what a job's header lists per rank)."""
    return {"host": socket.gethostname(), "sources": [vars(s.info) for s in meter.sources]}


def run_header(
    meter: EnergyMeter,
    carbon: dict[str, Any],
    notices: Sequence[Notice],
    ranks: list[Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """The header fields: machine, software, devices measured, carbon factor, then ``fields``.

    Args:
        meter: The opened meter (its sources are listed).
        carbon: The carbon factor, its source and the PUE.
        notices: What the user was told at start.
        ranks: In a multi-process job, every rank's `this_process` with its ``rank``.
        fields: Run-specific fields (caps, the checkpoint resumed from, the trainer's settings).
    """
    model, sockets = cpu_model()
    has_gpu = any(s.info.kind == "gpu" for s in meter.sources)
    here = this_process(meter)
    host, sources = here["host"], here["sources"]
    header = {
        "version": RECORD_VERSION,
        "host": host,
        "platform": platform.platform(),
        "argv": sys.argv,
        "software": software_versions(),
        "hardware": {
            "cpu": model,
            "cpu_sockets": sockets,
            "drivers": devices.drivers() if has_gpu else {},
            "sources": sources,
        },
        "estimated": meter.estimated,
        "not_counted": not_counted(meter),
        "sample_interval_s": meter.sample_interval_s,
        "carbon": carbon,
        "notices": [vars(n) for n in notices],
        **fields,
    }
    if ranks is not None:
        header["ranks"] = ranks
    return header
