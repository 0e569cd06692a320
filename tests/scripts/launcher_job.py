"""One 2-process CPU training job under a launcher, measured on a node with two simulated GPUs.

For tests/behaviour/test_launchers.py, one cell of the launcher matrix per framework:

    torchrun --nproc_per_node=2 -m tests.scripts.launcher_job lightning|hf|hf-cpu|hf-budget|loop|accelerate OUT
    torchrun --nproc_per_node=2 -m tests.scripts.launcher_job lightning-test-alone|loop-stage-alone OUT
    torchrun --nproc_per_node=2 -m tests.scripts.launcher_job hf-evaluate-alone-job OUT
    accelerate launch --multi_gpu --num_processes 2 -m tests.scripts.launcher_job accelerate OUT
    fabric run --accelerator cpu --devices 2 --strategy ddp tests/scripts/launcher_job.py fabric OUT
    python -m tests.scripts.launcher_job ray-lightning|ray-hf|ray-loop OUT       # Ray Train, 2 CPU workers
    python -m tests.scripts.launcher_job lightning-spawn OUT   # Lightning's strategy="ddp_spawn" starts them

Every process sees the same node: two GPUs drawing 150 W and 250 W (simulated NVML), on which
no rank trains (CPU workers), so the node's local rank 0 measures both, once. Each script is
what a user writes, plus the library's lines: the monitor, the callback or ``EnergyLoop()``
(with no ``ranks=``: it finds them). Each rank writes OUT/rank<r>.json (its final figures, its
fit's seconds, the sources it measured, the job's shape as the library saw it); the Ray
driver writes OUT/driver.json (Ray's reported metrics, the last checkpoint). The processes
leave as Python leaves: nothing here forces an exit, so a job that hangs at exit fails.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from energy_core import J_PER_KWH
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import simulate_for_process

BOARDS = {"GPU-150W": 150.0, "GPU-250W": 250.0}  # the node's GPUs, in PCI order
COUNTER_PERIOD_S = 0.005  # how often each board's energy counter advances
STEP_S = 0.02  # each training step's length, so that a fit lasts about a second
MEASURE: dict[str, Any] = {"devices": ["gpu"], "sample_interval_s": 0.02, "country": "FRA"}


def fake_node() -> None:
    simulate_for_process(
        "nvml", [SimGpu(uuid, Constant(w), counter_period_s=COUNTER_PERIOD_S) for uuid, w in BOARDS.items()]
    )


def report(out: Path, tracker: Any, metrics: dict[str, float]) -> None:
    """This rank's figures, as the library ended with them."""
    rank = int(os.environ.get("RANK", "0"))
    ranks = tracker.ranks
    fields = {
        "rank": rank,
        "seen": {"rank": ranks.rank, "local_rank": ranks.local_rank, "world_size": ranks.world_size},
        "metrics": metrics,
        "seconds": tracker.fit_seconds(),
        "sources": [{"name": s.info.name, "detail": s.info.detail} for s in tracker.meter.sources],
        "cwd": os.getcwd(),  # where a relative record_path would land
    }
    (out / f"rank{rank}.json").write_text(json.dumps(fields))


# ------------------------------------------------------------------ Lightning
def lightning_job(out: Path, ray: bool = False, spawn: bool = False) -> None:
    import lightning.pytorch as pl

    from lightning_energy import EnergyMonitor
    from tests.helpers.lightning_models import make_module, regression_data

    monitor = EnergyMonitor(log_every_n_steps=5, record_path=out / "energy.jsonl", **MEASURE)
    # ddp_spawn pickles the Trainer, callbacks and all, to the processes it starts
    options: dict[str, Any] = {"strategy": "ddp_spawn" if spawn else "ddp", "devices": 2, "callbacks": [monitor]}
    if ray:  # as Ray's getting-started example has it, the report callback first
        from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback

        options = {
            "strategy": RayDDPStrategy(),
            "devices": "auto",
            "plugins": [RayLightningEnvironment()],
            "callbacks": [RayTrainReportCallback(), monitor],
        }
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **options,
    )
    if ray:
        from ray.train.lightning import prepare_trainer

        trainer = prepare_trainer(trainer)
    if spawn:
        from tests.scripts.spawn_model import Regressor

        module = Regressor(STEP_S)
    else:
        module = make_module(pl, step_sleep_s=STEP_S)
    trainer.fit(module, regression_data(320))
    if spawn:  # the processes measured: this one's monitor is the copy they were started from
        return
    report(out, monitor.tracker, monitor.last_metrics)


