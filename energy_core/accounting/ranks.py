"""Ranks: how one process takes part in a job, and the job's sums and decisions.

Every rule about multi-process jobs is here, once, for every framework adapter:

* each rank measures the GPU it trains on; CPU, DRAM and GPUs no rank trains on are node
  devices, measured by the node's local rank 0 only;
* global rank 0 writes the run record and carries a checkpoint's totals;
* figures are summed over ranks by name (`Ranks.sum_by_name`, one collective; `sum_over_ranks`
  packs a rank's totals and window into that sum), and every decision is taken alike on
  every rank (`Ranks.agree`).

The adapters only translate their framework's view (Lightning's ``trainer``, HF's
``args``/``state``) into a `Ranks` and supply the collectives. In a single process the
defaults make every sum the identity and every decision local.

Examples:
    >>> Ranks().sum_by_name({"joules": 2.0}, {"gpu_j": 1.5})
    ({'joules': 2.0}, {'gpu_j': [1.5]})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from energy_core.accounting.figures import STAGES, RunTotals, WindowFigures
from energy_core.devices import DEVICE_KINDS


@dataclass(frozen=True)
class Ranks:
    """This process's place in a job.

    Args:
        rank: Global rank.
        local_rank: Rank within the node.
        world_size: Number of processes in the job.
        gpu_index: The visible GPU this rank trains on (None: it trains on none of its own).
        sum: Element-wise sum of a list of floats over all ranks (a collective every rank
            calls at the same points); None in a single process.
        gather: All-gather of a small picklable object, or None.
        any: True on every rank if the flag is True on any rank (a collective), or None.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    gpu_index: int | None = None
    sum: Callable[[list[float]], list[float]] | None = None
    gather: Callable[[Any], list[Any]] | None = None
    any: Callable[[bool], bool] | None = None

    @property
    def distributed(self) -> bool:
        """Whether figures are summed over several processes."""
        return self.world_size > 1 and self.sum is not None

    @property
    def gpu_indices(self) -> list[int] | None:
        """The visible GPUs this rank measures (None: all of them)."""
        if not self.distributed:
            return None
        if self.gpu_index is not None:
            return [self.gpu_index]
        return None if self.local_rank == 0 else []

    @property
    def node_devices(self) -> bool:
        """Whether this rank measures the node's CPU and DRAM."""
        return not self.distributed or self.local_rank == 0

    @property
    def leads_node(self) -> bool:
        """Whether this rank acts for its node (power caps)."""
        return self.local_rank == 0

    @property
    def leads_job(self) -> bool:
        """Whether this rank writes the record and carries a checkpoint's totals."""
        return self.rank == 0

    def agree(self, flag: bool) -> bool:
        """True on every rank if True on any (a collective every rank must reach)."""
        if self.world_size > 1 and self.any is not None:
            return bool(self.any(bool(flag)))
        return bool(flag)

    def sum_by_name(
        self, values: Mapping[str, float], per_rank: Mapping[str, float] = {}
    ) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Sum named figures over all ranks in one collective.

        Args:
            values: Figures summed over ranks; every rank must give the same names.
            per_rank: Figures kept apart by rank: the result holds one value per rank.

        Returns:
            The sums by name, and for each ``per_rank`` name the list of every rank's value.
        """
        names, split = sorted(values), sorted(per_rank)
        if not self.distributed or self.sum is None:
            return {n: float(values[n]) for n in names}, {n: [float(per_rank[n])] for n in split}
        world = self.world_size
        slots = [0.0] * (world * len(split))
        for i, name in enumerate(split):
            slots[i * world + self.rank] = float(per_rank[name])
        total = self.sum([float(values[n]) for n in names] + slots)
        sums = dict(zip(names, total[: len(names)]))
        rest = total[len(names) :]
        return sums, {name: rest[i * world : (i + 1) * world] for i, name in enumerate(split)}

    def gather_all(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` (a collective), or None when the job cannot gather."""
        if not self.distributed or self.gather is None:
            return None
        return self.gather(obj)


