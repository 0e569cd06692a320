"""EnergyCallback in the real HF Trainer: log_history, TensorBoard and MLflow read back from disk."""

from __future__ import annotations

import json
import threading

import pytest

from energy_core import J_PER_KWH
from hf_energy import EnergyCallback, attach
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import both_vendors_end_to_end
from tests.helpers.hf_models import SeqData, fail_from_batch, make_trainer
from tests.helpers.readback import tensorboard_series
from tests.helpers.records import read_record

GPU_W = 300.0


@pytest.fixture
def mlflow_store(monkeypatch, tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # as docs/guides/loggers.md: a local SQLite file, no server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "energy")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    mlflow.set_tracking_uri(uri)  # mlflow's fluent state outlives a test
    mlflow.set_experiment("energy")
    yield uri
    mlflow.end_run()  # close HF's run while the store is still configured


def mlflow_series(uri: str, *keys: str) -> dict[str, list[tuple[int, float]]]:
    """Each key's (step, value) pairs in the store's "energy" experiment (one client: each costs a second)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "energy"]
    runs = client.search_runs([experiment.experiment_id])
    return {
        key: sorted((m.step, m.value) for run in runs for m in client.get_metric_history(run.info.run_id, key))
        for key in keys
    }


@both_vendors_end_to_end
def test_metrics_reach_log_history_tensorboard_and_mlflow(tmp_path, sim_gpus, mlflow_store) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    data = SeqData(96)
    trainer = make_trainer(
        tmp_path / "out",
        data,
        sleep_s=0.05,
        eval_data=SeqData(16),
        eval_strategy="epoch",
        report_to=["tensorboard", "mlflow"],
    )
    energy = attach(
        trainer,
        EnergyCallback(devices=["gpu"], sample_interval_s=0.05, country="FRA", record_path=tmp_path / "energy.jsonl"),
    )
    trainer.train()
    trainer.predict(SeqData(16))

    history = trainer.state.log_history
    train_logs = [h for h in history if "loss" in h]
    assert [h["step"] for h in train_logs] == [4, 8, 12, 16, 20, 24]
    lines = read_record(tmp_path / "energy.jsonl")
    windows = {w["step"]: w for w in lines if w["type"] == "window"}
    for entry in train_logs:  # every logged step carries the window's figures, as recorded
        window = windows[entry["step"]]
        for key in ("energy/step_j", "power/gpu0_w", "energy/gpu_kwh", "throughput/tokens_per_s"):
            assert entry[key] == pytest.approx(window["metrics"][key])
        # a window's error is bounded by the counter's 20 ms update period at each end
        bound = GPU_W * (2 * 0.02 / window["seconds"] + 0.01)
        assert abs(entry["power/gpu0_w"] - GPU_W) <= bound
    last = windows[24]
    # the run's total is the known integral, within one 20 ms counter update at each end
    assert abs(last["metrics"]["energy/gpu_kwh"] * J_PER_KWH - GPU_W * last["elapsed_s"]) <= GPU_W * 2 * 0.02
    assert last["metrics"]["carbon/co2e_kg"] == pytest.approx(last["metrics"]["energy/total_kwh"] * 56.039 / 1000)

    # tokens and samples are counted per micro-batch, padding excluded
    assert sum(w["tokens"] for w in windows.values()) == 2 * data.tokens()
    assert sum(w["samples"] for w in windows.values()) == 2 * 96

    # epoch ends (steps 12 and 24, also logging steps) get their own log line with energy/epoch_kwh
    epochs = [h for h in history if "energy/epoch_kwh" in h]
    assert [h["step"] for h in epochs] == [12, 24]
    evals = [h for h in history if "eval_loss" in h]
    assert len(evals) == 2 and all(h["energy/val_kwh"] > 0 for h in evals)
    assert evals[1]["energy/val_kwh"] > evals[0]["energy/val_kwh"]  # cumulative
    predicts = [h for h in history if "energy/predict_kwh" in h]
    (predict,) = [s for s in lines if s["type"] == "stage" and s["stage"] == "predict"]  # a run of its own
    assert len(predicts) == 1 and predicts[0]["energy/predict_kwh"] == predict["kwh"]
    # a counter that moves every 20 ms: its two readings may be off by one update each
    assert abs(predict["kwh"] * J_PER_KWH - GPU_W * predict["seconds"]) <= GPU_W * 2 * 0.02

    # The same values on disk: TensorBoard (HF prefixes train/) and the MLflow store.
    tb_24 = [v for step, v in tensorboard_series(tmp_path / "out", "train/energy/gpu_kwh") if step == 24]
    assert last["metrics"]["energy/gpu_kwh"] == pytest.approx(tb_24[0], rel=1e-6)  # float32 in event files
    assert dict(tensorboard_series(tmp_path / "out", "train/efficiency/j_per_token"))[8] == pytest.approx(
        windows[8]["metrics"]["efficiency/j_per_token"], rel=1e-6
    )
    # MLflow keeps every value logged at a step (window, epoch, eval and end-of-train lines at step 24)
    every = ("energy/total_kwh", "power/gpu0_w", "energy/step_j", "carbon/co2e_kg")
    logged = mlflow_series(mlflow_store, "energy/gpu_kwh", "energy/val_kwh", *every)
    at_24 = [v for step, v in logged["energy/gpu_kwh"] if step == 24]
    assert last["metrics"]["energy/gpu_kwh"] in at_24
    for key in every:  # every window's figures, as recorded
        for step, window in windows.items():
            assert any(at == step and v == pytest.approx(window["metrics"][key]) for at, v in logged[key]), (key, step)
    assert [v for step, v in logged["energy/val_kwh"]] == [h["energy/val_kwh"] for h in evals]
    assert energy.last_metrics["energy/predict_kwh"] == predicts[0]["energy/predict_kwh"]
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


def test_gradient_accumulation_counts_optimizer_steps(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    data = SeqData(96)
    # 10 ms a batch against a 5 ms sampler: every window outlasts the sampler's second reading
    trainer = make_trainer(tmp_path / "out", data, sleep_s=0.01, gradient_accumulation_steps=2, logging_steps=3)
    callback = EnergyCallback(
        devices=["gpu"], record_path=tmp_path / "energy.jsonl", summary=False, sample_interval_s=0.005
    )
    attach(trainer, callback)
    trainer.train()
    windows = [w for w in read_record(tmp_path / "energy.jsonl") if w["type"] == "window"]
    assert [(w["step"], w["steps"], w["samples"]) for w in windows] == [(s, 3, 48) for s in (3, 6, 9, 12)]
    assert sum(w["tokens"] for w in windows) == 2 * data.tokens()


@pytest.mark.parametrize("restore_flag", [False, pytest.param(True, marks=pytest.mark.slow)])  # True: 2 s more
def test_resume_from_checkpoint_continues_the_totals(tmp_path, sim_gpus, restore_flag) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    out = tmp_path / "out"
    first = make_trainer(out, SeqData(96), sleep_s=0.03, num_train_epochs=1, save_strategy="epoch")
    attach(first, EnergyCallback(devices=["gpu"], record_path=record, summary=False))
    first.train()
    stored = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())["stateful_callbacks"]
    saved_j = stored["EnergyCallback"]["attributes"]["energy_state"]["energy_j"]["gpu"]
    assert saved_j > 0

    second = make_trainer(
        out, SeqData(96), sleep_s=0.03, num_train_epochs=2, restore_callback_states_from_checkpoint=restore_flag
    )
    attach(second, EnergyCallback(devices=["gpu"], record_path=record, summary=False))
    second.train(resume_from_checkpoint=str(out / "checkpoint-12"))

    lines = read_record(record)
    header, summary = [x for x in lines if x["type"] == "header"][-1], lines[-1]
    assert header["resumed_from"]["energy_j"]["gpu"] == pytest.approx(saved_j)
    live_s = summary["seconds"] - header["resumed_from"]["fit_s"]
    # exact but for the counter's 20 ms update period at each end of the resumed run
    tolerance_j = 2 * 0.02 * GPU_W + 0.005 * (saved_j + GPU_W * live_s)
    assert summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH == pytest.approx(saved_j + GPU_W * live_s, abs=tolerance_j)
    assert summary["samples"] == 2 * 96
    logged = [h["energy/gpu_kwh"] for h in second.state.log_history if "energy/gpu_kwh" in h]
    assert logged[-1] * J_PER_KWH > saved_j  # the logged series continues from the first run


def test_without_attach_log_history_still_gets_the_figures_with_a_warning(tmp_path, sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W)))
    trainer = make_trainer(tmp_path / "out", SeqData(32), sleep_s=0.02, report_to=["tensorboard"])
    trainer.add_callback(EnergyCallback(devices=["gpu"], summary=False, sample_interval_s=0.005))
    with pytest.warns(UserWarning, match="hf_energy.attach"):
        trainer.train()
    assert all("energy/total_kwh" in h for h in trainer.state.log_history if "loss" in h)


def test_attach_rejects_other_objects(tmp_path) -> None:
    trainer = make_trainer(tmp_path / "out", SeqData(8))
    with pytest.raises(ValueError, match="EnergyCallback"):
        attach(trainer, object())
    with pytest.raises(ValueError, match="at least one"):
        attach(trainer)


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "exception: RuntimeError"), (KeyboardInterrupt, "interrupted")]
)
def test_an_exception_mid_training_ends_the_record_and_the_sampler(tmp_path, sim_gpus, error, status) -> None:
    # The HF Trainer has no exception hook: the record ended at its header and the sampler ran on for ever.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(96), sleep_s=0.02, logging_steps=2)
    fail_from_batch(trainer, 8, error)  # some steps in, after two logged windows at least
    attach(trainer, EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=tmp_path / "energy.jsonl"))
    with pytest.raises(error):
        trainer.train()
    lines = read_record(tmp_path / "energy.jsonl")
    summary = lines[-1]
    steps = trainer.state.global_step
    assert summary["type"] == "summary" and summary["status"] == status and summary["step"] == steps >= 5
    assert [w["step"] for w in lines if w["type"] == "window"] == list(range(2, steps + 1, 2))
    assert summary["samples"] == steps * 8
    # the final total is the known power over the run, within one 20 ms counter update at each end
    assert abs(summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH - GPU_W * summary["seconds"]) <= 2 * 0.02 * GPU_W
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


def test_a_train_that_raised_unattached_and_was_never_retried_ends_at_exit(tmp_path, sim_gpus) -> None:
    # Given in callbacks=[...] (no attach), a train() that raised and was not retried left no summary at all: the
    # record ended at its last window. The interpreter's exit ends it (the function atexit runs, called here).
    from hf_energy import PowerCapCallback
    from hf_energy.registry import EnergyCallbacks

    sim = sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02, default_limit_mw=400_000,
                          min_limit_mw=100_000, max_limit_mw=450_000))  # fmt: skip
    record = tmp_path / "energy.jsonl"
    monitor = EnergyCallback(devices=["gpu"], sample_interval_s=0.01, record_path=record, summary=False)
    trainer = make_trainer(tmp_path / "out", SeqData(64), sleep_s=0.01, logging_steps=2,
                           callbacks=[PowerCapCallback(watts=250), monitor])  # fmt: skip
    fail_from_batch(trainer, 6)
    with pytest.raises(RuntimeError):
        trainer.train()
    assert [line for line in read_record(record) if line["type"] == "summary"] == []
    assert sim.limit_mw(sim.gpus[0]) == 250_000
    EnergyCallbacks.end_at_exit()
    [summary] = [line for line in read_record(record) if line["type"] == "summary"]
    assert (summary["status"], summary["step"]) == ("exception: unknown", trainer.state.global_step)
    assert trainer.state.global_step > 0
    assert sim.limit_mw(sim.gpus[0]) == 400_000  # the cap, back at the limit before it
    assert not monitor.tracker.meter.sampler.running
    EnergyCallbacks.end_at_exit()  # a second exit hook (or a completed run) ends nothing more
    assert len([line for line in read_record(record) if line["type"] == "summary"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("attached", [False, True])
def test_a_train_that_raised_out_of_the_script_has_its_summary(tmp_path, attached) -> None:
    """The process itself: the exception leaves the interpreter, whose exit writes the summary (once: attached,
    the exception's own path wrote it)."""
    import subprocess
    import sys

    from tests.helpers.shared_machine import ROOT, child_env

    record = tmp_path / "energy.jsonl"
    command = [sys.executable, "-m", "tests.scripts.hf_unretried", str(record), *(["--attach"] if attached else [])]
    child = subprocess.run(command, cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
    assert child.returncode == 1 and "RuntimeError: bad batch" in child.stderr, child.stderr
    step = int(child.stdout.split("raising after step ")[1].split()[0])
    summaries = [line for line in read_record(record) if line["type"] == "summary"]
    status = "exception: RuntimeError" if attached else "exception: unknown"
    assert [(s["status"], s["step"]) for s in summaries] == [(status, step)] and step > 0
    # the run's energy: the board's constant power over the run's seconds, within its bound
    joules = summaries[0]["metrics"]["energy/total_kwh"] * J_PER_KWH
    assert abs(joules - 300.0 * summaries[0]["seconds"]) <= summaries[0]["energy_j_err"] + 300.0 * 0.02


@pytest.mark.parametrize("kind", ["monitor", pytest.param("budget", marks=pytest.mark.slow)])
def test_a_train_that_raised_unattached_ends_when_the_next_train_begins(tmp_path, sim_gpus, kind) -> None:
    # Given in callbacks=[...] (no attach), a train() that raised was never ended: the next train() (a notebook's
    # retry) went on with its run, no summary, its steps going back to 0 under the same run id, its time and energy
    # counted in the retry's.
    from hf_energy import EnergyBudgetCallback

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    options = {"devices": ["gpu"], "sample_interval_s": 0.01, "record_path": tmp_path / "energy.jsonl"}
    callback = EnergyCallback(**options) if kind == "monitor" else EnergyBudgetCallback(max_kwh=1.0, **options)
    trainer = make_trainer(tmp_path / "out", SeqData(64), sleep_s=0.01, logging_steps=2, callbacks=[callback])
    collate = fail_from_batch(trainer, 6)  # some steps in
    with pytest.raises(RuntimeError):
        trainer.train()
    failed_at = trainer.state.global_step
    trainer.data_collator = collate
    trainer.train()
    lines = read_record(tmp_path / "energy.jsonl")
    headers = [line for line in lines if line["type"] == "header"]
    summaries = [line for line in lines if line["type"] == "summary"]
    assert len(headers) == len(summaries) == 2 and headers[0]["run"] != headers[1]["run"]
    assert [(s["run"], s["step"], s["status"]) for s in summaries] == [
        (headers[0]["run"], failed_at, "exception: unknown"),
        (headers[1]["run"], trainer.state.global_step, "completed"),
    ]
    assert 0 < failed_at < trainer.state.global_step
    for header, summary in zip(headers, summaries):  # each run's steps count up from its own start
        steps = [line["step"] for line in lines if line["type"] == "window" and line["run"] == header["run"]]
        assert steps == sorted(steps) and all(step <= summary["step"] for step in steps)
    # the retry's energy is its own: the known power over its own seconds, within a counter update at each end
    second = summaries[1]
    assert abs(second["metrics"]["energy/gpu_kwh"] * J_PER_KWH - GPU_W * second["seconds"]) <= 2 * 0.02 * GPU_W
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "exception: RuntimeError"), (KeyboardInterrupt, "interrupted")]
)
def test_an_exception_in_evaluate_alone_ends_its_run_and_the_sampler(tmp_path, sim_gpus, error, status) -> None:
    # An attached Trainer's evaluate() outside train() is a run of its own: one that raised left the record's header
    # without a summary and the sampler running, through the evaluate() and the train() after it.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(16), sleep_s=0.02, eval_data=SeqData(32), num_train_epochs=1)
    collate = fail_from_batch(trainer, 3, error)  # the third of four evaluation batches: after a forward at least
    record = tmp_path / "energy.jsonl"
    energy = attach(
        trainer,
        EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=record, country="FRA", summary=False),
    )
    with pytest.raises(error, match="bad batch"):  # the user's own exception, unchanged
        trainer.evaluate()
    lines = read_record(record)
    assert [(x["type"], x.get("stage"), x.get("status")) for x in lines] == [
        ("header", "inference", None),
        ("stage", "val", None),
        ("summary", None, status),
    ]
    assert lines[1]["seconds"] > 0 and len({x["run"] for x in lines}) == 1
    assert not any(t.name == "energy-sampler" and t.is_alive() for t in threading.enumerate())

    trainer.data_collator = collate  # the same Trainer measures the next evaluate() and train() as before
    assert trainer.evaluate()["energy/val_kwh"] > 0
    trainer.train()
    later = read_record(record)[len(lines) :]
    assert [x["type"] for x in later if x["type"] in ("header", "stage", "summary")] == [
        "header", "stage", "summary", "header", "summary",
    ]  # fmt: skip
    assert [x["status"] for x in later if x["type"] == "summary"] == ["completed", "completed"]
    assert energy.last_metrics["energy/total_kwh"] > 0
    assert not any(t.name == "energy-sampler" and t.is_alive() for t in threading.enumerate())


