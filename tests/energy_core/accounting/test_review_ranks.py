"""Review of the multi-process rules (`energy_core.accounting.ranks`), in one process.

Two ranks run in two threads of this process with a collective faked by a barrier; the
simulated NVML is the host both see. Regressions for:

* a board that several ranks of one host train on (ranks sharing one GPU, MIG instances of one
  board) was measured by each of them: its energy counted once per rank;
* ``Ranks.agree`` without ``any`` decided rank by rank in a job that sums its figures.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch

from energy_core import J_PER_KWH, EnergyLoop, EnergyTracker, Ranks
from energy_core.accounting.ranks import board_of, launched, shared_board, torch_distributed
from tests.doubles.power_traces import Constant
from tests.doubles.sim_gpu import SimGpu
from tests.helpers.records import read_record


class FakeGroup:
    """The collectives of a job whose ranks are threads of this process."""

    def __init__(self, world: int) -> None:
        self.barrier = threading.Barrier(world, timeout=20)
        self.slots: list[Any] = [None] * world
        self.world = world

    def _exchange(self, rank: int, obj: Any) -> list[Any]:
        self.slots[rank] = obj
        self.barrier.wait()
        everyone = list(self.slots)
        self.barrier.wait()
        return everyone

    def ranks(self, rank: int, gpu_index: int | None) -> Ranks:
        def total(values: list[float]) -> list[float]:
            return [sum(column) for column in zip(*self._exchange(rank, values), strict=True)]

        def gather(obj: Any) -> list[Any]:
            return self._exchange(rank, obj)

        return Ranks(rank, rank, self.world, gpu_index, total, gather, lambda flag: total([float(flag)])[0] > 0)

    def run(self, rank: Callable[[int], Any]) -> list[Any]:
        """``rank(r)`` on a thread per rank; what each returned (a failure on any fails the test)."""
        results: list[Any] = [None] * self.world
        failures: list[BaseException] = []

        def body(r: int) -> None:
            try:
                results[r] = rank(r)
            except BaseException as err:  # noqa: BLE001 - reported by the test's thread
                failures.append(err)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not failures, failures
        return results


def run_job(group: FakeGroup, gpu_indices: list[int], seconds: float = 0.5) -> list[tuple[dict, float, list[str]]]:
    """Each rank (a thread) takes its part as the adapters do (`Ranks.share_boards`), fits for a while."""

    def rank(r: int) -> tuple[dict, float, list[str]]:
        tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02)
        tracker.join(group.ranks(r, gpu_indices[r]).share_boards())
        tracker.start_fit()
        time.sleep(seconds)
        metrics = tracker.end_fit(1)
        tracker.close()
        return metrics, tracker.fit_seconds(), [s.info.detail for s in tracker.meter.sources]

    return group.run(rank)


def test_two_ranks_training_on_one_board_count_it_once(sim_gpus) -> None:
    """Two processes per GPU (e.g. ``local_rank % device_count()`` with gloo): the first measures it."""
    sim_gpus(SimGpu("GPU-only", Constant(300.0), counter_period_s=0.005))
    (metrics, seconds, sources), (other, _, other_sources) = run_job(FakeGroup(2), [0, 0])
    assert len(sources) == 1 and other_sources == []
    assert metrics["energy/gpu_kwh"] * J_PER_KWH == pytest.approx(300.0 * seconds, rel=0.1)  # once, not twice
    assert other["energy/gpu_kwh"] == pytest.approx(metrics["energy/gpu_kwh"], rel=1e-9)
    assert "power/gpu1_w" not in metrics


def test_ranks_on_boards_of_their_own_still_measure_each(sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-a", Constant(200.0), counter_period_s=0.005), SimGpu("GPU-b", Constant(400.0)))
    (metrics, seconds, sources), (_, _, other_sources) = run_job(FakeGroup(2), [0, 1])
    assert len(sources) == len(other_sources) == 1
    assert metrics["energy/gpu_kwh"] * J_PER_KWH == pytest.approx(600.0 * seconds, rel=0.1)


def test_mig_instances_of_one_board_name_that_board(sim_gpus, monkeypatch) -> None:
    """Each rank given its own MIG instance sees it as GPU 0: both name the one board they share."""
    sim_gpus(SimGpu("GPU-board", mig_uuids=("MIG-a", "MIG-b")), SimGpu("GPU-other"))
    named = []
    for instance in ("MIG-a", "MIG-b"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", instance)
        named.append(board_of(0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert named == ["nvidia:GPU-board", "nvidia:GPU-board"] and board_of(0) == "nvidia:GPU-other"
    assert board_of(None) is None and board_of(5) is None


@pytest.mark.parametrize(
    ("everyone", "expected"),
    [
        ([("a", "g0"), ("a", "g0")], [False, True]),  # one board, one host: the first rank measures it
        ([("a", "g0"), ("b", "g0")], [False, False]),  # the same name on two hosts: two boards
        ([("a", "g0"), ("a", "g1"), ("a", "g0")], [False, False, True]),
        ([("a", None), ("a", None)], [False, False]),  # no board known: nothing is dropped
    ],
)
def test_a_shared_board_is_measured_by_the_first_rank_on_its_host(everyone, expected) -> None:
    assert [shared_board(everyone, rank) for rank in range(len(everyone))] == expected


def test_gpu_indices_of_a_rank_whose_board_another_measures() -> None:
    ranks = Ranks(1, 1, 2, 0, sum=lambda values: values, gpu_shared=True)
    assert ranks.gpu_indices == [] and Ranks(1, 1, 2, 0, sum=lambda values: values).gpu_indices == [0]


def test_torch_distributed_tells_a_rank_that_shares_its_board(sim_gpus, monkeypatch) -> None:
    """The HF adapter and loops take their part from `torch_distributed`: one gather says it all."""
    sim_gpus(SimGpu("GPU-only"))
    _fake_group(monkeypatch, 1)  # rank 0 is on the same host, on the same board
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    ranks = torch_distributed(gpu_index=0)
    assert (ranks.rank, ranks.local_rank, ranks.gpu_shared, ranks.gpu_indices) == (1, 1, True, [])
    assert ranks.node_boards == ("nvidia:GPU-only",)  # what a power cap's node leader caps


def test_lightning_ranks_tell_a_rank_that_shares_its_board(sim_gpus, monkeypatch) -> None:
    import torch.distributed as dist

    from lightning_energy.framework import ranks_of

    sim_gpus(SimGpu("GPU-only"))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)

    class Strategy:
        root_device = torch.device("cuda", 0)

    class Trainer:
        world_size, global_rank, local_rank, strategy = 2, 1, 1, Strategy()

    def gather_both(gathered: list, obj: Any, group: Any = None) -> None:
        gathered[:] = [(socket.gethostname(), "", "nvidia:GPU-only", (4242, 1.0)), obj]  # rank 0: (pid, start)

    monkeypatch.setattr(dist, "all_gather_object", gather_both)
    ranks = ranks_of(Trainer())
    assert ranks.gpu_shared and ranks.gpu_indices == [] and ranks.node_boards == ("nvidia:GPU-only",)
    assert ranks.host_peers == ((4242, 1.0),)  # the other rank of its node, for the CPU estimate


def test_agree_without_any_still_agrees_through_the_sum() -> None:
    """A job that sums its figures (a `Ranks` given to ``EnergyLoop(ranks=...)`` with ``sum`` only)
    takes every decision alike: rank 0 sees rank 1's flag."""
    rank0 = Ranks(rank=0, world_size=2, sum=lambda values: [values[0] + 1.0])  # rank 1 says True
    assert rank0.agree(False) is True
    assert Ranks(rank=0, world_size=2, sum=lambda values: [values[0] + 0.0]).agree(False) is False


