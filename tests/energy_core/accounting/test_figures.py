"""Run totals and sums over ranks, in one process: a checkpoint round trip, and two ranks with a fake collective."""

from __future__ import annotations

import pytest

from energy_core import J_PER_KWH, Ranks, RunTotals
from energy_core.accounting.figures import WindowFigures
from energy_core.accounting.ranks import job_gpus, local_rank_among, sum_over_ranks


def test_run_totals_round_trip_through_a_checkpoint() -> None:
    totals = RunTotals({"gpu": 7200.0, "cpu": 360.0}, {"val": 36.0}, samples=64, tokens=1000, fit_s=12.5)
    state = totals.to_state()
    assert state["stage_j"] == {"val": 36.0, "test": 0.0, "predict": 0.0}
    again = RunTotals.from_state(state)
    assert again.total_kwh == pytest.approx(7560.0 / J_PER_KWH)
    assert (again.samples, again.tokens, again.fit_s) == (64, 1000, 12.5)
    assert (totals + again).energy_j == {"gpu": 14400.0, "cpu": 720.0}


def _two_ranks(local: list[RunTotals], windows: list[WindowFigures], gpus: tuple[str, ...] = ("gpu0", "gpu1")) -> list:
    """sum_over_ranks on ranks 0 and 1 of a two-process job, with a collective faked in one process."""
    vectors: dict[int, list[float]] = {}
    for rank in (0, 1):  # first pass: what each rank contributes
        ranks = Ranks(rank=rank, world_size=2, sum=lambda v, r=rank: vectors.setdefault(r, v))
        sum_over_ranks(ranks, local[rank], windows[rank], epoch_j=10.0 * (rank + 1), gpus=gpus)
    total = [a + b for a, b in zip(vectors[0], vectors[1])]
    return [
        sum_over_ranks(Ranks(rank=r, world_size=2, sum=lambda v: total), local[r], windows[r], 10.0 * (r + 1), gpus)
        for r in (0, 1)
    ]


def test_sums_over_ranks_pack_figures_by_name() -> None:
    local = [
        RunTotals({"gpu": 100.0, "cpu": 40.0}, samples=8, tokens=80, fit_s=2.0),
        RunTotals({"gpu": 300.0}, samples=8, fit_s=2.1),
    ]
    windows = [WindowFigures(5, 1.0, 50.0, {"gpu0": 30.0}, 8, 80), WindowFigures(5, 1.1, 90.0, {"gpu1": 90.0}, 8, 0)]
    rank0, rank1 = _two_ranks(local, windows)
    for job in (rank0, rank1):  # every rank holds the same job figures
        assert job.totals.energy_j == {"gpu": 400.0, "cpu": 40.0}  # CPU measured on rank 0 only
        assert (job.totals.samples, job.totals.tokens) == (16, 80)
        assert job.window.joules == 140.0 and job.window.gpu_j == {"gpu0": 30.0, "gpu1": 90.0}
        assert (job.window.samples, job.window.tokens) == (16, 80)
        assert job.epoch_j == 30.0
        assert job.breakdown == {"rank_j": [50.0, 90.0], "rank_gpu_j": [30.0, 90.0]}
    # the job's seconds are global rank 0's on every rank: rates over each rank's own clock marks differed
    assert (rank0.totals.fit_s, rank1.totals.fit_s) == (2.0, 2.0)
    assert (rank0.window.seconds, rank1.window.seconds) == (1.0, 1.0)


def test_gpus_are_summed_by_their_job_wide_names_whichever_rank_measures_them() -> None:
    """Ranks that train on no GPU: local rank 0 measures both boards of the node, rank 1 none."""
    local = [RunTotals({"gpu": 400.0, "cpu": 40.0}, fit_s=2.0), RunTotals({}, fit_s=2.0)]
    windows = [WindowFigures(5, 1.0, 90.0, {"gpu0": 30.0, "gpu1": 50.0}, 8), WindowFigures(5, 1.0, 0.0, {}, 8)]
    for job in _two_ranks(local, windows):
        assert job.window.gpu_j == {"gpu0": 30.0, "gpu1": 50.0}  # each board once, under its own name
        assert job.breakdown == {"rank_j": [90.0, 0.0], "rank_gpu_j": [80.0, 0.0]}


