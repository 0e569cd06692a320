"""EnergyMonitor in real Lightning Trainers (both flavours), read back from real loggers' files."""

from __future__ import annotations

import statistics
import threading
from pathlib import Path

import pytest

from energy_core import J_PER_KWH
from energy_core.output import units_text as show
from lightning_energy import EnergyMonitor, PowerCap
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.lightning_models import (
    FLAVOURS,
    TokenData,
    at_train_start,
    flavour,
    make_module,
    raise_at,
    regression_data,
)
from tests.helpers.readback import csv_series, tensorboard_series
from tests.helpers.records import read_record

GPU_W = 300.0


def trainer_for(pl, tmp_path: Path, monitor: EnergyMonitor, **kwargs):
    loggers = [pl.loggers.CSVLogger(tmp_path / "csv"), pl.loggers.TensorBoardLogger(tmp_path / "tb")]
    options = {
        "max_epochs": 3,
        "accelerator": "cpu",
        "log_every_n_steps": 10,
        "logger": loggers,
        "callbacks": [monitor],
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "limit_val_batches": 2,
    }
    options.update(kwargs)
    return pl.Trainer(**options)


@pytest.mark.parametrize(
    ("name", "sim_gpus"),
    [
        (FLAVOURS[0], "nvml"),
        pytest.param(FLAVOURS[1], "nvml", marks=pytest.mark.slow),
        pytest.param(FLAVOURS[0], "amdsmi", marks=pytest.mark.slow),
    ],
    indirect=["sim_gpus"],
)
def test_logged_energy_matches_the_known_power(name, tmp_path, sim_gpus) -> None:
    pl = flavour(name)
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(
        devices=["gpu"], sample_interval_s=0.05, country="FRA", pue=1.2, record_path=tmp_path / "energy.jsonl"
    )
    shown: list[dict] = []

    class PeekAtProgressBar(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            shown.append(trainer.progress_bar_callback.get_metrics(trainer, pl_module))

    trainer = trainer_for(pl, tmp_path, monitor, callbacks=[monitor, PeekAtProgressBar()])
    trainer.fit(make_module(pl, step_sleep_s=0.03, val_sleep_s=0.1), regression_data(240), regression_data(32))

    lines = read_record(tmp_path / "energy.jsonl")
    assert [line["type"] for line in lines][0] == "header"
    assert lines[-1]["type"] == "summary" and lines[-1]["status"] == "completed"
    last_epoch = [line for line in lines if line["type"] == "epoch"][-1]
    kwh = last_epoch["metrics"]["energy/gpu_kwh"]
    # The logged total is the integral of the known power over the run, within one 20 ms counter
    # update at each end (the counter's reading may be that stale when a span starts or ends).
    counter_j = GPU_W * 2 * 0.02
    assert abs(kwh * J_PER_KWH - GPU_W * last_epoch["elapsed_s"]) <= counter_j
    assert last_epoch["metrics"]["energy/total_kwh"] == kwh
    assert last_epoch["metrics"]["carbon/co2e_kg"] == pytest.approx(kwh * 1.2 * 56.039 / 1000, rel=1e-6)

    # The same figures are in the CSV file and the TensorBoard event file on disk, one value per key and step:
    # at an epoch's last step a window logged first, and the epoch's end adds only energy/epoch_kwh there.
    step = last_epoch["step"]
    at_step = [line for line in lines if line["type"] == "window" and line["step"] == step] or [last_epoch]
    logged = at_step[0]["metrics"]["energy/gpu_kwh"]
    assert dict(csv_series(tmp_path / "csv", "energy/gpu_kwh"))[step] == pytest.approx(logged, rel=1e-9)
    assert dict(tensorboard_series(tmp_path / "tb", "energy/total_kwh"))[step] == pytest.approx(logged, rel=1e-6)
    for key in ("energy/total_kwh", "carbon/co2e_kg", "energy/epoch_kwh"):
        steps = [s for s, _ in tensorboard_series(tmp_path / "tb", key)]
        assert len(steps) == len(set(steps)), key
    epochs = csv_series(tmp_path / "csv", "energy/epoch_kwh")
    epoch_lines = [line for line in lines if line["type"] == "epoch"]
    assert [v for _, v in epochs] == pytest.approx([e["metrics"]["energy/epoch_kwh"] for e in epoch_lines])
    for epoch_kwh, line in zip(epochs, epoch_lines):
        assert abs(epoch_kwh[1] * J_PER_KWH - GPU_W * line["seconds"]) <= counter_j

    # Window figures: mean GPU power, J per step with validation taken out, samples.
    windows = [line for line in lines if line["type"] == "window"]
    assert [w["step"] for w in windows if w["steps"] == 10] == list(range(10, 91, 10))
    powers = [v for _, v in csv_series(tmp_path / "csv", "power/gpu0_w")]
    # Each window's power is within one counter update at each end of its span, and of each stage taken out of it,
    # over its seconds; the median is within the (n//2)-th smallest of those bounds (too few windows exceed it).
    stage_steps = [line["step"] for line in lines if line["type"] == "stage"]
    spans = [1 + sum(w["step"] - w["steps"] <= s < w["step"] for s in stage_steps) for w in windows]
    bounds = sorted(n * counter_j / w["seconds"] for n, w in zip(spans, windows, strict=True))
    assert len(bounds) == len(powers) and abs(statistics.median(powers) - GPU_W) <= bounds[len(bounds) // 2]
    # Validation runs are not charged to steps: one here (0.2 s at 300 W) would add 60 J to its window's steps,
    # against the window's own seconds (stages taken out) at 300 W, within a counter update at each end of each span.
    for n, w in zip(spans, windows, strict=True):
        assert abs(w["metrics"]["energy/step_j"] * w["steps"] - GPU_W * w["seconds"]) <= n * counter_j
    for w in windows:
        m = w["metrics"]
        assert w["samples"] == 8 * w["steps"]
        assert m["efficiency/j_per_sample"] == pytest.approx(m["energy/step_j"] * w["steps"] / w["samples"])
        assert m["throughput/samples_per_s"] == pytest.approx(w["samples"] / w["seconds"])

    # Validation energy is its own key: 4 runs (sanity check + 3 epochs) at 300 W.
    stages = [line for line in lines if line["type"] == "stage"]
    assert len(stages) == 4
    val_kwh = csv_series(tmp_path / "csv", "energy/val_kwh")[-1][1]
    assert abs(val_kwh * J_PER_KWH - GPU_W * sum(s["seconds"] for s in stages)) <= len(stages) * counter_j
    last_window = [w for w in windows if w["steps"] == 10][-1]  # what the progress bar displays: the last window,
    # in the units that fit, as the summary shows them; no "~": the GPU's energy is read, not estimated
    assert shown[-1]["power"] == show.power(last_window["metrics"]["power/total_w"])
    watts, unit = shown[-1]["power"].split()  # within the window's counter bound (and the rounding)
    assert unit == "W" and float(watts) == pytest.approx(GPU_W, abs=2 * 0.02 * GPU_W / last_window["seconds"] + 0.5)
    energy = show.energy_kwh(last_window["metrics"]["energy/total_kwh"])  # the last window's total, as shown
    assert shown[-1]["energy"] == energy and energy.endswith(" J")
    assert "get_metrics" not in vars(trainer.progress_bar_callback)  # detached at teardown
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


@pytest.mark.slow  # Lightning resumes in test_budget.py and the state round trip in test_tracker_properties.py
@pytest.mark.parametrize("name", FLAVOURS)
def test_resume_from_checkpoint_continues_the_totals(name, tmp_path, sim_gpus) -> None:
    pl = flavour(name)
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = EnergyMonitor(devices=["gpu"], sample_interval_s=0.05, record_path=record)
    trainer_for(
        pl, tmp_path, first, max_epochs=2, enable_checkpointing=True, callbacks=[first, checkpoint], limit_val_batches=0
    ).fit(make_module(pl, step_sleep_s=0.03), regression_data(240))
    first_summary = read_record(record)[-1]
    saved = first_summary["metrics"]["energy/gpu_kwh"]

    second = EnergyMonitor(devices=["gpu"], sample_interval_s=0.05, record_path=record)
    trainer = trainer_for(pl, tmp_path, second, max_epochs=4, limit_val_batches=0)
    trainer.fit(
        make_module(pl, step_sleep_s=0.03), regression_data(240), ckpt_path=str(tmp_path / "ckpt" / "last.ckpt")
    )

    lines = read_record(record)
    header, summary = [x for x in lines if x["type"] == "header"][-1], lines[-1]
    resumed = header["resumed_from"]
    # saved at the last epoch end: the first run's total less the known power over the rest of that run, within one
    # counter update at each end of that rest
    saved_j = saved * J_PER_KWH - GPU_W * (first_summary["seconds"] - resumed["fit_s"])
    assert abs(resumed["energy_j"]["gpu"] - saved_j) <= 2 * 0.02 * GPU_W
    live_s = summary["seconds"] - resumed["fit_s"]
    expected_j = resumed["energy_j"]["gpu"] + GPU_W * live_s
    # exact but for the counter's 20 ms update period at each end of the resumed run
    tolerance_j = 2 * 0.02 * GPU_W + 0.005 * expected_j
    assert summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH == pytest.approx(expected_j, abs=tolerance_j)
    assert summary["samples"] == 4 * 240
    logged = csv_series(tmp_path / "csv", "energy/total_kwh")
    assert logged[-1][1] > saved  # the logged series continues from the first run's total


def test_a_resumed_fits_first_window_counts_its_steps_from_the_restored_step(tmp_path, sim_gpus) -> None:
    # Lightning restores global_step after on_fit_start: the first window after a resume at step 10 holds
    # steps 11 and 12, not all twelve since step 0 (its J/step and bound were a sixth of the truth).
    pl = flavour(FLAVOURS[0])
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.005))
    record = tmp_path / "energy.jsonl"

    def fit(max_epochs: int, ckpt_path: Path | None = None):
        monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record)
        trainer = trainer_for(pl, tmp_path, monitor, max_epochs=max_epochs, log_every_n_steps=4)
        module = make_module(pl, step_sleep_s=0.03, val_sleep_s=0.05)
        trainer.fit(module, regression_data(80), regression_data(16), ckpt_path=ckpt_path)
        return trainer

    fit(1).save_checkpoint(tmp_path / "epoch.ckpt")  # 10 steps
    fit(2, tmp_path / "epoch.ckpt")

    lines = read_record(record)
    resumed = lines[max(i for i, line in enumerate(lines) if line["type"] == "header") :]
    first = next(line for line in resumed if line["type"] == "window")
    step_j, step_j_err = first["metrics"]["energy/step_j"], first["metrics"]["energy/step_j_err"]
    assert dict(csv_series(tmp_path / "csv", "energy/step_j"))[first["step"]] == pytest.approx(step_j, rel=1e-9)
    # Its two steps used the known power over its training seconds (the sanity check's validation taken out),
    # within one 5 ms counter update at each end of the window and of that stage; inside its stated bound too.
    true_step_j = GPU_W * first["seconds"] / 2
    assert abs(step_j - true_step_j) <= 2 * (GPU_W * 2 * 0.005) / 2
    assert abs(step_j - true_step_j) <= step_j_err
    assert (first["step"], first["steps"]) == (12, 2)