def _fake_group(monkeypatch, rank: int, everyone: list[tuple] | None = None) -> None:
    """``torch.distributed`` as a two-rank gloo job seen from ``rank``: every rank's gather object is
    ``everyone`` (None: each the same as this rank's)."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 2 if everyone is None else len(everyone))
    monkeypatch.setattr(dist, "get_rank", lambda group=None: rank)
    monkeypatch.setattr(dist, "get_backend", lambda group=None: "gloo")

    def all_gather_object(gathered: list, obj: Any, group: Any = None) -> None:
        gathered[:] = [obj] * len(gathered) if everyone is None else everyone

    monkeypatch.setattr(dist, "all_gather_object", all_gather_object)


def test_a_local_rank_every_rank_of_a_node_inherited_is_not_taken(monkeypatch) -> None:
    """``mp.spawn``'s children of a process torchrun started all carry its ``LOCAL_RANK=0``: were it
    taken, each would measure the node's CPU, DRAM and GPUs, and the node would count N times."""
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("GROUP_RANK", "0")
    seen = []
    for rank in (0, 1):
        _fake_group(monkeypatch, rank)
        seen.append(torch_distributed(gpu_index=None))
    assert [(r.local_rank, r.node_devices, r.gpu_indices) for r in seen] == [(0, True, None), (1, False, [])]


