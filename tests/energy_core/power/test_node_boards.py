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


A, B = ("a", ""), ("b", "")
TWO_NODES = [(("a", "0"), "nvidia:G0"), (("a", "0"), "nvidia:G1"), (("a", "1"), "nvidia:G2")]  # GROUP_RANK 0, 1


@pytest.mark.parametrize(
    ("everyone", "rank", "expected"),
    [
        ([(A, "nvidia:G0"), (A, "nvidia:G1"), (B, "nvidia:G2")], 0, ("nvidia:G0", "nvidia:G1")),
        ([(A, "nvidia:G0"), (A, "nvidia:G0"), (A, None)], 2, ("nvidia:G0",)),  # each once; no board: none
        ([(A, "nvidia:G0"), (B, "nvidia:G2")], 1, ("nvidia:G2",)),
        (TWO_NODES, 2, ("nvidia:G2",)),  # two torchrun "nodes" on one host: each leader its own node's boards
        (TWO_NODES, 0, ("nvidia:G0", "nvidia:G1")),
    ],
)
def test_a_nodes_boards_are_those_its_ranks_name(everyone, rank, expected) -> None:
    assert node_boards(everyone, rank) == expected


def test_two_nodes_on_one_host_each_name_only_their_own_boards(sim_gpus, monkeypatch) -> None:
    # torchrun --nnodes=2 on one host: node 1's leader capped node 0's boards too (a false "another run"
    # warning, or with strict=True a job that would not start), since boards were grouped by host alone.
    import socket

    from energy_core.accounting.ranks import torch_distributed
    from tests.energy_core.accounting.test_review_ranks import _fake_group

    sim_gpus(board("GPU-1"), board("GPU-2"), board("GPU-3"), board("GPU-4"))
    host = socket.gethostname()
    everyone = [(host, node, local, f"nvidia:GPU-{i + 1}", (100 + i, 5.0)) for i, (node, local) in
                enumerate([("0", 0), ("0", 1), ("1", 0), ("1", 1)])]  # fmt: skip
    seen = []
    for rank in range(4):
        _fake_group(monkeypatch, rank, everyone)
        monkeypatch.setenv("GROUP_RANK", everyone[rank][1])
        monkeypatch.setenv("LOCAL_RANK", str(everyone[rank][2]))
        seen.append(torch_distributed(gpu_index=None).node_boards)
    assert seen[0] == seen[1] == ("nvidia:GPU-1", "nvidia:GPU-2")
    assert seen[2] == seen[3] == ("nvidia:GPU-3", "nvidia:GPU-4")


def test_a_board_capped_by_its_uuid_reads_back_in_the_report(sim_gpus, monkeypatch, tmp_path, capsys) -> None:
    # Its record entry ("gpu": null) made the report call the whole power_cap line damaged and drop it.
    from tests.energy_core.report.test_review_round import RUN, cell, good, report

    sim = sim_gpus(board("GPU-1"), board("GPU-2"))
    admin_limit(sim)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    cap = PowerCapRun(watts=300)
    cap.start_on(leader(("nvidia:GPU-1", "nvidia:GPU-2")))
    caps = cap.caps()
    cap.finish()
    lines = good()
    lines.insert(1, {"type": "power_cap", "run": RUN, "time": 1_796_000_000.0, "event": "applied", "caps": caps})
    code, out, err = report(tmp_path, lines, capsys)
    assert code == 0 and "damaged" not in out + err
    assert cell(out, "power cap") == "GPU 0 300 W, GPU GPU-2 300 W"