# ------------------------------------------------------------------ Hugging Face Trainer
def hf_job(out: Path, use_cpu: bool, ray: bool = False, evaluate_alone: bool = False, budget: bool = False) -> None:
    """HF's Trainer; a user's callback logs on world process zero alone once (``trainer.log`` is no collective
    in HF); with ``evaluate_alone``, rank 0 alone evaluates after training, then every rank meets at a barrier;
    with ``budget``, an energy budget beside the monitor stops the job half-way."""
    from transformers import TrainerCallback

    from hf_energy import EnergyBudgetCallback, EnergyCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    class LogsOnRankZero(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            if state.is_world_process_zero and state.global_step == 6:
                trainer.log({"custom/scale": 0.5})
            return control

    # use_cpu=False: the arguments' defaults, with which a CPU worker's Trainer is not parallel
    options: dict[str, Any] = {"use_cpu": use_cpu, "save_strategy": "epoch" if ray else "no"}
    trainer = make_trainer(out / "hf", SeqData(256), sleep_s=STEP_S, num_train_epochs=2, logging_steps=4,
                           eval_data=SeqData(64) if evaluate_alone else None, callbacks=[LogsOnRankZero()],
                           **options)  # fmt: skip
    if ray:
        from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

        trainer.add_callback(RayTrainReportCallback())
        trainer = prepare_trainer(trainer)
    limit = [EnergyBudgetCallback(max_kwh=sum(BOARDS.values()) * 0.5 / J_PER_KWH)] if budget else []  # 0.5 s
    energy = attach(trainer, EnergyCallback(record_path=out / "energy.jsonl", summary=False, **MEASURE), *limit)
    trainer.train()
    report(out, energy.tracker, energy.last_metrics)
    if evaluate_alone:
        import torch.distributed as dist

        if dist.get_rank() == 0:
            figures = trainer.evaluate()
            (out / "evaluated.json").write_text(json.dumps({k: v for k, v in figures.items() if "energy" in k}))
        dist.barrier()  # the usual wait for rank 0's evaluation


# ------------------------------------------------------------------ loops without a Trainer
def regression(n: int = 320) -> Any:
    import torch
    from torch.utils.data import TensorDataset

    x = torch.randn(n, 8, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, x.sum(1, keepdim=True))


def train_loop(energy: Any, model: Any, optimizer: Any, loader: Any, backward: Any, log: Any = None) -> None:
    """Two epochs of the user's loop, with EnergyLoop's calls."""
    import time

    import torch

    for epoch in range(2):
        if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        energy.start_epoch()
        for x, y in loader:
            optimizer.zero_grad()
            backward(torch.nn.functional.mse_loss(model(x), y))
            optimizer.step()
            time.sleep(STEP_S)
            if (metrics := energy.step((x, y))) and log is not None:
                log(metrics, energy.steps)
        metrics = energy.end_epoch()
        if log is not None:
            log(metrics, energy.steps)


def loop_job(out: Path) -> None:
    """Plain PyTorch DDP under torchrun, with the README's ``EnergyLoop()`` as it stands."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler

    from energy_core import EnergyLoop

    dist.init_process_group("gloo")
    model = DistributedDataParallel(torch.nn.Linear(8, 1))
    data = regression()
    loader = DataLoader(data, batch_size=8, sampler=DistributedSampler(data))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    with EnergyLoop(log_every_n_steps=5, record_path=out / "energy.jsonl", **MEASURE) as energy:
        train_loop(energy, model, optimizer, loader, lambda loss: loss.backward())
    report(out, energy.tracker, energy.last_metrics)
    dist.destroy_process_group()


def accelerate_job(out: Path) -> None:
    """Accelerate with a tracker (TensorBoard), as its ``by_feature/tracking.py`` has it."""
    import torch
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from energy_core import EnergyLoop

    accelerator = Accelerator(cpu=True, log_with="tensorboard", project_dir=out / "tensorboard")
    accelerator.init_trackers("energy")
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loader = DataLoader(regression(), batch_size=8)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)

    def log(metrics: dict[str, float], step: int) -> None:
        accelerator.log(metrics, step=step)

    with EnergyLoop(log_every_n_steps=5, record_path=out / "energy.jsonl", **MEASURE) as energy:
        train_loop(energy, model, optimizer, loader, accelerator.backward, log)
    accelerator.end_training()
    report(out, energy.tracker, energy.last_metrics)


def fabric_job(out: Path) -> None:
    """Fabric under ``fabric run``, its figures summed with Fabric's collectives (`fabric_ranks`)."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from energy_core import EnergyLoop, fabric_ranks

    fabric = L.Fabric()  # accelerator, devices and strategy from `fabric run`, which launched the processes
    model = torch.nn.Linear(8, 1)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))
    loader = fabric.setup_dataloaders(DataLoader(regression(), batch_size=8))
    options = {"record_path": out / "energy.jsonl", **MEASURE}
    with EnergyLoop(log_every_n_steps=5, ranks=fabric_ranks(fabric), **options) as energy:
        train_loop(energy, model, optimizer, loader, fabric.backward)
    report(out, energy.tracker, energy.last_metrics)