def test_two_torchrun_nodes_on_one_host_keep_their_local_ranks(monkeypatch) -> None:
    host = socket.gethostname()
    process = {("0", 0): (100, 5.0), ("0", 1): (101, 5.0), ("1", 0): (110, 5.0), ("1", 1): (111, 5.0)}  # (pid, start)
    everyone = [(host, node, local, None, process[node, local]) for node in ("0", "1") for local in (0, 1)]
    seen = []
    for rank in range(4):
        _fake_group(monkeypatch, rank, everyone)
        seen.append(torch_distributed(gpu_index=None))
    assert [r.local_rank for r in seen] == [0, 1, 0, 1]
    # one CPU package: measured by the host's first rank alone (before, by each node's local rank 0: twice), which
    # estimates the other three ranks' CPU time with its own
    assert [r.node_devices for r in seen] == [True, False, False, False]
    assert seen[0].host_peers == ((101, 5.0), (110, 5.0), (111, 5.0))
    assert [r.leads_node for r in seen] == [True, False, True, False]  # each node's leader still caps its boards


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"RANK": "1"}, (0, 1, None)),  # a RANK left in the shell: no launch, rank 0 writes the record
        ({"RANK": "4", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}, (0, 4, 0)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4, 1)),
        ({"RANK": "x", "WORLD_SIZE": "-2"}, (0, 1, None)),
    ],
)
def test_a_rank_past_the_world_size_is_no_launch(monkeypatch, env, expected) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert launched() == expected


def test_a_lone_process_with_a_rank_left_in_the_shell_writes_its_record(tmp_path, sim_gpus, monkeypatch) -> None:
    sim_gpus(SimGpu("GPU-a"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with EnergyLoop(devices=["gpu"], record_path=tmp_path / "energy.jsonl") as loop:
        loop.step()
    assert [line["type"] for line in read_record(tmp_path / "energy.jsonl")][-1] == "summary"


def test_a_fault_on_another_rank_is_in_the_summary_and_said_by_rank_zero(sim_gpus, tmp_path) -> None:
    """Rank 1's board lost mid-fit: its energy since was bridged (half the job's, here), but the summary rank 0
    wrote said no faults, 0 s unmeasured, and no message said anything: each rank's faults stayed its own."""
    lost = threading.Event()
    sim = sim_gpus(SimGpu("GPU-a", Constant(200.0), counter_period_s=0.005),
                   SimGpu("GPU-b", Constant(400.0), counter_period_s=0.005))  # fmt: skip
    check = sim._check

    def losing(gpu: Any) -> None:
        check(gpu)
        if lost.is_set() and gpu.uuid == "GPU-b":
            raise sim.lost()

    sim._check = losing
    group, record = FakeGroup(2), tmp_path / "energy.jsonl"

    def rank(r: int) -> list[str]:
        tracker = EnergyTracker(devices=["gpu"], sample_interval_s=0.02, record_path=record if r == 0 else None)
        tracker.join(group.ranks(r, r).share_boards())
        tracker.start_fit()
        time.sleep(0.2)
        if r == 1:
            lost.set()
        time.sleep(0.3)
        tracker.end_fit(1)
        tracker.close()
        return [notice.text for notice in tracker.pop_notices()]

    said = group.run(rank)
    [summary] = [line for line in read_record(record) if line["type"] == "summary"]
    assert list(summary["faults"]) == ["rank1/gpu1"] and summary["faults"]["rank1/gpu1"]["unmeasured_s"] > 0.1
    assert summary["unmeasured_s"] > 0.1 and summary["estimated_share"] > 0.1
    assert "GPU is lost" in summary["faults"]["rank1/gpu1"]["last_error"]
    assert [t for t in said[0] if t.startswith("Part of this run was not measured: rank1/gpu1")]