def test_tokens_and_gradient_accumulation(tmp_path, sim_gpus) -> None:
    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.05, record_path=tmp_path / "energy.jsonl")
    data = TokenData(160)
    loader = __import__("torch").utils.data.DataLoader(data, batch_size=8)
    trainer = trainer_for(
        pl, tmp_path, monitor, max_epochs=1, accumulate_grad_batches=2, log_every_n_steps=5, limit_val_batches=0
    )
    trainer.fit(make_module(pl, step_sleep_s=0.01, token_batches=True), loader)

    windows = [x for x in read_record(tmp_path / "energy.jsonl") if x["type"] == "window"]
    assert [(w["step"], w["steps"], w["samples"]) for w in windows] == [(5, 5, 80), (10, 5, 80)]
    assert sum(w["tokens"] for w in windows) == data.tokens()  # padding excluded
    for w in windows:
        m = w["metrics"]
        assert m["throughput/tokens_per_s"] == pytest.approx(w["tokens"] / w["seconds"])
        assert m["efficiency/j_per_token"] == pytest.approx(m["energy/step_j"] * w["steps"] / w["tokens"])


def test_test_stage_and_all_devices(tmp_path, sim_gpus, fake_rapl) -> None:
    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    rapl = fake_rapl()
    rapl.run({"cpu": Constant(40.0), "dram": Constant(6.0)})
    monitor = EnergyMonitor(sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl")
    trainer = trainer_for(pl, tmp_path, monitor, max_epochs=2, limit_val_batches=0)
    module = make_module(pl, step_sleep_s=0.03, val_sleep_s=0.05)
    trainer.fit(module, regression_data(240))
    trainer.test(module, regression_data(64))
    trainer.predict(module, regression_data(32))

    lines = read_record(tmp_path / "energy.jsonl")
    last_epoch = [x for x in lines if x["type"] == "epoch"][-1]
    m = last_epoch["metrics"]
    seconds = last_epoch["elapsed_s"]
    assert m["energy/cpu_kwh"] * J_PER_KWH == pytest.approx(40.0 * seconds, rel=0.02)
    assert m["energy/dram_kwh"] * J_PER_KWH == pytest.approx(6.0 * seconds, rel=0.02)
    assert m["energy/total_kwh"] == pytest.approx(m["energy/gpu_kwh"] + m["energy/cpu_kwh"] + m["energy/dram_kwh"])
    assert lines[0]["estimated"] == []
    (test_stage,) = [x for x in lines if x["type"] == "stage" and x["stage"] == "test"]
    test_kwh = csv_series(tmp_path / "csv", "energy/test_kwh")[-1][1]
    assert test_kwh == pytest.approx(test_stage["kwh"])
    # one 20 ms GPU counter update at each end; RAPL: the fake's thread writes every 2 ms once it holds the GIL, which
    # the loop, the sampler and the loggers' threads may keep for a few 5 ms switch intervals: allow 20 ms (16 seen)
    stage_j = 2 * 0.02 * GPU_W + 2 * 0.02 * (40.0 + 6.0)
    assert abs(test_kwh * J_PER_KWH - 346.0 * test_stage["seconds"]) <= stage_j
    (predict_stage,) = [x for x in lines if x["type"] == "stage" and x["stage"] == "predict"]
    assert monitor.last_metrics["energy/predict_kwh"] == pytest.approx(predict_stage["kwh"])
    assert abs(predict_stage["kwh"] * J_PER_KWH - 346.0 * predict_stage["seconds"]) <= stage_j


def test_estimated_cpu_is_flagged_in_warning_and_record(tmp_path) -> None:
    pl = flavour("lightning.pytorch")
    monitor = EnergyMonitor(record_path=tmp_path / "energy.jsonl")  # no GPU, no RAPL: estimate
    with pytest.warns(UserWarning, match="ESTIMATED"):
        trainer_for(pl, tmp_path, monitor, max_epochs=1, limit_val_batches=0).fit(make_module(pl), regression_data(64))
    lines = read_record(tmp_path / "energy.jsonl")
    assert lines[0]["estimated"] == ["cpu0"] and lines[-1]["estimated"] == ["cpu0"]
    assert lines[0]["hardware"]["sources"][0]["method"] == "process-cpu-time-x-w-per-thread"


def test_exception_in_training_ends_the_record_and_the_sampler(tmp_path, sim_gpus) -> None:
    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W)))

    class Boom(RuntimeError):
        pass

    module = make_module(pl)
    raise_at(module, "training_step", 5, Boom("bad batch"))
    monitor = EnergyMonitor(devices=["gpu"], record_path=tmp_path / "energy.jsonl")
    with pytest.raises(Boom):
        trainer_for(pl, tmp_path, monitor, max_epochs=1, limit_val_batches=0).fit(module, regression_data(240))
    summary = read_record(tmp_path / "energy.jsonl")[-1]
    assert summary["type"] == "summary" and summary["status"] == "exception: Boom"
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


