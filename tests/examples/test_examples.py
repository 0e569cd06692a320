"""The README's main example runs and reports non-zero energy and CO2e with their source."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from energy_core.output import units_text as show
from tests.helpers import ROOT

# Smoke runs of what ships beside the package: in the slow run (`python -m pytest -m slow`, .ci/run).
pytestmark = pytest.mark.slow


def test_quickstart_example(tmp_path) -> None:
    env = {**os.environ, "QUICKSTART_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "examples/lightning_quickstart.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout + done.stderr  # the summary comes through Lightning's logger
    summary = json.loads((tmp_path / "energy.jsonl").read_text().splitlines()[-1])
    assert summary["type"] == "summary"
    m = summary["metrics"]
    assert m["energy/total_kwh"] > 0 and m["carbon/co2e_kg"] > 0
    # the summary, in the units that fit, and what is estimated and not counted
    estimated = " (estimated)" if summary["estimated"] else ""
    bound = show.share(m["energy/total_kwh"], m["energy/total_kwh_err"])  # how exact the total is
    assert bound and f"Energy: {show.energy_kwh(m['energy/total_kwh'])}{estimated} {bound} over " in out
    assert f"CO2e: {show.mass(m['carbon/co2e_kg'])} at " in out and "France (FRA" in out
    assert f"{show.energy(summary['j_per_sample'])}/sample" in out
    # then the same totals in the loggers' units, and the estimated sources as words, not a Python list
    assert "The run's totals at its end" in out
    assert f"  energy/total_kwh             {m['energy/total_kwh']:.4g}\n" in out
    assert f"  carbon/co2e_kg               {m['carbon/co2e_kg']:.4g}\n" in out
    assert "energy/epoch_kwh" not in out and "['" not in out
    assert f"  estimated: {', '.join(summary['estimated']) or 'nothing'}; run record: " in out
    assert (tmp_path / "csv").is_dir() and any((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_hf_example(tmp_path) -> None:
    env = {**os.environ, "HF_EXAMPLE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "examples/hf_finetune.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "energy.jsonl").read_text().splitlines()]
    assert lines[-1]["type"] == "summary" and lines[-1]["tokens"] > 0
    metrics = lines[-1]["metrics"]  # the figures printed are the summary's, for the whole run
    assert f"Energy: {show.energy_kwh(metrics['energy/total_kwh'])}" in done.stdout
    assert f"{show.energy(lines[-1]['j_per_token'])}/token" in done.stdout
    assert f"  energy/total_kwh             {metrics['energy/total_kwh']:.4g}\n" in done.stdout
    assert f"  carbon/co2e_kg               {metrics['carbon/co2e_kg']:.4g}\n" in done.stdout
    assert lines[-1]["metrics"]["carbon/co2e_kg"] > 0
    assert any(tmp_path.rglob("events.out.tfevents.*"))  # report_to=["tensorboard"]


def test_lightning_cli_yaml_config(tmp_path) -> None:
    config = (ROOT / "examples" / "lightning_cli.yaml").read_text().replace("runs/cli", str(tmp_path))
    (tmp_path / "config.yaml").write_text(config)
    done = subprocess.run(
        [sys.executable, "examples/lightning_cli.py", "fit", "--config", str(tmp_path / "config.yaml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in (tmp_path / "energy.jsonl").read_text().splitlines()]
    assert lines[0]["carbon"]["pue"] == 1.2 and "Germany" in lines[0]["carbon"]["source"]
    assert lines[-1]["type"] == "summary" and lines[-1]["metrics"]["energy/total_kwh"] > 0
    assert any(x["type"] == "window" and "budget/remaining_kwh" not in x["metrics"] for x in lines)
    assert any(tmp_path.rglob("metrics.csv"))
