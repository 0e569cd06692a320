"""The end-of-run summary (`energy_core.output.summary`): the record's fields, the quality warning, the console text.

What is tested: `summary_fields` (mean power, energy per sample and token, the energy-weighted
mean intensity, cost, the stages, the meter's gaps and faults, the share of the energy that is
estimated), `quality_notices` (one warning naming each device not measured for a while, or
none) and `summary_text` (the lines shown, and those left out when they have nothing to say).

Most tests hand `summary_fields` a stand-in for the meter with chosen faults, so every figure
is worked out here; one runs a real meter over a simulated GPU that is lost mid-run, on a
manual clock, to check that the meter's own fault report comes through.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from energy_core import J_PER_KWH, RunTotals
from energy_core.notices import Notice
from energy_core.output.summary import not_counted, quality_notices, summary_fields, summary_text
from energy_core.sampling.meter import EnergyMeter
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import ManualClock, SimGpu

CARBON = {"g_per_kwh": 400.0, "source": "given by the user", "pue": 1.2}
NO_STAGES = {"val": 0.0, "test": 0.0, "predict": 0.0}


@dataclass
class MeterView:
    """What `summary_fields` asks of a meter: its failed reads, its estimated sources, its faults, and
    which device kinds it was asked for and measures."""

    reads: dict[str, int] = field(default_factory=dict)
    estimated: list[str] = field(default_factory=list)
    faults: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured: tuple[str, ...] = ("gpu", "cpu", "dram")
    kinds: tuple[str, ...] = ("gpu", "cpu", "dram")
    explicit: bool = False
    node_devices: bool = True

    @property
    def sources(self) -> list[Any]:
        return [
            SimpleNamespace(info=SimpleNamespace(kind=kind, estimated=any(n.startswith(kind) for n in self.estimated)))
            for kind in self.measured
        ]

    def failed_reads(self) -> dict[str, int]:
        return self.reads

    def quality(self) -> dict[str, dict[str, Any]]:
        return self.faults


def fault(unmeasured_s: float, estimated_j: float, last_error: str = "", gaps: int = 1) -> dict[str, Any]:
    return {
        "gaps": gaps,
        "resets": 0,
        "glitches": 0,
        "unmeasured_s": unmeasured_s,
        "estimated_j": estimated_j,
        "last_error": last_error,
    }


def fields_of(metrics: dict[str, float], totals: RunTotals, meter: Any = None, **kwargs: Any) -> dict[str, Any]:
    stage_kwh = kwargs.pop("stage_kwh", NO_STAGES)
    carbon = kwargs.pop("carbon", CARBON)
    return summary_fields(metrics, totals, stage_kwh, carbon, meter or MeterView(), **kwargs)


# ----------------------------------------------------------------------------- fields
def test_the_fields_divide_the_final_energy_by_the_time_and_the_work() -> None:
    metrics = {"energy/total_kwh": 0.5, "carbon/co2e_kg": 0.12, "cost/total": 3.0}
    totals = RunTotals({"gpu": 1.0}, samples=1000, tokens=36_000, fit_s=900.0)  # energy from the metrics, not here
    stage_kwh = {"val": 0.01, "test": 0.0, "predict": 0.002}
    fields = fields_of(metrics, totals, stage_kwh=stage_kwh, currency="EUR")
    assert fields["metrics"] is metrics
    assert fields["seconds"] == 900.0
    assert fields["mean_power_w"] == pytest.approx(0.5 * J_PER_KWH / 900.0)  # 2000 W
    assert (fields["samples"], fields["tokens"]) == (1000, 36_000)
    assert fields["j_per_sample"] == pytest.approx(1800.0)
    assert fields["j_per_token"] == pytest.approx(50.0)
    assert fields["stage_kwh"] == stage_kwh
    assert fields["carbon"] == {**CARBON, "g_per_kwh": pytest.approx(1000 * 0.12 / (0.5 * 1.2))}  # 200 g/kWh
    assert fields["cost"] == {"total": 3.0, "currency": "EUR"}
    assert (fields["failed_reads"], fields["estimated"], fields["faults"]) == ({}, [], {})
    assert (fields["unmeasured_s"], fields["estimated_share"]) == (0.0, 0.0)


def test_a_run_without_time_work_or_energy_leaves_its_ratios_empty() -> None:
    fields = fields_of({"energy/total_kwh": 0.0, "carbon/co2e_kg": 0.0}, RunTotals())
    assert fields["mean_power_w"] is None
    assert fields["j_per_sample"] is None and fields["j_per_token"] is None
    assert fields["carbon"]["g_per_kwh"] == 400.0  # no energy to weigh by: the factor in force
    assert fields["estimated_share"] == 0.0
    assert fields["cost"] is None  # no price, no currency


def test_empty_metrics_count_as_no_energy() -> None:
    fields = fields_of({}, RunTotals(samples=4, fit_s=2.0))
    assert fields["mean_power_w"] == 0.0 and fields["j_per_sample"] == 0.0
    assert fields["carbon"]["g_per_kwh"] == 400.0


def test_only_the_three_stages_are_kept() -> None:
    fields = fields_of({}, RunTotals(), stage_kwh={"val": 1.0, "test": 2.0, "predict": 3.0, "train": 9.0})
    assert fields["stage_kwh"] == {"val": 1.0, "test": 2.0, "predict": 3.0}


def test_faults_give_the_longest_gap_and_the_share_of_the_energy_estimated() -> None:
    meter = MeterView(
        reads={"gpu0": 4, "gpu1": 2},
        estimated=["cpu"],
        faults={"gpu0": fault(3.5, 90_000.0, "NVMLError: GPU is lost"), "gpu1": fault(1.25, 90_000.0)},
    )
    fields = fields_of({"energy/total_kwh": 0.5}, RunTotals(fit_s=10.0), meter)
    assert fields["failed_reads"] == {"gpu0": 4, "gpu1": 2} and fields["estimated"] == ["cpu"]
    assert fields["unmeasured_s"] == 3.5
    assert fields["estimated_share"] == pytest.approx(180_000.0 / (0.5 * J_PER_KWH))  # 10 %


# ----------------------------------------------------------------------------- quality notices
def test_no_quality_warning_without_time_or_energy_unmeasured() -> None:
    meter = MeterView(reads={"gpu0": 3}, faults={"gpu0": fault(0.0, 0.0, "a glitch", gaps=3)})
    assert quality_notices(fields_of({"energy/total_kwh": 1.0}, RunTotals(), meter)) == []
    assert quality_notices(fields_of({"energy/total_kwh": 1.0}, RunTotals())) == []


def test_one_warning_names_every_device_not_measured_its_error_and_the_share_estimated() -> None:
    meter = MeterView(
        faults={
            "gpu0": fault(3.5, 90_000.0, "NVMLError: GPU is lost"),
            "gpu1": fault(0.0, 0.0),  # a glitch, nothing estimated: not named
            "gpu2": fault(12.0, 90_000.0),
        }
    )
    [notice] = quality_notices(fields_of({"energy/total_kwh": 0.5}, RunTotals(), meter))
    assert notice.level == "warn"
    assert "gpu0 3.5 s not measured (last error: NVMLError: GPU is lost); gpu2 12 s not measured." in notice.text
    assert "gpu1" not in notice.text
    assert "10.0% of the energy is estimated" in notice.text


# ----------------------------------------------------------------------------- console text
def test_the_console_text_gives_energy_co2e_cost_work_and_stages_in_units_that_fit() -> None:
    metrics = {
        "energy/total_kwh": 0.5,
        "energy/cpu_kwh": 0.1,
        "energy/gpu_kwh": 0.4,
        "carbon/co2e_kg": 0.12,
        "cost/total": 3.0,
    }
    totals = RunTotals(samples=1000, tokens=36_000, fit_s=900.0)
    stage_kwh = {"val": 0.01, "test": 0.0, "predict": 0.002}
    meter = MeterView(measured=("gpu", "cpu"), kinds=("gpu", "cpu"), explicit=True)
    fields = fields_of(metrics, totals, meter, stage_kwh=stage_kwh, currency="EUR")
    lines = summary_text(fields, estimated_kinds={"cpu"}).splitlines()
    assert lines[:5] == [
        "Energy: 500 Wh (partly estimated) over 15 min 00 s, mean 2 kW: cpu 100 Wh (estimated), gpu 400 Wh",
        "CO2e: 120 g at 200 g/kWh x PUE 1.2 (given by the user)",
        "Electricity cost: 3 EUR (PUE applied)",
        "Work: 1,000 samples, 1,800 J/sample; 36,000 tokens, 50 J/token",
        "Of which not training: validation 10 Wh, predict 2 Wh",
    ]
    assert lines[5].startswith("Estimated: cpu, a model (watts per busy thread x this process tree's CPU time)")
    assert "within a factor of about 2" in lines[5] and lines[5].endswith("(docs/cpu_estimate.md).")
    assert lines[6] == "Not counted: dram (devices= names gpu, cpu only)."
    assert len(lines) == 7


def test_the_console_text_leaves_out_what_the_run_did_not_have() -> None:
    fields = fields_of({}, RunTotals())
    assert summary_text(fields, estimated_kinds=set()).splitlines() == [
        "Energy: 0 J over 0 s [no device measured]",
        "CO2e: 0 kg at 400 g/kWh x PUE 1.2 (given by the user)",
    ]


def test_the_console_text_shows_samples_without_tokens() -> None:
    meter = MeterView(measured=("gpu",))
    fields = fields_of({"energy/total_kwh": 0.001, "energy/gpu_kwh": 0.001}, RunTotals(samples=36, fit_s=3.6), meter)
    lines = summary_text(fields, estimated_kinds=set()).splitlines()
    assert lines[0] == "Energy: 1 Wh over 3.6 s, mean 1 kW"  # one device: no breakdown to repeat it
    assert lines[2] == "Work: 36 samples, 100 J/sample"


def test_a_run_measured_only_by_an_estimate_says_so_on_its_total() -> None:
    meter = MeterView(measured=("cpu",), estimated=["cpu0"])
    metrics = {"energy/total_kwh": 78.9 / J_PER_KWH, "energy/cpu_kwh": 78.9 / J_PER_KWH, "carbon/co2e_kg": 1.3e-6}
    fields = fields_of(metrics, RunTotals(samples=49_152, fit_s=34.6), meter)
    lines = summary_text(fields, estimated_kinds={"cpu"}).splitlines()
    assert lines[0] == "Energy: 78.9 J (estimated) over 34.6 s, mean 2.28 W"
    assert lines[1].startswith("CO2e: 1.3 mg at ")
    assert lines[2] == "Work: 49,152 samples, 1.61 mJ/sample"
    assert lines[3].startswith("Estimated: cpu, ") and "rise on a loaded machine" in lines[3]
    assert lines[4].startswith("Not counted: dram (no readable RAPL DRAM domain on this machine")
    assert 'add "dram" to devices= for an estimate' in lines[4]


def test_the_console_text_reports_gaps_and_the_energy_bridged() -> None:
    meter = MeterView(reads={"gpu0": 7}, faults={"gpu0": fault(3.5, 180_000.0, "lost")})
    fields = fields_of({"energy/total_kwh": 0.5, "energy/gpu_kwh": 0.5}, RunTotals(fit_s=10.0), meter)
    lines = summary_text(fields, estimated_kinds=set()).splitlines()
    assert lines[-2:] == [
        "Failed reads (gaps): gpu0 7",
        "Not measured: up to 3.5 s; 10.0% of the energy is bridged at the last good power",
    ]


def test_not_counted_names_each_kind_left_out_and_why() -> None:
    assert not_counted(MeterView()) == {}
    assert not_counted(MeterView(measured=("gpu", "cpu"))) == {
        "dram": 'no readable RAPL DRAM domain on this machine (most VMs and AMD CPUs have none); add "dram" '
        "to devices= for an estimate from the resident memory"
    }
    assert not_counted(MeterView(measured=("gpu",), kinds=("gpu",), explicit=True)) == {
        "cpu": "devices= names gpu only",
        "dram": "devices= names gpu only",
    }
    assert not_counted(MeterView(measured=("cpu",), kinds=("gpu", "cpu"), explicit=True)) == {
        "gpu": "no GPU found",
        "dram": "devices= names gpu, cpu only",
    }
    assert not_counted(MeterView(measured=("cpu",))) == {"dram": not_counted(MeterView(measured=()))["dram"]}
    assert not_counted(MeterView(measured=("gpu",), node_devices=False)) == {}  # another rank measures the node


# ----------------------------------------------------------------------------- a real meter
def test_a_gpu_lost_mid_run_is_reported_by_the_meter_in_the_summary(sim_gpus) -> None:
    clock = ManualClock()
    sim_gpus(SimGpu("GPU-a", Constant(300.0), counter_period_s=1 / 64, fail_between=(1.0, 1e9)), clock=clock)
    meter = EnergyMeter(devices=["gpu"], sample_interval_s=60, clock=clock)
    meter.open()  # a reading at 0 s
    for _ in range(9):  # readings at 0.25 s ... 2.25 s: good until 0.75 s, lost from 1 s on (6 failed)
        clock.advance(0.25)
        meter.sampler.sample_once()
    [joules] = meter.joules(meter.mark())
    meter.close()  # one more failed reading, at 2.25 s
    measured_j, bridged_j = 300.0 * 0.75, 300.0 * 1.5  # bridged at the last good power from 0.75 s
    assert joules.tolist() == [measured_j + bridged_j]
    metrics = {"energy/total_kwh": float(joules.sum()) / J_PER_KWH, "energy/gpu_kwh": float(joules.sum()) / J_PER_KWH}
    fields = fields_of(metrics, RunTotals(fit_s=2.25), meter)
    assert fields["failed_reads"] == {"gpu0": 7}
    [gpu0] = fields["faults"].values()
    assert (gpu0["gaps"], gpu0["unmeasured_s"], gpu0["estimated_j"]) == (7, 1.5, bridged_j)
    assert "GPU is lost" in gpu0["last_error"]
    assert fields["unmeasured_s"] == 1.5
    assert fields["estimated_share"] == pytest.approx(bridged_j / (measured_j + bridged_j))  # 2/3
    [notice] = quality_notices(fields)
    assert notice == Notice("warn", notice.text) and "gpu0 1.5 s not measured" in notice.text
    assert "66.7% of the energy is estimated" in notice.text


def test_the_console_text_gives_the_totals_bound_as_a_share_and_the_record_in_joules() -> None:
    metrics = {"energy/total_kwh": 0.001, "energy/total_kwh_err": 0.000003, "energy/gpu_kwh": 0.001}
    fields = fields_of(metrics, RunTotals(samples=36, fit_s=3.6))
    assert fields["energy_j_err"] == pytest.approx(0.000003 * 3.6e6, rel=1e-12)
    lines = summary_text(fields, estimated_kinds=set()).splitlines()
    assert lines[0].startswith("Energy: 1 Wh ± 0.3 % over 3.6 s")  # the unit that fits, then how exact


@pytest.mark.parametrize(
    ("gpu_j", "gpu_err_j", "seconds", "shown"),
    [
        (0.0, 140.0, 0.0179, "Energy: 0 J ± 140 J over 0.0179 s"),  # no counter update yet: "mean 0 W" before
        (29.3, 174.6, 0.0483, "Energy: 29.3 J ± 175 J over 0.0483 s"),  # one whole update: "mean 607 W" on 300 W
        (50.0, 50.0, 0.2, "Energy: 50 J ± 50 J over 0.2 s"),  # a bound as wide as the figure: nothing left
    ],
)
def test_a_run_shorter_than_its_readings_resolve_has_no_mean_power_or_energy_per_sample(
    gpu_j: float, gpu_err_j: float, seconds: float, shown: str
) -> None:
    metrics = {
        "energy/total_kwh": gpu_j / J_PER_KWH,
        "energy/total_kwh_err": gpu_err_j / J_PER_KWH,
        "energy/gpu_kwh": gpu_j / J_PER_KWH,
        "energy/gpu_kwh_err": gpu_err_j / J_PER_KWH,
    }
    fields = fields_of(metrics, RunTotals(samples=8, tokens=96, fit_s=seconds), MeterView(measured=("gpu",)))
    assert (fields["mean_power_w"], fields["j_per_sample"], fields["j_per_token"]) == (None, None, None)
    assert fields["energy_j_err"] == pytest.approx(gpu_err_j)  # the total keeps its bound
    lines = summary_text(fields, estimated_kinds=set()).splitlines()
    assert lines[0] == shown + "; the readings' bound is as wide as their energy: no mean power, no energy per sample"
    assert lines[2] == "Work: 8 samples; 96 tokens"


def test_a_bound_narrower_than_the_readings_keeps_the_ratios() -> None:
    metrics = {"energy/total_kwh": 60.0 / J_PER_KWH, "energy/total_kwh_err": 59.0 / J_PER_KWH}
    metrics |= {"energy/gpu_kwh": 60.0 / J_PER_KWH, "energy/gpu_kwh_err": 59.0 / J_PER_KWH}
    fields = fields_of(metrics, RunTotals(samples=8, fit_s=0.2), MeterView(measured=("gpu",)))
    assert fields["mean_power_w"] == pytest.approx(300.0) and fields["j_per_sample"] == pytest.approx(7.5)
    assert summary_text(fields, estimated_kinds=set()).splitlines()[0] == "Energy: 60 J ± 98.3 % over 0.2 s, mean 300 W"


def test_an_estimate_keeps_its_mean_power_whatever_its_share_bound() -> None:
    # the CPU estimate's bound is 100% of it by design: a model's figure, not a reading too short to resolve
    joules = {"energy/cpu_kwh": 78.9 / J_PER_KWH, "energy/dram_kwh": 10.0 / J_PER_KWH}
    errors = {"energy/cpu_kwh_err": 78.9 / J_PER_KWH, "energy/dram_kwh_err": 40.0 / J_PER_KWH}
    metrics = {"energy/total_kwh": 88.9 / J_PER_KWH, "energy/total_kwh_err": 118.9 / J_PER_KWH, **joules, **errors}
    meter = MeterView(measured=("cpu", "dram"), estimated=["cpu0", "dram0"])
    fields = fields_of(metrics, RunTotals(samples=10, fit_s=34.6), meter)
    assert fields["mean_power_w"] == pytest.approx(88.9 / 34.6) and fields["j_per_sample"] == pytest.approx(8.89)
    line = summary_text(fields, estimated_kinds={"cpu", "dram"}).splitlines()[0]
    assert line.startswith("Energy: 88.9 J (estimated) ± 134 % over 34.6 s, mean 2.57 W: ")


@pytest.mark.parametrize(("now", "said"), [(900.0, " on average"), (519.5, "")])
def test_a_mean_intensity_is_said_to_be_one_where_it_changed(now: float, said: str) -> None:
    # "at 519.5 g/kWh (grid.csv from ...)": the series named never held 519.5, the energy-weighted mean of its
    # 100 and 900 g/kWh rows; the same after a resume under another fixed figure.
    metrics = {"energy/total_kwh": 1e-3, "carbon/co2e_kg": 1e-3 * 1.2 * 519.5e-3, "carbon/intensity_g_per_kwh": now}
    carbon = {"g_per_kwh": now, "source": "grid.csv from 2026-12-07T17:57:32+00:00", "pue": 1.2}
    lines = summary_text(fields_of(metrics, RunTotals(fit_s=3.6), carbon=carbon), estimated_kinds=set()).splitlines()
    assert lines[1] == f"CO2e: 623 mg at 519.5 g/kWh{said} x PUE 1.2 (grid.csv from 2026-12-07T17:57:32+00:00)"


def test_the_console_text_writes_out_control_characters_of_names_from_elsewhere() -> None:
    # The carbon source names the user's series file, a fault's last error is the driver's text: an escape
    # sequence in either (here: set the terminal's title) reached the terminal as a command.
    carbon = {**CARBON, "source": "grid\x1b]0;pwned\x07.csv from 2026-01-01T00:00:00+00:00"}
    faults = {"gpu0": fault(2.0, 100.0, last_error="NVML \x1b[2J lost")}
    fields = fields_of(
        {"energy/total_kwh": 1000 / J_PER_KWH}, RunTotals(fit_s=10.0), MeterView(faults=faults), carbon=carbon
    )
    text = summary_text(fields, estimated_kinds=set())
    assert "\x1b" not in text and "\x07" not in text
    assert "(grid\\x1b]0;pwned\\x07.csv from 2026-01-01T00:00:00+00:00)" in text.splitlines()[1]
    assert len(text.splitlines()) == len(text.split("\n"))  # the line breaks are kept
    (notice,) = quality_notices(fields)
    assert "\x1b" not in notice.text and "NVML \\x1b[2J lost" in notice.text