def test_one_process_sums_are_the_identity() -> None:
    local = RunTotals({"gpu": 100.0}, {"val": 5.0}, samples=8, fit_s=2.0)
    window = WindowFigures(5, 1.0, 50.0, {"gpu0": 20.0, "gpu1": 30.0}, 8, 0)
    job = sum_over_ranks(Ranks(), local, window, epoch_j=7.0)
    assert job.totals.energy_j == local.energy_j and job.totals.stage_j == {"val": 5.0, "test": 0.0, "predict": 0.0}
    assert (job.totals.samples, job.totals.fit_s) == (8, 2.0)
    assert job.window == window and job.epoch_j == 7.0 and job.breakdown is None


@pytest.mark.parametrize(
    ("everyone", "expected"),
    [
        ([("a", 0), ("a", 1), ("b", 0), ("b", 1)], [0, 1, 0, 1]),  # torchrun on two hosts
        ([("a", 0), ("a", 1), ("a", 0), ("a", 1)], [0, 1, 0, 1]),  # two torchrun "nodes" on one host keep theirs
        ([("a", None), ("a", None), ("b", None)], [0, 1, 0]),  # no LOCAL_RANK: the order on each host
        ([("a", 0), ("a", None), ("a", 0)], [0, 1, 2]),  # a rank without one: every rank decides alike
    ],
)
def test_local_ranks_come_from_one_source_for_every_rank(everyone, expected) -> None:
    assert [local_rank_among(everyone, rank) for rank in range(len(everyone))] == expected


def test_each_gpu_has_one_job_wide_name_whichever_rank_measures_it() -> None:
    """Rank 0 measures two boards (its node's, for ranks on CPUs), rank 1 none, rank 2 one."""
    mine = [["gpu0", "gpu1"], [], ["gpu0"]]
    every_count = [float(len(m)) for m in mine]  # what the one sum over the ranks returns to each
    names = [job_gpus(Ranks(rank=r, world_size=3, sum=lambda v: every_count), m) for r, m in enumerate(mine)]
    assert [n[0] for n in names] == [{"gpu0": "gpu0", "gpu1": "gpu1"}, {}, {"gpu0": "gpu2"}]
    assert all(n[1] == ["gpu0", "gpu1", "gpu2"] for n in names)
    assert job_gpus(Ranks(), ["gpu1", "gpu3"]) == ({"gpu1": "gpu1", "gpu3": "gpu3"}, ["gpu1", "gpu3"])  # one process


def test_a_collective_returns_once_gloo_has_let_go_of_its_tensor(tmp_path) -> None:
    """A one-process gloo group: after `let_go`, this thread holds the collective's tensor alone,
    so no gloo thread can drop it (and need the GIL) as the interpreter exits."""
    import torch
    import torch.distributed as dist

    from energy_core.accounting.ranks import let_go

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        for _ in range(50):
            tensor = torch.ones(4, dtype=torch.float64)
            dist.all_reduce(tensor)
            assert let_go(tensor)._use_count() == 1
    finally:
        dist.destroy_process_group()


def test_waiting_for_a_tensor_to_be_let_go_is_bounded(monkeypatch) -> None:
    """A backend that never lets go (a hung thread) delays the figures by RELEASE_WAIT_S at most."""
    import time

    from energy_core.accounting import ranks

    class Held:
        def _use_count(self) -> int:
            return 2

    monkeypatch.setattr(ranks, "RELEASE_WAIT_S", 0.05)
    began = time.monotonic()
    held = Held()
    assert ranks.let_go(held) is held
    assert 0.05 <= time.monotonic() - began < 1.0
