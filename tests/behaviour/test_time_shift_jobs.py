"""TimeShift across processes: a requeue exits with 75, a restart at resume_at carries the plan on from
the checkpoint and completes it; a two-process (gloo) job's ranks pause together.

Child processes on a compressed grid (tests/scripts/time_shift_job.py); each waits out a few
dirty "hours" of 1.5-2 s, so these runs are in the slow set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.behaviour.test_distributed import free_port
from tests.helpers import ROOT
from tests.helpers.records import read_record
from tests.scripts.time_shift_job import DIRTY_HOURS, STEPS

pytestmark = pytest.mark.slow
SCRIPT = [sys.executable, "-m", "tests.scripts.time_shift_job"]


def launch(mode: str, out) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}  # fmt: skip
    return subprocess.run([*SCRIPT, mode, str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_requeue_exits_75_and_the_restart_completes_the_plan(tmp_path) -> None:
    hour_s = 1.5
    (tmp_path / "hour_s").write_text(str(hour_s))
    first = launch("requeue", tmp_path)
    assert first.returncode == 75, first.stderr[-3000:]
    assert "resume at" in first.stderr
    assert not (tmp_path / "rank0.json").exists()  # the fit did not end normally
    (requeue,) = [x for x in read_record(tmp_path / "energy.jsonl") if x.get("event") == "requeue"]
    start = float(requeue["plan"]["deadline"]) - 20 * hour_s
    clean = start + DIRTY_HOURS * hour_s
    assert clean - hour_s <= requeue["resume_at"] <= clean + 0.01
    assert (tmp_path / "time_shift.ckpt").is_file()
    time.sleep(max(0.0, requeue["resume_at"] - time.time()))  # the plain loop's wait (docs/guides/time-shifting.md)

    second = launch("requeue", tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    result = json.loads((tmp_path / "rank0.json").read_text())
    assert result["step"] == STEPS
    assert all(t >= requeue["resume_at"] for t in result["steps"])  # the second process trained after resume_at
    lines = read_record(tmp_path / "energy.jsonl")
    resumed = [x for x in lines if x["type"] == "shift" and x["event"] == "resume" and "away_s" in x]
    assert len(resumed) == 1 and resumed[0]["away_s"] >= requeue["resume_at"] - requeue["at"] - 0.01
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["status"] == "completed"
    assert summary["time"] < requeue["plan"]["deadline"]
    assert summary["time_shift"]["paused_s"] >= resumed[0]["away_s"]
    assert not (tmp_path / "time_shift.ckpt").exists()  # done: nothing waits to be resumed


@pytest.mark.timeout(300)
def test_the_ranks_of_a_ddp_job_pause_together(tmp_path) -> None:
    hour_s = 2.0
    (tmp_path / "hour_s").write_text(str(hour_s))
    done = launch("ddp", tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in ranks] == [STEPS, STEPS]
    gaps = []
    for rank in ranks:
        times = rank["steps"]
        index = max(range(1, len(times)), key=lambda i: times[i] - times[i - 1])
        gaps.append((index, times[index - 1], times[index]))
    (i0, a0, b0), (i1, a1, b1) = gaps
    assert i0 == i1  # the same step on both ranks
    # A pause begins at the first step end in the dirty hour, so it may be a step short of the hour.
    assert b0 - a0 > 0.9 * hour_s and b1 - a1 > 0.9 * hour_s
    assert min(b0, b1) - max(a0, a1) > 0.9 * min(b0 - a0, b1 - a1)  # the pauses overlap: together
    (pause,) = [x for x in read_record(tmp_path / "energy.jsonl") if x.get("event") == "pause"]
    assert pause["resume_at"] == pytest.approx(min(b0, b1), abs=0.5)
