"""W&B in offline mode, for both frameworks: exact metric definitions, values, summary and config."""

from __future__ import annotations

import pytest

from energy_core.output import units_text as show
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.records import read_record

wandb = pytest.importorskip("wandb")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    yield tmp_path
    wandb.finish()
    wandb.teardown()  # the next test gets fresh settings (its own WANDB_DIR)


def test_lightning_wandb_logger(offline, sim_gpus) -> None:
    from lightning.pytorch.loggers import WandbLogger

    from lightning_energy import EnergyMonitor
    from tests.helpers.lightning_models import flavour, make_module, regression_data
    from tests.helpers.wandb_file import read_run

    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    monitor = EnergyMonitor(
        devices=["gpu"], sample_interval_s=0.02, country="SWE", region="SE3", record_path=offline / "energy.jsonl"
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        log_every_n_steps=5,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        logger=WandbLogger(project="energy", save_dir=str(offline)),
        callbacks=[monitor],
    )
    trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(160))
    wandb.finish()

    run = read_run(offline)
    figures = ("energy/total_kwh", "energy/gpu_kwh", "power/gpu0_w", "energy/step_j", "carbon/co2e_kg")
    bounds = ("energy/total_kwh_err", "energy/gpu_kwh_err", "energy/step_j_err", "carbon/co2e_kg_err")
    for key in (*figures, *bounds):  # a bound on the same axis as its figure: one panel plots both
        assert key in run["metrics"], sorted(run["metrics"])
        assert run["metrics"][key].step_metric == "trainer/global_step"  # defined by exact name
        assert not run["metrics"][key].glob_name
    windows = {w["step"]: w["metrics"] for w in read_record(offline / "energy.jsonl") if w["type"] == "window"}
    rows = {row["trainer/global_step"]: row for row in run["history"] if "power/total_w" in row}
    assert set(windows) <= set(rows)
    for step, metrics in windows.items():
        assert rows[step]["energy/total_kwh"] == pytest.approx(metrics["energy/total_kwh"])
        assert rows[step]["power/gpu0_w"] == pytest.approx(metrics["power/gpu0_w"])
        assert 0 < rows[step]["energy/step_j_err"] == pytest.approx(metrics["energy/step_j_err"])
    final = read_record(offline / "energy.jsonl")[-1]["metrics"]
    assert run["summary"]["energy/total_kwh"] == pytest.approx(final["energy/total_kwh"])
    # and as a person reads them (W&B's console rounds 2e-05 kWh to 0.0): the GPU's energy is read, not estimated
    assert run["summary"]["energy/total"] == show.energy_kwh(final["energy/total_kwh"])
    assert run["summary"]["carbon/co2e"] == show.mass(final["carbon/co2e_kg"])
    assert run["summary"]["energy/total"].endswith(" J") and "e-0" not in run["summary"]["carbon/co2e"]
    assert 0 < run["summary"]["energy/total_kwh_err"] == pytest.approx(final["energy/total_kwh_err"])
    # one summary rule: every key's last value, a plain number (not {'mean': ...} or {'last': ...})
    last_window = windows[max(windows)]
    assert run["summary"]["power/gpu0_w"] == pytest.approx(rows[max(windows)]["power/gpu0_w"])
    assert isinstance(run["summary"]["energy/step_j"], float) and isinstance(run["summary"]["carbon/co2e_kg"], float)
    assert last_window["power/gpu0_w"] > 0
    assert run["config"]["energy/carbon_g_per_kwh"] == pytest.approx(27.0)
    assert "nordic" in run["config"]["energy/carbon_source"]


def test_hf_report_to_wandb(offline, sim_gpus) -> None:
    from hf_energy import EnergyCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer
    from tests.helpers.wandb_file import read_run

    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    trainer = make_trainer(offline / "out", SeqData(64), sleep_s=0.01, report_to=["wandb"], logging_steps=2)
    energy = attach(trainer, EnergyCallback(devices=["gpu"], country="FRA", record_path=offline / "energy.jsonl"))
    trainer.train()
    wandb.finish()

    run = read_run(offline)
    for key in ("train/energy/total_kwh", "train/power/gpu0_w", "train/efficiency/j_per_token"):
        assert key in run["metrics"], sorted(run["metrics"])
        assert run["metrics"][key].step_metric == "train/global_step"
    windows = {w["step"]: w["metrics"] for w in read_record(offline / "energy.jsonl") if w["type"] == "window"}
    rows = {row["train/global_step"]: row for row in run["history"] if "train/energy/step_j" in row}
    for step, metrics in windows.items():
        assert rows[step]["train/energy/gpu_kwh"] == pytest.approx(metrics["energy/gpu_kwh"])
        assert rows[step]["train/efficiency/j_per_token"] == pytest.approx(metrics["efficiency/j_per_token"])
    assert run["summary"]["train/energy/total_kwh"] == pytest.approx(energy.last_metrics["energy/total_kwh"])
    assert run["summary"]["train/energy/total"] == show.energy_kwh(energy.last_metrics["energy/total_kwh"])
    assert run["config"]["energy/pue"] == 1.0 and "France" in run["config"]["energy/carbon_source"]


def test_the_config_names_the_factor_the_run_is_charged_at(offline, sim_gpus) -> None:
    """With a series, W&B's config gives the series' value in force at the start and names the
    series, not the location's figure (France's 56 g/kWh here), which the run is not charged at."""
    from datetime import datetime, timedelta, timezone

    from energy_core.integration import EnergyTracker, MonitorRun, Ranks
    from tests.helpers.wandb_file import read_run

    hour, now = timedelta(hours=1), datetime.now(timezone.utc)
    series = offline / "grid.csv"
    series.write_text(f"datetime,g_per_kwh\n{(now - hour).isoformat()},123\n{(now + hour).isoformat()},456\n")
    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, country="FRA", carbon_intensity_series=series)
    monitor = MonitorRun(tracker, show=lambda notices: None)
    run = wandb.init(project="energy", dir=str(offline))
    monitor.start(Ranks(), 0, resumed=False, wandb_runs=[run], step_metric="step", framework="test")
    monitor.finish(0, wandb_runs=[run])
    monitor.close()
    wandb.finish()

    config = read_run(offline)["config"]
    assert config["energy/carbon_g_per_kwh"] == pytest.approx(123.0)
    assert "grid.csv" in config["energy/carbon_source"] and config["energy/carbon_factor"] == "series"
