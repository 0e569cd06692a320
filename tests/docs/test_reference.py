"""The reference pages agree with the code: metric keys, arguments, the run record, messages.

Each page is the one place a reader looks a fact up; these tests fail when the code moves and
the page does not.
"""

from __future__ import annotations

import inspect
import json
import re
import time
from pathlib import Path

import pytest
import torch

from energy_core import BudgetRule, EnergyLoop, MeasureOptions, PowerCapRun, TargetRule, TimeShiftRun
from energy_core.budget.run import BudgetArgs
from energy_core.output import keys
from energy_core.power.cap import CapArgs
from energy_core.shift.run import TimeShiftArgs
from energy_core.target.run import TargetArgs
from tests.doubles.power_traces import Constant
from tests.doubles.sim_nvml import SimGpu
from tests.helpers import ROOT

REFERENCE = ROOT / "docs" / "reference"


def table_rows(page: Path) -> list[list[str]]:
    """The cells of every Markdown table row of a page (header and rule rows left out)."""
    rows = []
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not re.match(r"^\|\s*-", line):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if cells[0] not in ("key", "argument", "`type`", "message begins with"):
                rows.append(cells)
    return rows


def ticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def test_metrics_page_lists_every_key_once_and_no_other() -> None:
    listed = [key for row in table_rows(REFERENCE / "metrics.md") for key in ticked(row[0])]
    assert len(listed) == len(set(listed)), "a key is listed twice"
    assert set(listed) == set(keys.all_keys(["gpu{i}"]))
    cadence = {row[0].strip("`"): row[2] for row in table_rows(REFERENCE / "metrics.md")}
    for key in keys.WINDOW_KEYS:
        assert cadence[key].startswith("window"), key
    for key in (keys.TOTAL_KWH, keys.CO2E_KG, keys.COST):
        assert cadence[key] == "cumulative", key


def documented_arguments(section: str) -> dict[str, str]:
    """argument -> default, from the table under the ``## section`` heading of arguments.md."""
    text = (REFERENCE / "arguments.md").read_text(encoding="utf-8")
    part = text.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in part.splitlines() if line.startswith("| `")]
    return {ticked(row.split(" | ")[0])[0]: row.split(" | ")[1].strip() for row in rows}


def default_text(value: object) -> str:
    return f"`{value!r}`".replace("'", '"')