def ray_loop(out: Path) -> None:
    """A plain loop under Ray Train: ``prepare_model``, ``prepare_data_loader``, and at each epoch's
    end ``ray.train.report`` with a checkpoint holding the loop's state (Ray keeps the metrics
    reported with a checkpoint only)."""
    import tempfile

    import ray.train
    import torch
    from ray.train.torch import prepare_data_loader, prepare_model
    from torch.utils.data import DataLoader

    from energy_core import EnergyLoop

    model = prepare_model(torch.nn.Linear(8, 1))
    loader = prepare_data_loader(DataLoader(regression(), batch_size=8))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def log(metrics: dict[str, float], step: int) -> None:
        if "energy/epoch_kwh" not in metrics:  # each epoch's figures, reported by every worker
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"model": model.state_dict(), "energy": energy.state_dict()}, Path(folder) / "state.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    with EnergyLoop(log_every_n_steps=5, record_path=out / "energy.jsonl", **MEASURE) as energy:
        train_loop(energy, model, optimizer, loader, lambda loss: loss.backward(), log)
    report(out, energy.tracker, energy.last_metrics)


# ------------------------------------------------------------------ Ray Train's driver
RAY_JOBS = {
    "ray-lightning": lambda out: lightning_job(out, ray=True),
    "ray-hf": lambda out: hf_job(out, use_cpu=False, ray=True),
    "ray-loop": ray_loop,
}


def ray_worker(config: dict[str, str]) -> None:
    """What each Ray Train worker runs: the same node's GPUs, then the cell's job."""
    fake_node()
    RAY_JOBS[config["cell"]](Path(config["out"]))


def ray_driver(cell: str, out: Path) -> None:
    """TorchTrainer with 2 CPU workers on a local Ray instance, stopped at the end."""
    import shutil
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    # Ray's sockets need a short path: its own folder under the system's temporary directory
    session = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=session)
    try:
        from tests.scripts.launcher_job import ray_worker as worker  # by name, not __main__'s copy

        trainer = TorchTrainer(
            worker,
            train_loop_config={"cell": cell, "out": str(out)},
            scaling_config=ScalingConfig(num_workers=2, use_gpu=False),
            run_config=RunConfig(storage_path=str(out / "ray"), name=cell),
        )
        result = trainer.fit()
        checkpoint = result.checkpoint.path if result.checkpoint is not None else None
        (out / "driver.json").write_text(json.dumps({"metrics": result.metrics, "checkpoint": checkpoint}))
    finally:
        ray.shutdown()
        shutil.rmtree(session, ignore_errors=True)


# ------------------------------------------------------------------ a stage run before any training
def stage_alone_job(out: Path, framework: str) -> None:
    """An evaluation script: Lightning's ``trainer.test()``, HF's ``evaluate()`` (a parallel Trainer) or an
    ``EnergyLoop.stage("test")`` block, twice, with no training before; each rank writes its figures."""
    import time

    import torch.distributed as dist

    measure = {**MEASURE, "record_path": out / "energy.jsonl"}
    if framework == "lightning":
        import lightning.pytorch as pl

        from lightning_energy import EnergyMonitor
        from tests.helpers.lightning_models import make_module, regression_data

        monitor = EnergyMonitor(**measure)
        trainer = pl.Trainer(accelerator="cpu", strategy="ddp", devices=2, logger=False, callbacks=[monitor],
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)  # fmt: skip
        for _ in range(2):
            trainer.test(make_module(pl, val_sleep_s=STEP_S), regression_data(160))
        figures, rank = monitor.last_metrics, trainer.global_rank
    elif framework == "hf":
        from hf_energy import EnergyCallback, attach
        from tests.helpers.hf_models import SeqData, make_trainer

        trainer = make_trainer(out / "hf", SeqData(64), sleep_s=STEP_S, eval_data=SeqData(128), use_cpu=True)
        energy = attach(trainer, EnergyCallback(**measure))
        for _ in range(2):
            trainer.evaluate()
        figures, rank = energy.last_metrics, trainer.args.process_index
    else:
        from energy_core import EnergyLoop

        dist.init_process_group("gloo")
        loop = EnergyLoop(**measure)
        for _ in range(2):
            with loop.stage("test") as figures:
                time.sleep(0.5)
        rank = dist.get_rank()
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "metrics": figures}))


JOBS = {
    "lightning": lightning_job,
    "lightning-spawn": lambda out: lightning_job(out, spawn=True),
    "lightning-test-alone": lambda out: stage_alone_job(out, "lightning"),
    "hf-evaluate-alone-job": lambda out: stage_alone_job(out, "hf"),
    "loop-stage-alone": lambda out: stage_alone_job(out, "loop"),
    "hf": lambda out: hf_job(out, use_cpu=False),
    "hf-cpu": lambda out: hf_job(out, use_cpu=True),
    "hf-evaluate-alone": lambda out: hf_job(out, use_cpu=False, evaluate_alone=True),
    "hf-budget": lambda out: hf_job(out, use_cpu=False, budget=True),
    "loop": loop_job,
    "accelerate": accelerate_job,
    "fabric": fabric_job,
}


if __name__ == "__mp_main__":  # a process Lightning's ddp_spawn started: the same node
    fake_node()

if __name__ == "__main__":
    cell, out_dir = sys.argv[1], Path(sys.argv[2])
    out_dir.mkdir(parents=True, exist_ok=True)
    if cell in RAY_JOBS:
        ray_driver(cell, out_dir)
    else:
        fake_node()
        JOBS[cell](out_dir)
