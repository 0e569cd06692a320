"""The ``energy-report`` command: tables, plots and an HTML page from run records."""

from energy_core.report.cli import main

__all__ = ["main"]
