"""With ``accumulate_grad_batches``, a budget's stop and a time shift's pause land at optimizer-step
ends: each acted at every micro-batch's end, so a pause split a step and a stop threw away the
micro-batches of a step already begun (the monitor and HF's ``on_step_end`` act per step)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from energy_core import J_PER_KWH
from lightning_energy import EnergyBudget, EnergyMonitor, TimeShift
from tests.energy_core.shift.manual_job import BUSY_W, IDLE_W, STEPS, Job, deadline_in
from tests.helpers.lightning_models import flavour, make_module, regression_data

pl = flavour("lightning.pytorch")
ACCUMULATE, MICRO_S = 4, 8.0  # micro-batches per optimizer step, and the seconds of each
CLEAN, DIRTY = 80.0, 2000.0  # a dirty second hour: the shift pauses through it


def fit(sim_gpus, monkeypatch, tmp_path, budget_kwh: float | None = None) -> tuple[object, list[int], list[int]]:
    """(trainer, micro-batches run, micro-batches run before each pause)."""
    job = Job(sim_gpus, monkeypatch, tmp_path, hours=[CLEAN, DIRTY, CLEAN, CLEAN, CLEAN, CLEAN])
    monitor = EnergyMonitor(devices=["gpu"], sample_interval_s=60, carbon_intensity_series=str(job.series))
    monitor.tracker.meter.clock = job.clock
    job.loop = SimpleNamespace(tracker=monitor.tracker)
    shift = TimeShift(deadline=deadline_in(6), mode="pause", idle_w=IDLE_W)
    micro: list[int] = []
    pauses: list[int] = []

    def idle(seconds: float) -> None:
        if not pauses or pauses[-1] != len(micro):
            pauses.append(len(micro))
        job.idle(seconds)

    shift.run.sleep = idle
    module = make_module(pl)
    train_step = module.training_step

    def step(batch, batch_idx):
        if not micro:
            job.wait_first_reading()
        job.trace.set(job.clock.now, BUSY_W)
        job.advance(MICRO_S)
        micro.append(batch_idx)
        return train_step(batch, batch_idx)

    module.training_step = step
    callbacks = [monitor, shift] + ([EnergyBudget(max_kwh=budget_kwh)] if budget_kwh else [])
    trainer = pl.Trainer(max_steps=STEPS, accelerator="cpu", log_every_n_steps=10, logger=False, callbacks=callbacks,
                         accumulate_grad_batches=ACCUMULATE, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(module, regression_data(8 * STEPS * ACCUMULATE))
    return trainer, micro, pauses


def test_a_pause_falls_between_optimizer_steps(sim_gpus, monkeypatch, tmp_path) -> None:
    trainer, micro, pauses = fit(sim_gpus, monkeypatch, tmp_path)
    assert pauses and all(before % ACCUMULATE == 0 for before in pauses)  # was after micro-batch 450 of 452
    assert len(micro) == STEPS * ACCUMULATE and trainer.global_step == STEPS


def test_a_budget_stop_ends_the_optimizer_step_it_falls_in(sim_gpus, monkeypatch, tmp_path) -> None:
    limit = BUSY_W * MICRO_S * 10.5 / J_PER_KWH  # reached in the 11th micro-batch, in the 3rd optimizer step
    with pytest.warns(UserWarning, match="Energy budget spent"):
        trainer, micro, _ = fit(sim_gpus, monkeypatch, tmp_path, budget_kwh=limit)
    assert (len(micro), trainer.global_step) == (12, 3)  # was 11 micro-batches: 3 of a step thrown away
