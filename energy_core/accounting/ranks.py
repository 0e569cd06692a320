"""Ranks: how one process takes part in a job, and the job's sums and decisions.

Every rule about multi-process jobs is here, once, for every framework adapter:

* each rank measures the GPU it trains on (a board that several ranks of a host train on, e.g.
  MIG instances of it, by the first of them only: `Ranks.share_boards`); CPU, DRAM and GPUs no
  rank trains on are node devices, measured by the node's local rank 0 only;
* global rank 0 writes the run record and carries a checkpoint's totals;
* each GPU has one name in the job, ``gpu{i}``, numbered by the rank that measures it
  (`job_gpus`), and its power is logged under that name;
* figures are summed over ranks by name (`Ranks.sum_by_name`, one collective; `sum_over_ranks`
  packs a rank's totals and window into that sum), and every decision is taken alike on
  every rank (`Ranks.agree`), at the steps where the framework logs or, where it logs no
  steps, every `UNLOGGED_DECIDE_EVERY` steps.

The adapters only translate their framework's view (Lightning's ``trainer``, HF's
``args``/``state``) into a `Ranks` and supply the collectives; loops take it from
``torch.distributed`` itself (`torch_distributed`). In a single process the defaults make
every sum the identity and every decision local.

Examples:
    >>> Ranks().sum_by_name({"joules": 2.0}, {"gpu_j": 1.5})
    ({'joules': 2.0}, {'gpu_j': [1.5]})
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from energy_core import checks
from energy_core.accounting.figures import STAGES, RunTotals, WindowFigures
from energy_core.devices import DEVICE_KINDS, visible_boards
from energy_core.devices.cpu_estimate import Process, this_process

UNLOGGED_DECIDE_EVERY = 50  # steps between a job's decisions (a collective each) where no step is logged


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
        gpu_shared: An earlier rank on this host measures the board ``gpu_index`` is (ranks that share
            one GPU, or MIG instances of one board: `shared_board`); this rank measures no GPU.
        node_boards: The boards the ranks of this host train on (`board_of`: vendor and UUID), from
            the same gather; a power cap's node leader caps them even where it does not see them
            (``CUDA_VISIBLE_DEVICES`` set per rank).
        host_peers: The other ranks on this rank's host (`this_process` of each), from the same
            gather: the CPU estimate counts their time with this rank's.
        host_first: Whether this rank is the first of its host's ranks in global order, from the
            same gather (None where none was made: the node's local rank 0 stands for it).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    gpu_index: int | None = None
    sum: Callable[[list[float]], list[float]] | None = None
    gather: Callable[[Any], list[Any]] | None = None
    any: Callable[[bool], bool] | None = None
    gpu_shared: bool = False
    node_boards: tuple[str, ...] = ()
    host_peers: tuple[Process, ...] = ()  # the other ranks on this rank's host (`this_process` of each)
    host_first: bool | None = None  # the first of its host's ranks in global order (None: not gathered)

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
            return [] if self.gpu_shared else [self.gpu_index]
        return None if self.local_rank == 0 else []

    @property
    def node_devices(self) -> bool:
        """Whether this rank measures its host's CPU and DRAM: the host's first rank (two launcher
        "nodes" on one host share one CPU, counted once)."""
        if not self.distributed:
            return True
        return self.local_rank == 0 if self.host_first is None else self.host_first

    @property
    def leads_node(self) -> bool:
        """Whether this rank acts for its node (power caps)."""
        return self.local_rank == 0

    @property
    def leads_job(self) -> bool:
        """Whether this rank writes the record and carries a checkpoint's totals."""
        return self.rank == 0

    def alone(self) -> Ranks:
        """This process on its own: its place and devices kept, its figures summed over no other process
        (no collective: work the other processes may not do, an evaluation one process runs by itself)."""
        return replace(self, world_size=1, sum=None, gather=None, any=None)

    def agree(self, flag: bool) -> bool:
        """True on every rank if True on any (a collective every rank must reach).

        Without ``any``, through ``sum``: a job that sums its figures never decides rank by rank.
        """
        if self.world_size > 1 and self.any is not None:
            return bool(self.any(bool(flag)))
        if self.distributed and self.sum is not None:
            return self.sum([1.0 if flag else 0.0])[0] > 0
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

    def share_boards(self) -> Ranks:
        """These ranks, told whether an earlier rank on this host measures this rank's board
        (`shared_board`: ranks that share one GPU, MIG instances of one board), so it is counted once.

        One gather, which every rank of a job that can gather reaches alike; else these ranks unchanged.
        """
        if not self.distributed or self.gather is None:
            return self
        everyone = self.gather((socket.gethostname(), node_of(), board_of(self.gpu_index), this_process()))
        return replace(self, **board_roles(everyone, self.rank))

    def gather_all(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` (a collective), or None when the job cannot gather."""
        if not self.distributed or self.gather is None:
            return None
        return self.gather(obj)


CURRENT = "current"  # torch_distributed's gpu_index: torch's current CUDA device, if CUDA is in use


def launched() -> tuple[int, int, int | None]:
    """(global rank, world size, local rank) as a launcher set them in the environment.

    ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are set by torchrun, ``accelerate launch``, Ray Train,
    Lightning's and Fabric's launchers; (0, 1, None) where a variable is unset or not a count. A
    rank that is not below the world size (``RANK`` left over in a shell, no ``WORLD_SIZE``) is no
    launch: rank 0, which writes the record.
    """

    def count(name: str) -> int | None:
        value = os.environ.get(name, "")
        return int(value) if value.isdigit() else None

    rank, world = count("RANK") or 0, count("WORLD_SIZE") or 1
    return (rank if rank < world else 0), world, count("LOCAL_RANK")


def as_launched() -> Ranks:
    """This process on its own, placed by its launcher's ``RANK`` and ``LOCAL_RANK``, with no collective:
    where one process may run a stage while the others wait, each measures alone and global rank 0
    alone writes the record."""
    rank, _, local = launched()
    return Ranks(rank=rank, local_rank=local or 0)


def torch_distributed(
    local_rank: int | None = None, gpu_index: int | str | None = CURRENT, device: Any = None
) -> Ranks:
    """This process's part in a job of ``torch.distributed``, with its collectives.

    The job's shape comes from one place, the default process group: its rank and size, and the
    local rank of each process from the same job (the launcher's ``LOCAL_RANK`` when every rank
    has one and no two ranks of one node share one, e.g. inherited by ``mp.spawn``'s children from an
    outer launch; else the ranks' order on their host, from one gather), and whether an earlier rank
    on the host trains on this rank's board (`Ranks.share_boards`). Without an initialised process
    group (or with one process) it is one process: the rank the launcher set, if any, still decides
    who writes the record and shows messages, and every process measures what it sees.

    For loops without a Trainer (plain PyTorch, Fabric, Accelerate), `EnergyLoop` without ``ranks=``
    and the HF adapter. Every rank calls it at the same point (it may gather).

    Args:
        local_rank: This process's rank on its node; None: found as above.
        gpu_index: The visible GPU this rank trains on; None: none of its own (its node's local rank 0
            then measures the node's GPUs, once); ``"current"``: torch's current CUDA device where torch
            has initialised CUDA, else None.
        device: Where the collectives' tensors live; None: the process group's (for NCCL, the device
            it was bound to, else torch's current CUDA device, which the rank sets with
            ``torch.cuda.set_device`` as torch's own object collectives need; else the CPU).

    Raises:
        TypeError, ValueError: naming the argument, for a value that is not a rank or GPU index.
    """
    import torch
    import torch.distributed as dist

    checks.integer("local_rank", local_rank, low=0, optional=True)
    if gpu_index == CURRENT:
        gpu_index = torch.cuda.current_device() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    elif gpu_index is not None and (isinstance(gpu_index, bool) or not isinstance(gpu_index, int) or gpu_index < 0):
        raise TypeError(f"gpu_index must be a visible GPU index >= 0, None or {CURRENT!r}, got {gpu_index!r}")
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        rank, _, env_local = launched()
        here = (env_local or 0) if local_rank is None else local_rank
        return Ranks(rank=rank, local_rank=here, gpu_index=gpu_index)
    if device is None and "nccl" in str(dist.get_backend()):
        # the group's own GPU (init_process_group(device_id=...)), else torch's current one, as
        # torch's object collectives take it: a rank calls torch.cuda.set_device for its GPU
        bound = getattr(dist.group.WORLD, "bound_device_id", None)
        device = bound if bound is not None else torch.device("cuda", torch.cuda.current_device())

    def total(values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return let_go(tensor).tolist()

    def gather(obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered

    def any_rank(flag: bool) -> bool:
        return total([1.0 if flag else 0.0])[0] > 0

    rank = dist.get_rank()
    everyone = gather((socket.gethostname(), node_of(), launched()[2], board_of(gpu_index), this_process()))
    if local_rank is None:
        places = [((host, node), local) for host, node, local, _, _ in everyone if local is not None]
        inherited = len(set(places)) < len(places)  # one LOCAL_RANK twice on one node: not the ranks' own
        local_rank = local_rank_among([(host, None if inherited else local) for host, _, local, _, _ in everyone], rank)
    boards = [(host, node, board, process) for host, node, _, board, process in everyone]
    return Ranks(rank, local_rank, dist.get_world_size(), gpu_index, total, gather, any_rank,
                 **board_roles(boards, rank))  # fmt: skip


RELEASE_WAIT_S = 1.0  # the most a collective waits for the backend's threads to let go of its tensor


def let_go(tensor: Any) -> Any:
    """``tensor``, once no thread of the collective backend holds it (waited for at most `RELEASE_WAIT_S`).

    A gloo (or NCCL) thread drops its reference to a collective's tensor just after the caller
    was told the collective is done, and for a tensor made in Python that drop takes the GIL.
    Where it comes as the interpreter exits, the thread is ended inside a C++ destructor and the
    process aborts ("terminate called without an active exception"); where the process group is
    being destroyed with the GIL held (DDP's reducer at exit), the exit waits forever. The
    library's last collective comes just before the training script ends, so each waits here,
    GIL released, until its tensor is this thread's alone: microseconds, at window ends only.
    """
    deadline = time.monotonic() + RELEASE_WAIT_S
    while getattr(tensor, "_use_count", lambda: 1)() > 1 and time.monotonic() < deadline:
        time.sleep(0.0001)
    return tensor


def local_rank_among(everyone: Sequence[tuple[str, int | None]], rank: int) -> int:
    """This rank's local rank from every rank's (host, launcher's ``LOCAL_RANK`` or None).

    The launcher's variable where every rank has one (two torchrun "nodes" on one host keep theirs);
    else the rank's place among the ranks on its host, in global order. Every rank decides alike.
    """
    host, local = everyone[rank]
    if local is not None and all(other is not None for _, other in everyone):
        return local
    return [h for h, _ in everyone[:rank]].count(host)


def board_of(gpu_index: int | None) -> str | None:
    """The physical board of this process's visible GPU ``gpu_index``, named alike in every process
    of the host (vendor and board UUID: a MIG instance names its board), or None where none can say.
    """
    if gpu_index is None:
        return None
    try:
        boards = visible_boards()
    except Exception:  # noqa: BLE001 - no vendor library, or one that fails: the board stays unnamed
        return None
    return next((f"{b.vendor}:{b.uuid}" for b in boards if b.index == gpu_index), None)


def board_roles(everyone: Sequence[tuple[str, str, str | None, Process]], rank: int) -> dict[str, Any]:
    """`Ranks`' ``gpu_shared``, ``node_boards``, ``host_peers`` and ``host_first`` for ``rank``, from every
    rank's (host, `node_of`, `board_of`, `this_process`): the one gather a job makes at setup, read the
    same way wherever it is made."""
    boards = [(host, board) for host, _, board, _ in everyone]
    nodes = [((host, node), board) for host, node, board, _ in everyone]
    hosts = [host for host, _, _, _ in everyone]
    peers = tuple(everyone[r][3] for r, host in enumerate(hosts) if host == hosts[rank] and r != rank)
    return {
        "gpu_shared": shared_board(boards, rank),
        "node_boards": node_boards(nodes, rank),
        "host_peers": peers,
        "host_first": hosts.index(hosts[rank]) == rank,
    }


def shared_board(everyone: Sequence[tuple[str, str | None]], rank: int) -> bool:
    """Whether an earlier rank on this rank's host trains on the same board (`board_of`), from every
    rank's (host, board): that rank measures it, this one none, so the board is counted once.
    """
    host, board = everyone[rank]
    return board is not None and (host, board) in everyone[:rank]


def node_of() -> str:
    """This process's node in the launch (torchrun's ``GROUP_RANK``, Lightning's ``NODE_RANK``), or ""
    where no launcher says: two "nodes" on one host (a test on loopback) have a node leader each."""
    return os.environ.get("GROUP_RANK") or os.environ.get("NODE_RANK") or ""


def node_boards(everyone: Sequence[tuple[tuple[str, str], str | None]], rank: int) -> tuple[str, ...]:
    """The boards the ranks of this rank's node train on (`board_of`), each once, in rank order, from
    every rank's ((host, `node_of`), board): what the node's leader caps, and no other node's."""
    node = everyone[rank][0]
    return tuple(dict.fromkeys(board for n, board in everyone if n == node and board is not None))


def job_gpus(ranks: Ranks, mine: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """The job's name of each GPU this rank measures, and the names of all the job's GPUs.

    A job numbers its boards by the rank that measures them, then in that rank's order: with one
    GPU per rank, ``gpu{r}`` is global rank r's; where ranks train on no GPU of their own, each
    node's local rank 0 measures its boards and the first node's are ``gpu0``... in visible order.
    In one process the names stay the visible indices. One sum over the ranks.

    Args:
        ranks: This process's part in the job.
        mine: The names of the GPUs this process measures, in its order.
    """
    if not ranks.distributed:
        return {name: name for name in mine}, list(mine)
    counts = [round(n) for n in ranks.sum_by_name({}, {"gpus": float(len(mine))})[1]["gpus"]]
    first = sum(counts[: ranks.rank])
    return {name: f"gpu{first + i}" for i, name in enumerate(mine)}, [f"gpu{i}" for i in range(sum(counts))]


@dataclass(frozen=True)
class JobSums:
    """One sum over the ranks.

    Args:
        totals: The job's totals (its seconds global rank 0's, as the window's).
        window: The job's window (each GPU under its job-wide name, `job_gpus`), or None when
            no window was summed.
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
    ranks: Ranks,
    local: RunTotals,
    window: WindowFigures | None,
    epoch_j: float = 0.0,
    gpus: Sequence[str] = (),
    epoch_err: float = 0.0,
) -> JobSums:
    """Sum this rank's figures with every other rank's (a collective all ranks reach alike).

    ``gpus``: the names of all the job's GPUs (`job_gpus`); this rank's window keys its own by them.
    Bounds add linearly over ranks: each rank's is a worst case of its own devices.
    """
    win = window or WindowFigures(0, 0.0, 0.0)
    values = {f"energy_j.{k}": local.energy_j.get(k, 0.0) for k in DEVICE_KINDS}
    values |= {f"measured.{k}": float(k in local.energy_j) for k in DEVICE_KINDS}
    values |= {f"stage_j.{s}": local.stage_j.get(s, 0.0) for s in STAGES}
    values |= {"samples": local.samples, "tokens": local.tokens, "epoch_j": epoch_j}
    values |= {"co2e_kg": local.co2e_kg, "cost": local.cost}
    values |= {"window.joules": win.joules, "window.samples": win.samples, "window.tokens": win.tokens}
    values |= {f"gpu_j.{name}": win.gpu_j.get(name, 0.0) for name in gpus}
    values |= {f"energy_err.{k}": local.energy_err.get(k, 0.0) for k in DEVICE_KINDS}
    values |= {f"stage_err.{s}": local.stage_err.get(s, 0.0) for s in STAGES}
    values |= {"co2e_err": local.co2e_err, "cost_err": local.cost_err, "epoch_err": epoch_err}
    values |= {"window.joules_err": win.joules_err}
    # the job's seconds are global rank 0's (the record's): each rank's clock marks its own moments, so rates
    # over them differed rank to rank by a few % where every rank holds the job's joules
    leader = 1.0 if ranks.leads_job else 0.0
    values |= {"leader.window_s": leader * win.seconds, "leader.fit_s": leader * local.fit_s}
    per_rank = {"rank_j": win.joules, "rank_gpu_j": sum(win.gpu_j.values())}
    sums, by_rank = ranks.sum_by_name(values, per_rank)
    energy = {k: sums[f"energy_j.{k}"] for k in DEVICE_KINDS if sums[f"measured.{k}"] > 0}
    stages = {s: sums[f"stage_j.{s}"] for s in STAGES}
    totals = RunTotals(
        energy,
        stages,
        int(sums["samples"]),
        int(sums["tokens"]),
        sums["leader.fit_s"] if ranks.distributed else local.fit_s,
        sums["co2e_kg"],
        sums["cost"],
        {k: sums[f"energy_err.{k}"] for k in energy},
        {s: sums[f"stage_err.{s}"] for s in STAGES},
        sums["co2e_err"],
        sums["cost_err"],
    )
    if window is None or not ranks.distributed:
        return JobSums(totals, window, sums["epoch_j"], epoch_err=sums["epoch_err"])
    job_window = WindowFigures(
        window.steps,
        sums["leader.window_s"],
        sums["window.joules"],
        {name: sums[f"gpu_j.{name}"] for name in gpus},
        int(sums["window.samples"]),
        int(sums["window.tokens"]),
        sums["window.joules_err"],
    )
    breakdown = {"rank_j": by_rank["rank_j"], "rank_gpu_j": by_rank["rank_gpu_j"]}
    return JobSums(totals, job_window, sums["epoch_j"], breakdown, sums["epoch_err"])