def test_a_stand_alone_validate_that_raises_ends_its_run_with_the_exception(tmp_path, sim_gpus) -> None:
    """trainer.validate() raising outside a fit: on_exception ended only a fit, so the record held a
    header alone (no stage line, no summary) and the energy measured was lost."""
    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.005))
    module = make_module(pl, val_sleep_s=0.02)
    raise_at(module, "validation_step", 3, RuntimeError("CUDA out of memory"))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.005, record_path=tmp_path / "energy.jsonl")
    with pytest.raises(RuntimeError, match="out of memory"):
        trainer_for(pl, tmp_path, monitor, limit_val_batches=8).validate(module, regression_data(64))
    header, stage, summary = read_record(tmp_path / "energy.jsonl")
    assert (header["type"], stage["type"], summary["type"]) == ("header", "stage", "summary")
    assert summary["status"] == "exception: RuntimeError" and stage["stage"] == "val"
    bound = summary["metrics"]["energy/val_kwh_err"]  # three 20 ms steps at 300 W, within the figure's bound
    assert stage["kwh"] * J_PER_KWH == pytest.approx(GPU_W * stage["seconds"], abs=bound * J_PER_KWH)
    assert not any(t.name == "energy-sampler" for t in threading.enumerate())


def test_nvml_failure_mid_run_does_not_stop_training(tmp_path, sim_gpus) -> None:
    pl = flavour("lightning.pytorch")
    board = SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02)
    sim = sim_gpus(board)
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl")
    lost = at_train_start(pl, lambda: setattr(board, "fail_between", (sim.elapsed() + 0.2, sim.elapsed() + 0.7)))
    trainer = trainer_for(pl, tmp_path, monitor, max_epochs=2, limit_val_batches=0, callbacks=[monitor, lost])
    trainer.fit(make_module(pl, step_sleep_s=0.02), regression_data(240))
    summary = read_record(tmp_path / "energy.jsonl")[-1]
    assert trainer.current_epoch == 2
    assert summary["failed_reads"]["gpu0"] >= 10  # the gap is reported
    # the counter measures the gap once it answers again (0.7 s in; the run lasts over 1.2 s): one update at each end
    assert abs(summary["metrics"]["energy/gpu_kwh"] * J_PER_KWH - GPU_W * summary["seconds"]) <= 2 * 0.02 * GPU_W