def torch_distributed(local_rank: int, gpu_index: int | None = None, device: Any = None) -> Ranks:
    """A `Ranks` with ``torch.distributed``'s collectives (one process when it is not initialised).

    For loops without a Trainer (plain PyTorch, Fabric, Accelerate) and the HF adapter.

    Args:
        local_rank: This process's rank on its node.
        gpu_index: The visible GPU this rank trains on (None: none of its own).
        device: Where the collectives' tensors live (the process group's device; CPU for gloo).
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return Ranks(local_rank=local_rank, gpu_index=gpu_index)

    def total(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_rank(flag: bool) -> bool:
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    return Ranks(dist.get_rank(), local_rank, dist.get_world_size(), gpu_index, total, gather, any_rank)


@dataclass(frozen=True)
class JobSums:
    """One sum over the ranks.

    Args:
        totals: The job's totals (seconds stay this rank's).
        window: The job's window (GPU power keyed ``gpu{rank}`` in a multi-process job),
            or None when no window was summed.
        epoch_j: The job's energy of the epoch just ended (0 when none ended).
        breakdown: Per-rank window energy (``rank_j``, ``rank_gpu_j``) for the record.
        epoch_err: The bound of ``epoch_j``.
    """

    totals: RunTotals
    window: WindowFigures | None
    epoch_j: float
    breakdown: dict[str, list[float]] | None = None
    epoch_err: float = 0.0


def sum_over_ranks(
    ranks: Ranks, local: RunTotals, window: WindowFigures | None, epoch_j: float = 0.0, epoch_err: float = 0.0
) -> JobSums:
    """Sum this rank's figures with every other rank's (a collective all ranks reach alike).

    Bounds add linearly over ranks: each rank's is a worst case of its own devices."""
    win = window or WindowFigures(0, 0.0, 0.0)
    values = {f"energy_j.{k}": local.energy_j.get(k, 0.0) for k in DEVICE_KINDS}
    values |= {f"measured.{k}": float(k in local.energy_j) for k in DEVICE_KINDS}
    values |= {f"stage_j.{s}": local.stage_j.get(s, 0.0) for s in STAGES}
    values |= {"samples": local.samples, "tokens": local.tokens, "epoch_j": epoch_j}
    values |= {"co2e_kg": local.co2e_kg, "cost": local.cost}
    values |= {"window.joules": win.joules, "window.samples": win.samples, "window.tokens": win.tokens}
    values |= {f"energy_err.{k}": local.energy_err.get(k, 0.0) for k in DEVICE_KINDS}
    values |= {f"stage_err.{s}": local.stage_err.get(s, 0.0) for s in STAGES}
    values |= {"co2e_err": local.co2e_err, "cost_err": local.cost_err, "epoch_err": epoch_err}
    values |= {"window.joules_err": win.joules_err}
    per_rank = {"rank_j": win.joules, "rank_gpu_j": sum(win.gpu_j.values()), "rank_has_gpu": float(bool(win.gpu_j))}
    sums, by_rank = ranks.sum_by_name(values, per_rank)
    energy = {k: sums[f"energy_j.{k}"] for k in DEVICE_KINDS if sums[f"measured.{k}"] > 0}
    stages = {s: sums[f"stage_j.{s}"] for s in STAGES}
    totals = RunTotals(
        energy,
        stages,
        int(sums["samples"]),
        int(sums["tokens"]),
        local.fit_s,
        sums["co2e_kg"],
        sums["cost"],
        {k: sums[f"energy_err.{k}"] for k in energy},
        {s: sums[f"stage_err.{s}"] for s in STAGES},
        sums["co2e_err"],
        sums["cost_err"],
    )
    if window is None or not ranks.distributed:
        return JobSums(totals, window, sums["epoch_j"], epoch_err=sums["epoch_err"])
    has_gpu = by_rank["rank_has_gpu"]
    gpus = {f"gpu{r}": joules for r, joules in enumerate(by_rank["rank_gpu_j"]) if has_gpu[r]}
    job_window = WindowFigures(
        window.steps,
        window.seconds,
        sums["window.joules"],
        gpus,
        int(sums["window.samples"]),
        int(sums["window.tokens"]),
        sums["window.joules_err"],
    )
    breakdown = {"rank_j": by_rank["rank_j"], "rank_gpu_j": by_rank["rank_gpu_j"]}
    return JobSums(totals, job_window, sums["epoch_j"], breakdown, sums["epoch_err"])
