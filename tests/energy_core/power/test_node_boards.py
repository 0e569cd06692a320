"""A node's leader caps the boards its node's ranks train on, also where ``CUDA_VISIBLE_DEVICES`` is
set per rank (a scheduler binding one GPU to each task) and it sees only its own."""

from __future__ import annotations

import pytest

from energy_core import Ranks
from energy_core.accounting.ranks import node_boards
from energy_core.power.cap import PowerCapRun
from tests.helpers.shared_machine import PREVIOUS_MW, admin_limit, board


def leader(boards: tuple[str, ...]) -> Ranks:
    """Global and local rank 0 of a two-rank job, training on visible GPU 0, told its node's boards."""
    return Ranks(0, 0, 2, 0, sum=lambda values: values, any=lambda flag: flag, node_boards=boards)


def test_the_leader_caps_the_board_of_a_rank_it_does_not_see(sim_gpus, monkeypatch) -> None:
    # Each rank saw one GPU: the leader capped its own board only, and the other rank trained uncapped.
    sim = sim_gpus(board("GPU-1"), board("GPU-2"))
    admin_limit(sim)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cap = PowerCapRun(watts=300)
    notices = cap.start_on(leader(("nvidia:GPU-1", "nvidia:GPU-2")))
    try:
        assert [sim.limit_mw(g) for g in sim.gpus] == [300_000, 300_000]
        assert [(c["gpu"], c["uuid"]) for c in cap.caps()] == [(0, "GPU-1"), (None, "GPU-2")]
        assert cap.figures() == {"power/cap_w": 600.0}
        [in_force] = [n.text for n in notices if n.text.startswith("Power cap in force")]
        assert "GPU 0 300 W (was 350 W)" in in_force and "GPU GPU-2 300 W (was 350 W)" in in_force
    finally:
        restored = [n.text for n in cap.finish()]
    assert [sim.limit_mw(g) for g in sim.gpus] == [PREVIOUS_MW, PREVIOUS_MW]
    assert any("GPU GPU-2: power limit restored to 350 W" in text for text in restored)


def test_only_gpus_all_reaches_past_what_the_leader_sees(sim_gpus, monkeypatch) -> None:
    sim = sim_gpus(board("GPU-1"), board("GPU-2"))
    admin_limit(sim)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cap = PowerCapRun(watts=300, gpus=[0])  # indices name what this process sees: that board alone
    cap.start_on(leader(("nvidia:GPU-1", "nvidia:GPU-2")))
    try:
        assert [sim.limit_mw(g) for g in sim.gpus] == [300_000, PREVIOUS_MW]
    finally:
        cap.finish()
    unknown = PowerCapRun(watts=300)  # a board no library knows (another host's name) is left out
    unknown.start_on(leader(("nvidia:GPU-1", "nvidia:GPU-elsewhere", "amd:GPU-2")))
    try:
        assert [sim.limit_mw(g) for g in sim.gpus] == [300_000, PREVIOUS_MW]
    finally:
        unknown.finish()
    assert [sim.limit_mw(g) for g in sim.gpus] == [PREVIOUS_MW, PREVIOUS_MW]


@pytest.mark.parametrize(
    ("everyone", "rank", "expected"),
    [
        ([("a", "nvidia:G0"), ("a", "nvidia:G1"), ("b", "nvidia:G2")], 0, ("nvidia:G0", "nvidia:G1")),
        ([("a", "nvidia:G0"), ("a", "nvidia:G0"), ("a", None)], 2, ("nvidia:G0",)),  # each once; no board: none
        ([("a", "nvidia:G0"), ("b", "nvidia:G2")], 1, ("nvidia:G2",)),
    ],
)
def test_a_nodes_boards_are_those_its_ranks_name(everyone, rank, expected) -> None:
    assert node_boards(everyone, rank) == expected