def test_arguments_page_lists_every_argument_with_its_default() -> None:
    from hf_energy import EnergyCallback
    from lightning_energy import EnergyMonitor

    measure = documented_arguments("Measurement arguments")
    fields = {f.name: f.default for f in MeasureOptions.__dataclass_fields__.values() if f.init}
    assert set(measure) == set(fields) == set(inspect.signature(MeasureOptions).parameters)
    for name, default in fields.items():
        assert measure[name] == default_text(default), name

    own = documented_arguments("Lightning `EnergyMonitor`, HF `EnergyCallback`")
    for cls in (EnergyMonitor, EnergyCallback):
        for name, parameter in inspect.signature(cls).parameters.items():
            if parameter.kind is parameter.KEYWORD_ONLY:
                assert own[name] == default_text(parameter.default), (cls.__name__, name)

    budget = documented_arguments("Budgets")
    assert set(budget) == set(BudgetArgs.__annotations__) - set(fields) == set(inspect.signature(BudgetRule).parameters)
    for name, parameter in inspect.signature(BudgetRule).parameters.items():
        assert budget[name] == default_text(parameter.default), name

    target = documented_arguments("Targets")
    rule = inspect.signature(TargetRule).parameters
    assert set(target) == set(rule) and set(TargetArgs.__annotations__) - set(fields) == set(rule) - {
        "metric",
        "target",
    }
    for name, parameter in rule.items():
        assert target[name] == ("required" if parameter.default is parameter.empty else default_text(parameter.default))

    cap = documented_arguments("Power caps")
    assert set(cap) == set(CapArgs.__annotations__) == set(inspect.signature(PowerCapRun).parameters)
    for name, parameter in inspect.signature(PowerCapRun).parameters.items():
        assert cap[name] == default_text(parameter.default), name

    shift = documented_arguments("Time shifting")
    own = set(TimeShiftArgs.__annotations__) - set(fields)
    assert own == set(inspect.signature(TimeShiftRun).parameters) - {"options"}
    from lightning_energy import TimeShift

    lightning_only = {n for n, p in inspect.signature(TimeShift).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(shift) == own | lightning_only
    for name, parameter in inspect.signature(TimeShiftRun).parameters.items():
        if name != "options":
            expected = "required" if parameter.default is parameter.empty else default_text(parameter.default)
            assert shift[name] == expected, name
    for name in lightning_only:
        assert shift[name] == default_text(inspect.signature(TimeShift).parameters[name].default), name

    loop = documented_arguments("`EnergyLoop`")
    parameters = {n: p for n, p in inspect.signature(EnergyLoop).parameters.items() if p.kind is p.KEYWORD_ONLY}
    assert set(loop) == set(parameters)
    for name, parameter in parameters.items():
        if name != "notify":
            assert loop[name] == default_text(parameter.default), name


def example_record(which: int = 0) -> list[dict]:
    """The lines of the page's ``which``-th JSON example."""
    text = (REFERENCE / "run-record.md").read_text(encoding="utf-8")
    block = text.split("```json\n")[1 + which].split("```", 1)[0]
    return [json.loads(line) for line in block.splitlines() if line.strip()]


def test_run_record_example_has_the_fields_the_code_writes(sim_gpus, tmp_path) -> None:
    """The page's example was made like this: a capped loop stopped by its budget, its
    validation loss watched by a target."""
    sim_gpus(SimGpu("GPU-1", Constant(300.0), counter_period_s=0.02))
    path = tmp_path / "energy.jsonl"
    cap, budget, target = (
        PowerCapRun(watts=350),
        BudgetRule(max_kwh=80 / 3.6e6),
        TargetRule("val_loss", 0.5, mode="min"),
    )
    loop = EnergyLoop(log_every_n_steps=5, country="FRA", record_path=str(path), sample_interval_s=0.02,
                      budget=budget, power_cap=cap, target=target, devices=["gpu"])  # fmt: skip
    with pytest.warns(UserWarning, match="Energy budget spent"), loop as energy:
        energy.start_epoch()
        for _ in range(200):
            time.sleep(0.03)
            energy.step({"input_ids": torch.ones(8, 16, dtype=torch.long)})
            if energy.should_stop:
                break
        with energy.stage("val"):
            time.sleep(0.05)
        energy.evaluated(0.42)
        energy.end_epoch()
    written = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        written.setdefault(entry["type"], set(entry))
    shown = example_record()
    assert {line["type"] for line in shown} == set(written)  # every line type the run wrote, and no other
    for line in shown:
        assert set(line) == written[line["type"]], line["type"]
    assert len({line["run"] for line in shown}) == 1
    table = {ticked(row[0])[0] for row in table_rows(REFERENCE / "run-record.md")}
    # the time shift's lines: the next test; a check line only where two instruments disagree
    # (tests/energy_core/devices/test_crosscheck.py)
    assert table == set(written) | {"shift", "check"}
    from energy_core.output import record

    assert table == {v for k, v in vars(record).items() if k.isupper() and isinstance(v, str) and k != "__doc__"}


def test_shift_lines_example_has_the_fields_the_code_writes(sim_gpus, monkeypatch, tmp_path) -> None:
    """The page's second example was made like this: the manual-clock job of tests/energy_core/shift, paused."""
    from tests.energy_core.shift.manual_job import STEPS, Job, deadline_in

    job = Job(sim_gpus, monkeypatch, tmp_path)
    loop = job.start(TimeShiftRun(deadline=deadline_in(6), mode="pause", idle_w=60.0))
    with loop:
        job.wait_first_reading()
        job.train(loop, STEPS)
    written: dict[str, set[str]] = {}
    for line in map(json.loads, job.record.read_text().splitlines()):
        if line["type"] == "shift":
            written.setdefault(line["event"], set(line))
    shown = example_record(1)
    assert [line["event"] for line in shown] == ["plan", "pause", "resume"]
    for line in shown:
        assert set(line) == written[line["event"]], line["event"]
    assert set(shown[0]["plan"]) == set(json.loads(job.record.read_text().splitlines()[-1])["time_shift"]["plan"])


def source_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for pkg in ("energy_core", "lightning_energy", "hf_energy")
                     for p in (ROOT / pkg).rglob("*.py"))  # fmt: skip


def test_every_message_quoted_is_in_the_code() -> None:
    code = source_text()
    quoted = [text for row in table_rows(REFERENCE / "messages.md") for text in ticked(row[0])]
    assert len(quoted) >= 25
    missing = [text for text in quoted if text not in code]
    assert missing == [], "docs/reference/messages.md quotes messages the code no longer has"