@pytest.mark.parametrize(("interval_s", "val_sleep_s"), [(0.5, 0.0), (0.02, 0.05)], ids=["short", "long"])
def test_a_stand_alone_validate_is_a_run_of_its_own_that_the_report_shows(
    tmp_path, sim_gpus, capsys, interval_s, val_sleep_s
) -> None:
    # A short trainer.validate() (ended before the sampler's second reading) wrote nothing; a longer one wrote
    # stage lines with no header, which energy-report rejected.
    from energy_core.report.cli import main as energy_report

    pl = flavour("lightning.pytorch")
    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=interval_s, record_path=record, summary=False)
    trainer = trainer_for(pl, tmp_path, monitor, limit_val_batches=4)
    trainer.validate(make_module(pl, val_sleep_s=val_sleep_s), regression_data(64))

    header, stage, summary = read_record(record)
    assert (header["type"], stage["type"], summary["type"]) == ("header", "stage", "summary")
    assert header["run"] == stage["run"] == summary["run"] and header["stage"] == "val"
    assert stage["stage"] == "val" and stage["kwh"] * J_PER_KWH == pytest.approx(GPU_W * stage["seconds"], abs=7.0)
    assert summary["status"] == "completed" and summary["seconds"] == pytest.approx(stage["seconds"])
    assert summary["metrics"]["energy/total_kwh"] == pytest.approx(stage["kwh"], rel=1e-12)
    assert summary["metrics"]["energy/val_kwh"] == pytest.approx(stage["kwh"], rel=1e-12)
    assert summary["stage_kwh"]["val"] == pytest.approx(stage["kwh"], rel=1e-12)
    assert monitor.last_metrics["energy/val_kwh"] == pytest.approx(stage["kwh"], rel=1e-12)  # logged too
    assert energy_report([str(record), "--out", str(tmp_path / "report")]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert show.energy_kwh(stage["kwh"]) in shown and "completed" in shown and "note:" not in shown


@pytest.mark.parametrize("name", [FLAVOURS[0], pytest.param(FLAVOURS[1], marks=pytest.mark.slow)])
def test_a_second_monitor_is_refused_before_any_figure(name, tmp_path) -> None:
    pl = flavour(name)
    monitor = EnergyMonitor(devices=["cpu"], record_path=tmp_path / "energy.jsonl")
    for callbacks in ([monitor, monitor], [monitor, EnergyMonitor(devices=["cpu"])]):
        with pytest.raises(RuntimeError, match="more than one stateful callback of type `EnergyMonitor`"):
            pl.Trainer(callbacks=callbacks, logger=False)
    assert not (tmp_path / "energy.jsonl").exists()  # nothing measured, nothing written
    # and the message's pointer, "consult the documentation of `EnergyMonitor`", finds the rule there
    assert "One per Trainer" in (EnergyMonitor.__doc__ or "")


def test_other_callbacks_see_each_epochs_figures_whatever_their_order(tmp_path, sim_gpus) -> None:
    """A callback that reports at an epoch's end (as Ray's report callback does), given before the
    monitor, reads that epoch's figures in ``trainer.callback_metrics``; ModelCheckpoint and
    EarlyStopping monitor an energy key; Lightning keeps the figures as given (no per-step reduce)."""
    import lightning.pytorch as pl

    sim_gpus(SimGpu("GPU-1", Constant(GPU_W), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.05, country="FRA", record_path=tmp_path / "e.jsonl")
    seen: list[float] = []

    class ReportAtEpochEnd(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            seen.append(float(trainer.callback_metrics["energy/total_kwh"]))

    best = pl.callbacks.ModelCheckpoint(tmp_path / "ckpt", monitor="energy/total_kwh", mode="min", save_top_k=1)
    # the total only grows, so "no improvement" comes at the second epoch's end: a stop there
    stop = pl.callbacks.EarlyStopping("energy/total_kwh", patience=0, mode="min", check_on_train_epoch_end=True)
    callbacks = [ReportAtEpochEnd(), monitor, best, stop]
    trainer = trainer_for(pl, tmp_path, monitor, max_epochs=4, enable_checkpointing=True, callbacks=callbacks)
    trainer.fit(make_module(pl, step_sleep_s=0.02), regression_data(160))

    epochs = [line["metrics"] for line in read_record(tmp_path / "e.jsonl") if line["type"] == "epoch"]
    assert seen == [pytest.approx(e["energy/total_kwh"], rel=1e-6) for e in epochs]  # each epoch's, not the one before
    assert best.best_model_score == pytest.approx(epochs[0]["energy/total_kwh"], rel=1e-6)  # the least: the first
    assert stop.stopped_epoch == len(epochs) - 1 == 1  # stopped by an energy key
    # the figures are not results Lightning logs and reduces itself (as pl_module.log would make them)
    assert "energy/total_kwh" not in trainer.logged_metrics


@pytest.mark.parametrize("order", ["monitor-first", "cap-first"])
def test_the_records_header_lists_the_cap_in_either_order(tmp_path, sim_gpus, order) -> None:
    # Listed after the monitor, the cap capped in its on_fit_start after the monitor's had written the
    # header: "power_caps" was empty there (the power_cap line still came).
    sim = sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    pl = flavour("lightning.pytorch")
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=tmp_path / "energy.jsonl")
    cap = PowerCap(watts=250)
    trainer = trainer_for(
        pl, tmp_path, monitor, max_epochs=1, callbacks=[monitor, cap] if order == "monitor-first" else [cap, monitor]
    )
    trainer.fit(make_module(pl, step_sleep_s=0.005), regression_data(80))
    lines = read_record(tmp_path / "energy.jsonl")
    header = lines[0]
    assert header["type"] == "header" and [c["cap_w"] for c in header["power_caps"]] == [250.0]
    applied = [line for line in lines if line["type"] == "power_cap" and line["event"] == "applied"]
    assert [line["run"] for line in applied] == [header["run"]]  # after its run's header, not before under another id
    assert sim.gpus[0].limit_history[-1][1] == sim.gpus[0].default_limit_mw  # put back at the end


def test_a_cap_for_a_fit_that_never_starts_is_not_the_last_runs(tmp_path, sim_gpus) -> None:
    # The cap's lines held for a fit that never started were written at close under the previous run's id, after
    # its summary: the report then showed that uncapped run as capped at 250 W.
    from energy_core.report.runs import read

    pl = flavour("lightning.pytorch")

    class Boom(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            raise RuntimeError("set-up failed")

    def trainer(callbacks):
        return pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_model_summary=False, enable_progress_bar=False, callbacks=callbacks)  # fmt: skip

    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    record = tmp_path / "energy.jsonl"
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=0.02, record_path=record)
    trainer([monitor]).fit(make_module(pl, step_sleep_s=0.005), regression_data(32))  # run 1: uncapped
    with pytest.raises(RuntimeError, match="set-up failed"):
        trainer([Boom(), monitor, PowerCap(watts=250)]).fit(make_module(pl), regression_data(32))
    lines = read_record(record)
    (header,) = [line for line in lines if line["type"] == "header"]
    caps = [line for line in lines if line["type"] == "power_cap"]
    assert [line["event"] for line in caps] == ["applied"]  # written all the same...
    assert all(line["run"] != header["run"] for line in caps)  # ...under an id of their own
    runs, _ = read(record)
    assert [run.caps for run in runs if run.header["run"] == header["run"]] == [[]]
