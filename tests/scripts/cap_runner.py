"""A Lightning training process with a power cap, for the tests of shared machines.

    python -m tests.scripts.cap_runner STATE STATUS [--watts W] [--strict] [--no-permission]
        [--as UID:GID] [--cap-sys-admin] [--stop STOP_FILE] [--steps N]

The simulated driver keeps its limits in STATE (persistence mode), so several processes
see one board, ``GPU-child``. STATUS (JSON, replaced atomically) says what the run saw:
written after the first step (``notices``: the cap's messages, ``cap_w``), every fifth
step (``steps``, ``cap_w``) and at the end (``finished``, ``steps``), or ``error`` when the
cap refused before the fit. ``--as`` drops to another user after the imports (see
`tests.scripts.other_user`), keeping CAP_SYS_ADMIN with ``--cap-sys-admin``;
``--no-permission`` makes the driver refuse limits, as for a normal user. The run trains
until STOP_FILE exists (default: 1000 epochs), or for N steps.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from energy_core.power import PowerCapRun
from lightning_energy import PowerCap
from tests.doubles.sim_nvml import SimGpu, SimNvml, install_for_process
from tests.helpers.lightning_models import make_module, regression_data
from tests.scripts.other_user import drop_privileges


class Status:
    """The STATUS file: what the run saw, replaced whole at each write."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {"pid": os.getpid(), "notices": [], "steps": 0}

    def write(self, **fields: Any) -> None:
        self.data.update(fields)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


class Watch(pl.Callback):
    """Reports the first step and every fifth; stops training once the stop file appears."""

    def __init__(self, status: Status, cap: PowerCap, stop: Path | None) -> None:
        self.status, self.cap, self.stop = status, cap, stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 1:
            self.status.write(uid=os.geteuid(), cap_w=self.cap.run.cap_w, steps=1)
        elif trainer.global_step % 5 == 0:
            self.status.write(steps=trainer.global_step, cap_w=self.cap.run.cap_w)
        if self.stop is not None and self.stop.exists():
            trainer.should_stop = True


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("state", type=Path)
    parser.add_argument("status", type=Path)
    parser.add_argument("--watts", type=float, default=250.0)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--no-permission", action="store_true")
    parser.add_argument("--as", dest="user", default=None)
    parser.add_argument("--cap-sys-admin", action="store_true")
    parser.add_argument("--stop", type=Path, default=None)
    parser.add_argument("--steps", type=int, default=-1)
    args = parser.parse_args(argv)
    if args.user:
        uid, gid = (int(x) for x in args.user.split(":"))
        drop_privileges(uid, gid, cap_sys_admin=args.cap_sys_admin)
    sim = SimNvml(
        [SimGpu("GPU-child", default_limit_mw=400_000, min_limit_mw=100_000, max_limit_mw=450_000)],
        root=not args.no_permission,
        state_file=args.state,
    )
    install_for_process(sim)
    status = Status(args.status)
    start_on = PowerCapRun.start_on

    def recorded_start_on(run: PowerCapRun, ranks: Any) -> Any:
        notices = start_on(run, ranks)
        status.write(notices=[n.text for n in notices])
        return notices

    PowerCapRun.start_on = recorded_start_on  # type: ignore[method-assign]
    cap = PowerCap(watts=args.watts, strict=args.strict)
    trainer = pl.Trainer(
        max_epochs=1000,
        max_steps=args.steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cap, Watch(status, cap, args.stop)],
    )
    try:
        trainer.fit(make_module(pl, step_sleep_s=0.01), regression_data(64))
    except Exception as err:  # noqa: BLE001 (the cap refused before the fit, strict: reported to the parent)
        status.write(error=type(err).__name__, message=str(err), steps=trainer.global_step)
        traceback.print_exc()
        return 3
    status.write(finished=True, steps=trainer.global_step)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
