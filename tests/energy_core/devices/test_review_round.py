"""Hostile hardware, round of review: each test failed before its fix.

* a long ``sample_interval_s`` left a RAPL zone unmeasured (every reading came after longer than
  one wrap at 5 kW: AMD Zen's 65.5 kJ in 13 s), so CPU energy read 0 J with a 0 J bound;
* the sampler's ledgers asked an NVIDIA source for its power accuracy, an NVML call on the
  thread that opens the sampler (the training thread), unbounded: a hung driver held it;
* one board NVML cannot open (fallen off the bus, denied to the job's cgroup) made every GPU
  unmeasured and every power cap impossible;
* the firmware's "no counter" value (UINT64_MAX) read once mid-run made a 32-bit AMD accumulator
  look 64-bit for good: its wraps were no longer undone, and a later long silence was counted
  whole wraps short, as measured;
* the dies of one package (``package-0-die-0``, ``package-0-die-1``) were both named ``cpu0``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pynvml
import pytest

from energy_core import devices
from energy_core.devices import amd, rapl
from energy_core.sampling.sampler import Sampler
from tests.doubles import sim_amdsmi
from tests.doubles.fake_rapl import FakeRapl
from tests.doubles.power_traces import Constant
from tests.doubles.sim_amdsmi import RESOLUTION_UJ, SimAmdSmi
from tests.doubles.sim_gpu import ARCH_AMPERE, ARCH_HOPPER, ARCH_VOLTA, ManualClock, SimGpu

AMD_ZEN_RANGE_UJ = 65_532_610_987  # an AMD package's max_energy_range_uj
INTEL_RANGE_UJ = 262_143_328_850


def _follow_the_sampler(sampler: Sampler, clock: ManualClock, tree: FakeRapl, watts: float, seconds: float) -> None:
    """Readings at the times the sampler's own thread would take them (`Sampler.next_interval`)."""
    end = clock() + seconds
    while clock() < end:
        clock.advance(sampler.next_interval())
        tree.set_energy("cpu", watts * (clock() - 1000.0))
        sampler.sample_once()


@pytest.mark.parametrize(
    ("range_uj", "interval_s"), [(AMD_ZEN_RANGE_UJ, 15.0), (AMD_ZEN_RANGE_UJ, 60.0), (INTEL_RANGE_UJ, 60.0)]
)
def test_a_long_sample_interval_still_sees_every_rapl_wrap(tmp_path, range_uj, interval_s) -> None:
    tree = FakeRapl(tmp_path / "powercap", max_range_uj=range_uj, dram=False)
    sources, _ = rapl.discover_rapl({"cpu"}, tree.root)
    clock = ManualClock(1000.0)
    sampler = Sampler(sources, interval_s, clock=clock)
    sampler.sample_once()
    t0 = clock()
    _follow_the_sampler(sampler, clock, tree, 400.0, 1200.0)  # 480 kJ: the zone wraps (7 times on AMD)
    (start, _), (end, _) = sampler.buffer.energy_at([t0, clock()])
    ledger = sampler.ledgers[0]
    assert end[0] - start[0] == pytest.approx(400.0 * (clock() - t0), rel=1e-6)
    assert ledger.unmeasured_s == 0.0 and ledger.estimated_j == 0.0 and sources[0]._counter.breaks == 0
    assert sources[0].wraps >= 1


def test_the_interval_asked_for_holds_where_no_counter_can_wrap(sim_gpus) -> None:
    sim_gpus(SimGpu("GPU-a"))  # NVML's counter is 64-bit mJ: no limit
    sources, _ = devices.discover(["gpu"], explicit=True)
    sampler = Sampler(sources, 30.0)
    assert all(24.0 <= sampler.next_interval() <= 36.0 for _ in range(50))


def test_opening_the_sampler_makes_no_driver_call(sim_gpus, monkeypatch) -> None:
    sim_gpus(SimGpu("GPU-a"))
    sources, _ = devices.discover(["gpu"], explicit=True)
    release, returned = threading.Event(), threading.Event()
    real = pynvml.nvmlDeviceGetArchitecture

    def hung(handle):  # the driver hangs from now on
        release.wait()
        return real(handle)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetArchitecture", hung)
    made: list[Sampler] = []

    def open_sampler() -> None:  # what EnergyMeter.open does on the training thread
        made.append(Sampler(sources, 0.1))
        returned.set()

    opener = threading.Thread(target=open_sampler, daemon=True)
    opener.start()
    try:
        assert returned.wait(60.0), "building the sampler waited for a hung driver call"
        assert not release.is_set()  # it returned while the call was still held
        check = made[0].ledgers[0].check
        assert check is not None and check.power.averaged  # Hopper: a 1 s average, known since discovery
    finally:
        release.set()
        opener.join(60.0)


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_GPU_IS_LOST, pynvml.NVML_ERROR_NO_PERMISSION])
@pytest.mark.parametrize("visible", ["GPU-bbbb", "0", None])
def test_a_board_nvml_cannot_open_leaves_the_others_measured(sim_gpus, monkeypatch, error, visible) -> None:
    sim_gpus(SimGpu("GPU-aaaa"), SimGpu("GPU-bbbb"))
    real = pynvml.nvmlDeviceGetHandleByIndex

    def by_index(index: int):  # NVML's documented errors for a board fallen off the bus or denied by cgroup
        if index == 0:
            raise pynvml.NVMLError(error)
        return real(index)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", by_index)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    sources, _ = devices.discover(["gpu"], explicit=True)
    assert [(s.info.name, s.info.detail.split()[-1]) for s in sources] == [("gpu0", "GPU-bbbb")]
    assert [board.uuid for board in devices.visible_boards()] == ["GPU-bbbb"]


