"""What a terminal shows at the end of a fit: the energy summary whole, after the final progress bar,
and no bar drawn again below it. Read from a real terminal (tmux), since rich draws its live bar only
on one."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest

from energy_core.output import units_text as show
from tests.helpers.records import read_record
from tests.helpers.shared_machine import DEADLINE_S, ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install tmux)"),
]
DONE = "TERMINAL-TEST-DONE"


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], check=True, capture_output=True, text=True).stdout


def test_the_summary_follows_the_final_progress_bar(tmp_path) -> None:
    socket = f"energy-test-{uuid.uuid4().hex[:8]}"
    record = tmp_path / "energy.jsonl"
    command = f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} -m tests.scripts.terminal_fit {record}; echo {DONE}"
    tmux(socket, "new-session", "-d", "-x", "100", "-y", "40", "sh", "-c", command + "; sleep 120")
    try:
        deadline = time.monotonic() + DEADLINE_S
        screen = ""
        while DONE not in screen.replace("echo " + DONE, ""):
            assert time.monotonic() < deadline, screen
            time.sleep(0.5)
            screen = tmux(socket, "capture-pane", "-p", "-J", "-S", "-400")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], check=False, capture_output=True)

    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    energy = next(i for i, line in enumerate(lines) if line.startswith("Energy: "))
    end = lines.index("FIT RETURNED")
    summary = lines[energy:end]
    # The bar is drawn before the summary and never again after it (rich redrew it at teardown).
    assert any(line.startswith("Epoch 1/1") for line in lines[:energy]), screen
    assert not any("Epoch" in line or "━" in line for line in summary), screen
    # The summary's lines are whole, one after another, with the figures of the run record's summary.
    assert [line.split(":")[0] for line in summary[:3]] == ["Energy", "CO2e", "Work"], screen
    assert summary[-3].startswith("Estimated: cpu, a model") and "(docs/cpu_estimate.md)" in summary[-3], screen
    assert summary[-2:] == [
        "Not counted: gpu (devices= names cpu only).",
        "Not counted: dram (devices= names cpu only).",
    ]
    final = read_record(record)[-1]["metrics"]
    total, bound = final["energy/total_kwh"], show.share(final["energy/total_kwh"], final["energy/total_kwh_err"])
    assert summary[0].startswith(f"Energy: {show.energy_kwh(total)} (estimated) {bound} over "), screen
