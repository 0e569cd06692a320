"""Every monitor against every file-based logger, read back from disk (CSV, TensorBoard, MLflow).

W&B is in test_wandb.py (offline run files); the HF TensorBoard and MLflow integrations are
also in test_hf_callback.py.
"""

from __future__ import annotations

import pytest

from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.readback import csv_series, tensorboard_series
from tests.helpers.records import read_record

KEYS = ("energy/total_kwh", "power/gpu0_w", "energy/step_j", "carbon/co2e_kg")


def mlflow_values(uri: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return sorted((m.step, m.value) for r in runs for m in client.get_metric_history(r.info.run_id, key))


@pytest.fixture
def mlflow_store(monkeypatch, tmp_path):
    import mlflow

    # As docs/guides/loggers.md sets MLflow up: a local SQLite file, no server, no file store
    # (MLflow 3 refuses that one unless MLFLOW_ALLOW_FILE_STORE is set, which this test never does).
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "energy")
    mlflow.set_tracking_uri(uri)  # mlflow's fluent state outlives a test
    mlflow.set_experiment("energy")
    yield uri
    mlflow.end_run()


@pytest.mark.parametrize(
    ("framework", "logger_kind"),
    [
        *((framework, kind) for framework in ("lightning", "hf") for kind in ("csv", "tensorboard")),
        # MLflow, every window's figures read back from disk, runs by default in
        # tests/hf_energy/test_callback.py (making its store takes seconds): here in the slow run
        pytest.param("hf", "mlflow", marks=pytest.mark.slow),
        pytest.param("lightning", "mlflow", marks=pytest.mark.slow),
    ],
)
def test_monitor_x_logger(framework, logger_kind, tmp_path, sim_gpus, request) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(250.0), counter_period_s=0.02))
    # an MLflow store only where MLflow logs (making its database takes a second or two)
    mlflow_store = request.getfixturevalue("mlflow_store") if logger_kind == "mlflow" else ""
    record = tmp_path / "energy.jsonl"
    if framework == "lightning":
        import lightning.pytorch as pl

        from lightning_energy import EnergyMonitor
        from tests.helpers.lightning_models import make_module, regression_data

        logger = {
            "csv": lambda: pl.loggers.CSVLogger(tmp_path / "logs"),
            "tensorboard": lambda: pl.loggers.TensorBoardLogger(tmp_path / "logs"),
            "mlflow": lambda: pl.loggers.MLFlowLogger(experiment_name="energy", tracking_uri=mlflow_store),
        }[logger_kind]()
        trainer = pl.Trainer(
            max_epochs=1,
            accelerator="cpu",
            log_every_n_steps=5,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[EnergyMonitor(devices=["gpu"], record_path=record)],
        )
        trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(160))
        prefix = ""
    else:
        if logger_kind == "csv":
            pytest.skip("the HF Trainer has no CSV integration")
        from hf_energy import EnergyCallback, attach
        from tests.helpers.hf_models import SeqData, make_trainer

        trainer = make_trainer(
            tmp_path / "logs", SeqData(80), sleep_s=0.01, num_train_epochs=1, logging_steps=5, report_to=[logger_kind]
        )
        attach(trainer, EnergyCallback(devices=["gpu"], record_path=record, summary=False))
        trainer.train()
        prefix = "train/" if logger_kind == "tensorboard" else ""

    windows = [x for x in read_record(record) if x["type"] == "window"]
    assert windows
    for key in KEYS:
        if logger_kind == "csv":
            on_disk = csv_series(tmp_path / "logs", key)
        elif logger_kind == "tensorboard":
            on_disk = tensorboard_series(tmp_path / "logs", prefix + key)
        else:
            on_disk = mlflow_values(mlflow_store, key)
        for window in windows:
            expected = window["metrics"][key]
            found = [v for step, v in on_disk if step == window["step"]]
            assert any(v == pytest.approx(expected, rel=1e-6) for v in found), (key, window["step"], on_disk, expected)
