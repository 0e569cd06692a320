"""Paths to the data files that the ``codecarbon`` package ships.

We use codecarbon's bundled tables (grid carbon intensity by country, sub-national
regions, cloud regions; CPU TDPs) rather than retyping them. Only the files are used,
never codecarbon's internal classes, and the package is located without importing it
(importing codecarbon is slow and configures logging). The tested range is pinned in
``pyproject.toml``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from functools import cache
from pathlib import Path
from typing import Any


@cache
def data_dir() -> Path:
    """The ``codecarbon/data`` directory of the installed codecarbon."""
    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("codecarbon is required for carbon and CPU data: pip install codecarbon")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@cache
def load_json(relative: str) -> Any:
    """Parse a JSON file under ``codecarbon/data``."""
    with open(data_dir() / relative, encoding="utf-8") as handle:
        return json.load(handle)


@cache
def load_csv(relative: str) -> list[dict[str, str]]:
    """Rows of a CSV file under ``codecarbon/data`` (BOM tolerated)."""
    with open(data_dir() / relative, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))
