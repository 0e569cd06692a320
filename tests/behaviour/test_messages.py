"""What a user reads: messages that agree with each other, point at their code, and no false zeros."""

from __future__ import annotations

import pytest

from energy_core import EnergyTracker
from energy_core.carbon.location import resolve_intensity
from lightning_energy import EnergyMonitor
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers.lightning_models import flavour, make_module, regression_data

pl = flavour("lightning.pytorch")


def test_asking_for_a_gpu_where_there_is_none_says_so_once_and_consistently() -> None:
    tracker = EnergyTracker(devices=["gpu"])
    notices = tracker.start_fit(0)
    summary = tracker.summary_text(tracker.end_fit(0))
    texts = [n.text for n in notices]
    assert [n.level for n in notices if "GPU" in n.text] == ["warn"]
    assert any("Nothing to measure among gpu" in t for t in texts)
    assert not any("CPU/DRAM only" in t for t in texts)  # nothing else is measured either
    assert "[no device measured]" in summary and "[]" not in summary


def test_the_devices_measured_are_listed_once(fake_rapl) -> None:
    fake_rapl(dram=False)
    tracker = EnergyTracker()
    notices = tracker.start_fit(0)
    tracker.end_fit(0)
    (listed,) = [n.text for n in notices if n.text.startswith("Measuring energy of")]
    assert listed == "Measuring energy of: cpu0."  # no GPU, no DRAM domain: said once, no contradiction


def test_warnings_point_at_the_users_call(tmp_path) -> None:
    monitor = EnergyMonitor(record_path=tmp_path / "energy.jsonl")  # no GPU, no RAPL: an estimate, with a warning
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor])  # fmt: skip
    with pytest.warns(UserWarning, match="ESTIMATED") as caught:
        trainer.fit(make_module(pl), regression_data(64))
    (estimated,) = [w for w in caught if "ESTIMATED" in str(w.message)]
    assert estimated.filename == __file__  # this line's trainer.fit, not a hook inside a framework


def test_a_window_too_short_to_measure_is_left_out_not_zero(sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=1.0)
    trainer = pl.Trainer(fast_dev_run=True, accelerator="cpu", callbacks=[monitor], enable_progress_bar=False)
    trainer.fit(make_module(pl, step_sleep_s=0.1), regression_data(64))  # longer than 2 counter periods
    figures = monitor.last_metrics
    for key in ("power/total_w", "energy/step_j", "energy/epoch_kwh"):
        assert figures.get(key) != 0.0, key  # absent, never a false zero
    assert figures["energy/total_kwh"] > 0  # the totals at the end include that time


@pytest.mark.parametrize(("given", "meant"), [("France", "FRA"), ("fr", "FRA"), ("germany", "DEU"), ("de", "DEU")])
def test_a_country_name_or_two_letter_code_gets_a_suggestion(given, meant) -> None:
    with pytest.raises(ValueError, match=f"did you mean '{meant}'"):
        resolve_intensity(country=given)