def test_an_evaluate_whose_run_cannot_end_still_raises_the_users_exception(tmp_path, sim_gpus, monkeypatch) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(16), sleep_s=0.02, eval_data=SeqData(32))
    fail_from_batch(trainer, 3, ZeroDivisionError)
    energy = attach(trainer, EnergyCallback(devices=["gpu"], sample_interval_s=0.02, country="FRA", summary=False))
    ended = []

    def broken_end(*args, **kwargs):
        ended.append(args)
        raise OSError("measurement broke too")

    monkeypatch.setattr(energy.run, "stage_end", broken_end)
    with pytest.raises(ZeroDivisionError):  # the evaluation's own exception, not the measurement's
        trainer.evaluate()
    assert ended == [("val", 0)]  # the end was tried, and failed
    assert not any(t.name == "energy-sampler" and t.is_alive() for t in threading.enumerate())


def test_an_epoch_that_max_steps_ends_early_is_recorded_under_its_own_index(tmp_path, sim_gpus) -> None:
    # 12 steps an epoch, max_steps=14: the second epoch ends at epoch 1.17, which was rounded to index 0.
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    trainer = make_trainer(tmp_path / "out", SeqData(96), sleep_s=0.01, max_steps=14, num_train_epochs=3)
    attach(trainer, EnergyCallback(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl"))
    trainer.train()
    epochs = [line for line in read_record(tmp_path / "energy.jsonl") if line["type"] == "epoch"]
    assert [(e["step"], e["epoch"]) for e in epochs] == [(12, 0), (14, 1)]
    logged = [h["energy/epoch_kwh"] for h in trainer.state.log_history if "energy/epoch_kwh" in h]
    assert logged == pytest.approx([e["metrics"]["energy/epoch_kwh"] for e in epochs])
