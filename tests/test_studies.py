"""The research studies run (shortened) and their comparison reports are consistent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "studies"))


def test_where_and_when(tmp_path) -> None:
    import where_and_when

    result = where_and_when.main(["--epochs", "1", "--out", str(tmp_path)])
    assert result["gpt3_tco2e"] == pytest.approx(552, abs=1)  # 1,287 MWh x 0.429 kg/kWh
    assert result["kwh"] > 0
    rows = result["rows"]
    assert len(rows) == len(where_and_when.GRIDS) + len(where_and_when.CLOUDS)
    # the same energy costs 5-10x or more in CO2e between grids (Patterson et al.: 5-10x)
    assert result["spread_dirtiest_over_cleanest"] >= 5
    for row in rows:  # CO2e = kWh x PUE x intensity, for every place and PUE
        for pue in (1.1, 1.58):
            assert row[f"g_co2e_pue_{pue}"] == pytest.approx(result["kwh"] * pue * row["g_per_kwh"])
    assert json.loads((tmp_path / "report.json").read_text())["kwh"] == result["kwh"]
    assert "Patterson" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "energy-report" / "report.html").exists()