def test_a_board_nvml_fails_on_otherwise_measures_no_board_rather_than_the_wrong_one(sim_gpus, monkeypatch) -> None:
    # Only a board CUDA leaves out too (lost, or denied to the job) may be skipped: skipping one for any
    # other error would shift CUDA_VISIBLE_DEVICES=0 (the failing board) onto the next one.
    sim_gpus(SimGpu("GPU-aaaa"), SimGpu("GPU-bbbb"))
    real = pynvml.nvmlDeviceGetHandleByIndex

    def by_index(index: int):
        if index == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)
        return real(index)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", by_index)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    sources, _ = devices.discover(["gpu"], explicit=True)
    assert sources == []


def _amd_sampler(monkeypatch, gpu: SimGpu) -> tuple[SimAmdSmi, Sampler, ManualClock]:
    clock = ManualClock()
    sim = SimAmdSmi([gpu], clock=clock)
    sim_amdsmi.install(monkeypatch, sim)
    sources, _ = amd.discover_gpus()
    sampler = Sampler(sources, 0.1, clock=clock)
    sampler.sample_once()
    return sim, sampler, clock


@pytest.mark.parametrize("no_count", [2**64 - 1, 2**32 - 1], ids=["UINT64_MAX", "UINT_MAX"])
def test_the_firmwares_no_counter_value_mid_run_is_a_gap(monkeypatch, no_count) -> None:
    """One such read at 1 s, then 300 s without an answer at 300 W (90 kJ, more than one 65.7 kJ wrap)."""
    counts_j = RESOLUTION_UJ * 1e-6
    gpu = SimGpu("u-1", Constant(300.0), counter_bits=32, fail_between=(5.0, 305.0),
                 base_mj=round(10**6 * counts_j * 1000) + 1)  # fmt: skip
    sim, sampler, clock = _amd_sampler(monkeypatch, gpu)
    t0 = clock()
    for step in range(6100):
        clock.advance(0.1)
        if step == 10:
            sim.counter_override["u-1"] = no_count
        elif step == 11:
            del sim.counter_override["u-1"]
        sampler.sample_once()
    (start, _), (end, _) = sampler.buffer.energy_at([t0, clock()])
    ledger = sampler.ledgers[0]
    assert ledger.last_error or ledger.gaps  # a failed read, not a figure
    source = sampler.sources[0]
    assert isinstance(source, amd.AmdGpuSource) and source._counter is not None
    assert source._counter.resets == 0 and ledger.resets == 0 and ledger.glitches == 0
    # the silence is bridged at 300 W and counted as estimated, never 66 kJ short as measured
    assert end[0] - start[0] == pytest.approx(sim.exact_joules(gpu, t0, clock()), abs=2 * 0.02 * 300.0 + 0.2 * 300.0)
    assert ledger.estimated_j == pytest.approx(300.0 * 300.0, rel=0.01)


def test_the_dies_of_one_package_get_one_name_each(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    for number, name in enumerate(["package-0-die-0", "package-0-die-1"]):
        zone = root / f"intel-rapl:{number}"
        for path, text in ((zone, name), (zone / f"intel-rapl:{number}:0", "dram")):
            path.mkdir(parents=True)
            (path / "name").write_text(text + "\n")
            (path / "max_energy_range_uj").write_text(f"{INTEL_RANGE_UJ}\n")
            (path / "energy_uj").write_text("100\n")
    sources, _ = rapl.discover_rapl({"cpu", "dram"}, root)
    names = sorted(s.info.name for s in sources)
    assert names == ["cpu0", "cpu1", "dram0", "dram1"]
    assert os.path.basename(str(sources[0].zone)) == "intel-rapl:0"


@pytest.mark.parametrize(
    ("arch", "capability", "averaged"),
    [
        (ARCH_AMPERE, (8, 0), False),  # GA100 (A100, A30): instantaneous, as FIELD_NOTES say
        (ARCH_AMPERE, (8, 6), True),  # GA10x (A40, RTX 30xx): a 1 s average
        (ARCH_HOPPER, (9, 0), True),
        (ARCH_VOLTA, (7, 0), False),
    ],
)
def test_an_a100s_power_is_read_as_instantaneous(sim_gpus, arch, capability, averaged) -> None:
    # Every Ampere board was taken to report a 1 s average; GA100's reading is instantaneous, whose
    # sampling error (not an average's lag) is what its bound and the cross-check must allow for.
    sim_gpus(SimGpu("GPU-a", Constant(300.0), arch=arch, compute_capability=capability))
    sources, _ = devices.nvidia.discover_gpus()
    power = sources[0].power_accuracy()
    assert power is not None and power.averaged is averaged
