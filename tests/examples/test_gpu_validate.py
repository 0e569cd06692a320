"""benchmarks/gpu_validate.py works before it meets a GPU: run on the CPU against the simulated NVML and amdsmi."""

from __future__ import annotations

import pytest

from benchmarks import gpu_validate
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.doubles.vendors import both_vendors

# Smoke runs of what ships beside the package: in the slow run (`python -m pytest -m slow`, .ci/run).
pytestmark = pytest.mark.slow

PERIOD_S = 0.02


def board(watts: float = 400.0) -> SimGpu:
    return SimGpu(
        "GPU-1",
        Constant(watts),
        counter_period_s=PERIOD_S,
        default_limit_mw=400_000,
        min_limit_mw=150_000,
        max_limit_mw=450_000,
    )


def test_without_a_gpu_it_says_so_and_exits_2(capsys) -> None:
    assert gpu_validate.main(["--device", "cpu"]) == 2  # no NVML library, no amdsmi (the tests' default)
    assert "no NVIDIA or AMD GPU to validate on here (NVML:" in capsys.readouterr().out
    if not gpu_validate.torch.cuda.is_available():
        assert gpu_validate.main([]) == 2
        assert "torch sees no GPU" in capsys.readouterr().out


def test_a_board_without_an_energy_counter_is_refused(sim_gpus, capsys) -> None:
    sim_gpus(SimGpu("GPU-1", energy_counter=False))
    assert gpu_validate.main(["--device", "cpu"]) == 2
    assert "has no energy counter to bracket with" in capsys.readouterr().out


@both_vendors
def test_epochs_agree_with_the_synchronised_bracket(sim_gpus, capsys) -> None:
    sim_gpus(board(300.0))
    rows = gpu_validate.validate_epochs(gpu_validate.find_gpu(), "cpu", epochs=3, steps=300)
    assert len(rows) == 3
    for row in rows:
        # both read the same counter: they may differ by its period at each end of the epoch
        # plus the sampler's interpolation inside one period (at most 3 periods at 300 W)
        assert row["ours"] == pytest.approx(row["bracket"], abs=3 * PERIOD_S * 300.0)
        assert row["bracket"] > 20 * PERIOD_S * 300.0  # epochs long enough for the bound to mean something
        assert row["zeus"] is None  # zeus is not in the test environment
    worst = gpu_validate.print_epochs(rows)
    expected = max(abs(100 * (r["ours"] - r["bracket"]) / r["bracket"]) for r in rows[1:])
    assert worst == pytest.approx(expected)
    assert "counter bracket" in capsys.readouterr().out


@both_vendors
def test_sweep_draws_the_capped_power_and_restores_the_limit(sim_gpus, capsys) -> None:
    gpu = board(400.0)
    sim = sim_gpus(gpu)
    rows = gpu_validate.sweep_caps(gpu_validate.find_gpu(), "cpu", steps=150, fractions=(1.0, 0.5, 0.3))
    assert "cap 30% skipped" in capsys.readouterr().out  # 120 W is below the board's 150 W minimum
    assert [(r["fraction"], r["cap_w"]) for r in rows] == [(1.0, 400.0), (0.5, 200.0)]
    for row, watts in zip(rows, (400.0, 200.0)):  # the simulated board draws min(demand, cap)
        seconds = row["ms_per_step"] * 150 / 1000
        assert row["watts"] == pytest.approx(watts, abs=2 * PERIOD_S * 400.0 / seconds)
        assert row["j_per_step"] == pytest.approx(row["watts"] * row["ms_per_step"] / 1000)
    assert [mw for _, mw in gpu.limit_history] == [400_000, 400_000, 200_000, 400_000]  # set, restored, ...
    assert sim.limit_mw(gpu) == 400_000
    gpu_validate.print_sweep(rows)
    half = capsys.readouterr().out.splitlines()[-1].split()
    assert half[:2] == ["50%", "200"]
    assert half[5] == f"{100 * (rows[1]['j_per_step'] / rows[0]['j_per_step'] - 1):+.1f}%"


@both_vendors
def test_sweep_without_permission_changes_nothing(sim_gpus) -> None:
    gpu = board()
    sim = sim_gpus(gpu, root=False)
    with pytest.raises(PermissionError):
        gpu_validate.sweep_caps(gpu_validate.find_gpu(), "cpu", steps=5)
    assert gpu.limit_history == [] and sim.limit_mw(gpu) == 400_000
