"""What only AMD GPUs have: amdsmi's import and units, 32-bit wraparound, boards without a
counter, dual-die boards, ROCm's visible-device variables, and a machine with both vendors.

Behaviour shared with NVIDIA (totals, budgets, caps on every path) is tested for both
vendors where NVIDIA's is (``@both_vendors``).
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from energy_core import devices
from energy_core.devices import DeviceError, amd
from energy_core.devices.counter import WrappingCounter
from energy_core.devices.ledger import Ledger
from energy_core.sampling.sampler import Sampler
from tests.doubles import sim_amdsmi, sim_nvml
from tests.doubles.power_traces import Constant, Square
from tests.doubles.sim_amdsmi import RESOLUTION_UJ, AmdSmiLibraryException, SimAmdSmi
from tests.doubles.sim_gpu import ManualClock, SimGpu

COUNTS_J = RESOLUTION_UJ * 1e-6  # one count of the accumulator
WRAP_J = 2**32 * COUNTS_J  # a 32-bit accumulator wraps after this many joules (65.7 kJ)


def amd_gpus(monkeypatch, *gpus: SimGpu, **kwargs) -> SimAmdSmi:
    sim = SimAmdSmi(list(gpus), **kwargs)
    sim_amdsmi.install(monkeypatch, sim)
    return sim


def manual_sampler(monkeypatch, gpu: SimGpu, **kwargs) -> tuple[SimAmdSmi, Sampler, ManualClock]:
    clock = ManualClock()
    sim = amd_gpus(monkeypatch, gpu, clock=clock, **kwargs)
    sources, _ = amd.discover_gpus()
    sampler = Sampler(sources, 0.1, clock=clock)
    sampler.sample_once()
    return sim, sampler, clock


def run(sampler: Sampler, clock: ManualClock, seconds: float, every: float = 0.1) -> None:
    for _ in range(round(seconds / every)):
        clock.advance(every)
        sampler.sample_once()


def measured(sampler: Sampler, t0: float, t1: float) -> float:
    (start, _), (end, _) = sampler.buffer.energy_at([t0, t1])
    return float(end[0] - start[0])


def base_mj_for_counts(counts: int) -> int:
    """The simulated energy since driver load that puts the accumulator at ``counts``."""
    return round(counts * COUNTS_J * 1000) + 1


# ----------------------------------------------------------------------------- the binding
def test_amdsmi_that_cannot_load_rocm_is_absent_and_silent(tmp_path, monkeypatch, capsys) -> None:
    """Without ROCm, ``import amdsmi`` prints and raises KeyError: AMD is then simply not present."""
    package = tmp_path / "amdsmi"
    package.mkdir()
    (package / "__init__.py").write_text(
        "print('Unable to find libamd_smi.so library try installing amd-smi-lib')\n_libraries = {}\n"
        "amdsmi_init = _libraries['libamd_smi.so'].amdsmi_init\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    monkeypatch.setattr(amd, "LIBRARY", amd.Binding())
    assert amd.discover_gpus() == ([], [])  # no amdgpu driver either: not a word
    assert capsys.readouterr().out == ""
    with pytest.raises(DeviceError, match="amdsmi package or ROCm's libamd_smi.so is not installed"):
        amd.boards()
    assert amd.driver_version() is None and "amd" not in devices.drivers()


def test_an_amdgpu_driver_without_amdsmi_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    (tmp_path / "amdgpu").mkdir()
    monkeypatch.setattr(amd, "AMDGPU_MODULE", tmp_path / "amdgpu")
    sources, notices = devices.discover(["gpu"], explicit=True)
    assert sources == []
    (hint,) = [n for n in notices if "AMD" in n.text]
    assert hint.level == "warn" and "energy-callbacks[amd]" in hint.text  # asked for GPUs: a warning


def test_a_driver_that_is_not_loaded_is_one_line(monkeypatch) -> None:
    amd_gpus(monkeypatch, SimGpu("u-1"), library=False)
    sources, notices = amd.discover_gpus()
    assert sources == []
    assert [n.text for n in notices] == [
        "No AMD GPU measured (amdsmi: AMDSMI_STATUS_DRIVER_NOT_LOADED - Driver not loaded)."
    ]


def test_the_simulated_errors_read_like_the_bindings() -> None:
    err = AmdSmiLibraryException(-10)  # the library returns negative codes too: the binding takes abs()
    assert err.get_error_code() == 10 and str(err) == "Error code:\n\t10 | AMDSMI_STATUS_NO_PERM - Permission Denied"
    assert err.get_error_info(detailed=False) == "AMDSMI_STATUS_NO_PERM"
    assert RESOLUTION_UJ == pytest.approx(15.3) and RESOLUTION_UJ != 15.3  # a C float: 15.300000190734863


# ----------------------------------------------------------------------------- energy
def test_joules_are_counts_times_the_resolution(monkeypatch) -> None:
    gpu = SimGpu("u-1", Square(100.0, 500.0, 1.7), counter_period_s=0.001)
    sim, sampler, clock = manual_sampler(monkeypatch, gpu)
    assert sampler.sources[0].info.method == "amdsmi-energy-counter"
    t0 = clock()
    run(sampler, clock, 30.0)
    # the count is whole: at most one count lost at each end, plus a counter period at each end
    assert measured(sampler, t0, clock()) == pytest.approx(sim.exact_joules(gpu, t0, clock()), abs=2 * 0.001 * 500)


@pytest.mark.parametrize("legacy", [False, True], ids=["energy_accumulator", "power (before 6.2.1)"])
def test_a_32_bit_accumulator_wraps_and_no_energy_is_lost(monkeypatch, legacy) -> None:
    gpu = SimGpu("u-1", Constant(700.0), counter_bits=32, counter_period_s=0.02, max_limit_mw=700_000,
                 base_mj=base_mj_for_counts(2**32 - 10**6))  # fmt: skip
    sim, sampler, clock = manual_sampler(monkeypatch, gpu, legacy_keys=legacy)
    t0 = clock()
    run(sampler, clock, 200.0)  # 140 kJ: the counter passes 2**32 three times
    exact = sim.exact_joules(gpu, t0, clock())
    assert exact > 2 * WRAP_J
    assert measured(sampler, t0, clock()) == pytest.approx(exact, abs=2 * 0.02 * 700.0)
    ledger = sampler.ledgers[0]
    assert sampler.sources[0]._counter.wraps == 3 and ledger.resets == 0 and ledger.glitches == 0


def test_a_wrap_inside_a_long_gap_is_still_a_wrap(monkeypatch) -> None:
    """30 s without an answer at 300 W: 9 kJ, the counter wraps in between; the gap is then measured, not guessed."""
    gpu = SimGpu("u-1", Constant(300.0), counter_bits=32, fail_between=(5.0, 35.0),
                 base_mj=base_mj_for_counts(2**32 - round(6000.0 / COUNTS_J)))  # fmt: skip
    sim, sampler, clock = manual_sampler(monkeypatch, gpu)
    t0 = clock()
    run(sampler, clock, 40.0)
    ledger = sampler.ledgers[0]
    assert ledger.resets == 0 and sampler.sources[0]._counter.wraps == 1
    assert measured(sampler, t0, clock()) == pytest.approx(300.0 * 40.0, abs=2 * 0.02 * 300.0)
    assert ledger.estimated_j == pytest.approx(0.0, abs=1e-6)  # the counter's true energy replaced the bridge


@pytest.mark.parametrize("gap_s", [300.0, 660.0])
def test_a_gap_longer_than_one_wrap_at_full_power_is_unmeasured_not_counted(monkeypatch, gap_s) -> None:
    """No answer for 300 s (or 660 s) at 300 W: 90 kJ (198 kJ), more than one 65.7 kJ wrap. The
    board could draw 1,400 W (twice its 700 W limit), so after 47 s how many times the 32-bit
    accumulator went round is unknowable: the gap is bridged at the last good power and
    counted as estimated and unmeasured, never as measured."""
    gpu = SimGpu("u-1", Constant(300.0), counter_bits=32, fail_between=(5.0, 5.0 + gap_s))
    sim, sampler, clock = manual_sampler(monkeypatch, gpu)
    t0 = clock()
    run(sampler, clock, gap_s + 10.0)
    ledger = sampler.ledgers[0]
    exact = sim.exact_joules(gpu, t0, clock())
    assert measured(sampler, t0, clock()) == pytest.approx(exact, abs=2 * 0.02 * 300.0 + 0.01 * 300.0 * gap_s)
    assert ledger.unmeasured_s == pytest.approx(gap_s, abs=0.2)
    assert ledger.estimated_j == pytest.approx(300.0 * gap_s, rel=0.01)
    assert ledger.resets == 0  # not a driver reload: the counter is trusted again from the next reading
    t1 = clock()
    run(sampler, clock, 10.0)
    assert measured(sampler, t1, clock()) == pytest.approx(3000.0, abs=2 * 0.02 * 300.0)


def test_a_driver_reload_on_a_32_bit_counter_is_a_reset_not_a_wrap(monkeypatch) -> None:
    gpu = SimGpu("u-1", Constant(300.0), counter_bits=32, reset_at=5.0)
    sim, sampler, clock = manual_sampler(monkeypatch, gpu)
    t0 = clock()
    run(sampler, clock, 10.0)
    ledger = sampler.ledgers[0]
    assert ledger.resets == 1 and sampler.sources[0]._counter.wraps == 0
    assert measured(sampler, t0, clock()) == pytest.approx(300.0 * 10.0, abs=2 * 0.02 * 300.0)


def test_wrap_or_reset_is_told_by_the_power_it_would_imply() -> None:
    counter = WrappingCounter(period=2**32, joules_per_count=COUNTS_J, max_power_w=1400.0)
    counter.update(2**32 - 1000, now=0.0)
    assert counter.update(500, now=0.1).joules == pytest.approx(1500 * COUNTS_J)  # 23 mJ in 0.1 s: a wrap
    assert counter.update(2**31, now=0.2).joules > 0  # forward: counted
    assert counter.update(10, now=0.3).joules < 1.0  # 32.9 kJ in 0.1 s is no wrap: a reset, passed on
    assert (counter.wraps, counter.resets, counter.breaks) == (1, 1, 0)
    # 1,400 W could draw a whole wrap (65.7 kJ) in 46.9 s: up to there a count is continuous, beyond it is not
    assert counter.update(20, now=0.3 + WRAP_J / 1400.0 - 0.2).continuous
    assert not counter.update(30, now=0.3 + 2 * WRAP_J / 1400.0).continuous
    assert (counter.wraps, counter.resets, counter.breaks) == (1, 1, 1)
    wide = WrappingCounter(period=2**32, joules_per_count=COUNTS_J, max_power_w=1400.0)
    wide.update(2**40, now=0.0)  # a 64-bit count: never wraps at 2**32, whatever the time between readings
    assert wide.update(2**40 + 5, now=1000.0).continuous
    wide.update(5, now=1001.0)
    assert (wide.wraps, wide.resets, wide.breaks) == (0, 1, 0)


@pytest.mark.parametrize(
    ("counter", "instantaneous"),
    [("missing", True), ("UINT_MAX", False)],
    ids=["not-supported-current-power", "uint-max-average-power"],
)
def test_no_counter_means_polled_power_integrated(monkeypatch, counter, instantaneous) -> None:
    """A VM guest (NOT_SUPPORTED) or firmware that reports UINT_MAX: whole watts, integrated."""
    gpu = SimGpu("u-1", Square(120.0, 260.0, 2.0), energy_counter=counter != "missing",
                 power_average_s=0 if instantaneous else 1.0)  # fmt: skip
    override = {"u-1": 2**32 - 1} if counter == "UINT_MAX" else None
    clock = ManualClock()
    sim = amd_gpus(monkeypatch, gpu, clock=clock, counter_override=override)
    clock.advance(1.0)  # the board has been on for a second: its 1 s average is defined
    sources, notices = amd.discover_gpus()
    field = "socket_power"  # present on 7.x: the board's own current or average power
    assert sources[0].info.method == "amdsmi-power-integration"
    assert [n.text for n in notices] == [
        f"GPU 0 (u-1) has no usable energy counter: integrating its polled power ({field})."
    ]
    sampler = Sampler(sources, 0.01, clock=clock)
    sampler.sample_once()
    t0 = clock()
    run(sampler, clock, 10.0, every=0.01)
    # a 1 s average lags by half a second: over whole periods of the square wave it averages out
    assert measured(sampler, t0, clock()) == pytest.approx(sim.exact_joules(gpu, t0, clock()), rel=0.01)


def test_the_second_die_of_a_dual_die_board_says_why_it_reads_zero(monkeypatch) -> None:
    primary = SimGpu("u-0", Constant(500.0))
    secondary = SimGpu("u-1", Constant(0.0), base_mj=0, power_average_s=0)  # no power, no energy of its own
    clock = ManualClock()
    amd_gpus(monkeypatch, primary, secondary, clock=clock)
    sources, notices = amd.discover_gpus()
    assert [s.info.method for s in sources] == ["amdsmi-energy-counter", "amdsmi-power-integration"]
    assert "second die of a dual-die MI250/MI250X" in notices[0].text and "GPU 1 (u-1)" in notices[0].text
    sampler = Sampler(sources, 0.1, clock=clock)
    sampler.sample_once()
    t0 = clock()
    run(sampler, clock, 5.0)
    (start, _), (end, _) = sampler.buffer.energy_at([t0, clock()])
    assert list(end - start) == pytest.approx([2500.0, 0.0], abs=2 * 0.02 * 500.0)


def test_a_lost_board_is_a_clean_device_error(monkeypatch) -> None:
    gpu = SimGpu("u-1", fail_between=(1.0, 2.0))
    clock = ManualClock()
    amd_gpus(monkeypatch, gpu, clock=clock)
    (source,), _ = amd.discover_gpus()
    ledger = Ledger(source)
    ledger.update(clock())
    clock.advance(1.5)
    ledger.update(clock())
    assert ledger.last_error == "DeviceError: amdsmi: AMDSMI_STATUS_IO - I/O Error"


# ----------------------------------------------------------------------------- which GPUs a process sees
def three(monkeypatch) -> SimAmdSmi:
    return amd_gpus(monkeypatch, SimGpu("u-a"), SimGpu("u-b"), SimGpu("u-c"))


def seen(**kwargs) -> list[tuple[str, str]]:
    sources, _ = amd.discover_gpus(**kwargs)
    return [(s.info.name, s.gpu.uuid) for s in sources]


def test_hip_visible_devices_renumbers(monkeypatch) -> None:
    sim = three(monkeypatch)
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2,0")
    assert seen() == [("gpu0", "u-c"), ("gpu1", "u-a")]
    assert seen(cuda_indices=[1]) == [("gpu1", "u-a")]  # one DDP rank's GPU
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", f"{sim.hip_uuid(sim.gpus[1])},bogus,0")  # stops at the first invalid
    assert seen() == [("gpu0", "u-b")]


def test_cuda_visible_devices_counts_when_hip_visible_devices_is_unset(monkeypatch) -> None:
    three(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert seen() == [("gpu0", "u-b")]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "2")  # HIP's own variable wins
    assert seen() == [("gpu0", "u-c")]


def test_rocr_visible_devices_hides_first_then_hip_renumbers(monkeypatch) -> None:
    three(monkeypatch)
    monkeypatch.setenv("ROCR_VISIBLE_DEVICES", "1,2")
    assert seen() == [("gpu0", "u-b"), ("gpu1", "u-c")]
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "1")  # an index among what ROCr left: physical 2
    assert seen() == [("gpu0", "u-c")]


def fake_rocm_torch(bus_ids: list[int]) -> SimpleNamespace:
    def props(index: int) -> SimpleNamespace:
        return SimpleNamespace(uuid="", pci_domain_id=0, pci_bus_id=bus_ids[index], pci_device_id=0)

    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: len(bus_ids), get_device_properties=props)
    return SimpleNamespace(version=SimpleNamespace(hip="6.4.43482", cuda=None), cuda=cuda)


def test_rocm_torch_is_matched_by_pci_address_whatever_the_variables_say(monkeypatch) -> None:
    sim = three(monkeypatch)
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "0")  # a child's variable torch did not follow
    buses = [int(sim.bdf(g).split(":")[1], 16) for g in sim.gpus]
    monkeypatch.setitem(sys.modules, "torch", fake_rocm_torch([buses[2], buses[1]]))
    assert seen() == [("gpu0", "u-c"), ("gpu1", "u-b")]


# ----------------------------------------------------------------------------- power caps
def test_caps_are_microwatts_in_amdsmi_and_milliwatts_above(monkeypatch) -> None:
    sim = amd_gpus(monkeypatch, SimGpu("u-1", default_limit_mw=500_000, min_limit_mw=200_000, max_limit_mw=560_000))
    (board,) = devices.visible_boards()
    assert board.vendor == "amd" and board.limits() == devices.LimitRange(200_000, 560_000, 500_000, 500_000)
    board.set_limit_mw(250_000)
    assert sim.amdsmi_get_power_cap_info(sim.gpus[0])["power_cap"] == 250_000_000 and board.limit_mw() == 250_000
    with pytest.raises(DeviceError, match="AMDSMI_STATUS_INVAL"):
        board.set_limit_mw(600_000)
    assert devices.board_by_uuid("u-1").limit_mw() == 250_000 and devices.board_by_uuid("u-9") is None


def test_without_root_the_cap_is_refused_with_how_to_grant_it(monkeypatch) -> None:
    amd_gpus(monkeypatch, SimGpu("u-1"), root=False)
    (board,) = devices.visible_boards()
    with pytest.raises(PermissionError, match=r"AMDSMI_STATUS_NO_PERM.*sudo amd-smi set --gpu <gpu> --power-cap"):
        board.set_limit_mw(300_000)


# ----------------------------------------------------------------------------- both vendors in one machine
def test_a_machine_with_both_vendors_measures_both(monkeypatch) -> None:
    sim_nvml.install(monkeypatch, sim_nvml.SimNvml([SimGpu("GPU-n")]))
    amd_gpus(monkeypatch, SimGpu("u-a"), SimGpu("u-b"))
    sources, _ = devices.discover(["gpu"], explicit=True)
    assert [(s.info.name, s.info.vendor) for s in sources] == [("gpu0", "nvidia"), ("gpu1", "amd"), ("gpu2", "amd")]
    assert devices.drivers() == {"nvidia": "580.159.04", "amd": "ROCm 6.4.1, amdgpu 6.12.12"}
    assert [(b.index, b.uuid) for b in devices.visible_boards()] == [(0, "GPU-n"), (1, "u-a"), (2, "u-b")]
    monkeypatch.setitem(sys.modules, "torch", fake_rocm_torch([0xC1, 0xC9]))  # torch computes on the AMD GPUs
    sources, _ = devices.discover(["gpu"], explicit=True)
    assert [(s.info.name, s.info.vendor) for s in sources] == [("gpu0", "amd"), ("gpu1", "amd"), ("gpu2", "nvidia")]
