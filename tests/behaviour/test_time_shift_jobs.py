"""TimeShift across processes: a requeue exits with 75, a restart at resume_at carries the plan on from
the checkpoint and completes it; a two-process (gloo) job's ranks pause together.

Child processes on a compressed grid (tests/scripts/time_shift_job.py); each waits out a few
dirty "hours" of 1.5 s, so these runs are in the slow set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.behaviour.test_distributed import torchrun
from tests.helpers import ROOT
from tests.helpers.records import read_record
from tests.scripts.time_shift_job import DIRTY_HOURS, STEPS, grid_start

pytestmark = pytest.mark.slow
MODULE = ["-m", "tests.scripts.time_shift_job"]


def launch(mode: str, out) -> subprocess.CompletedProcess:
    """``ddp``: under torchrun, which starts both ranks at once (Lightning's own launcher would
    start rank 1 only once rank 0 is in ``fit``: its start-up, twice as long beside other work,
    would then eat the test's dirty hours)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = torchrun(*MODULE, mode, str(out)) if mode == "ddp" else [sys.executable, *MODULE, mode, str(out)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)


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
    # 4 dirty hours of 1.5 s: the job's start-up after rank 0 writes the grid (its first step about 0.5 s
    # later, quiet or beside two CPU-bound processes) ends inside them, so a pause is always planned.
    # Its length depends on that start-up, so it is checked against the job's own record, not the clock.
    hour_s = 1.5
    (tmp_path / "hour_s").write_text(str(hour_s))
    done = launch("ddp", tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text())["steps"] for r in (0, 1)]
    assert [len(times) for times in ranks] == [STEPS, STEPS]
    lines = read_record(tmp_path / "energy.jsonl")
    (pause,) = [x for x in lines if x.get("event") == "pause"]
    (resume,) = [x for x in lines if x.get("event") == "resume"]
    clean = grid_start(tmp_path) + DIRTY_HOURS * hour_s
    assert pause["resume_at"] == pytest.approx(clean, abs=1e-3)  # the work waits for the clean hours
    assert pause["at"] < clean and resume["step"] == pause["step"] > 0
    for times in ranks:  # every rank: nothing trained in the pause, the step after it at resume_at
        before, after = times[: pause["step"]], times[pause["step"] :]
        assert max(before) <= pause["at"] and min(after) >= pause["resume_at"]
        assert min(after) - max(before) >= pause["resume_at"] - pause["at"]
    assert resume["paused_s"] == pytest.approx(pause["resume_at"] - pause["at"], abs=0.5)
