"""What recovery trusts, one owner per board, and strict runs that must not start uncapped.

In one process: two `PowerCapRun`s are two owners (each `PowerLimits` has its own
token), so the ownership rules run exactly as between two processes; the tests with
real second processes are in test_power_shared.py.
"""

from __future__ import annotations

import os
import socket

import pytest

from energy_core import devices
from energy_core.power import BoardBusyError, PowerCapError, PowerCapRun, PowerLimits, journal_path
from energy_core.power.journal_entry import process_start
from tests.helpers.lightning_models import flavour, make_module, regression_data
from tests.helpers.shared_machine import PREVIOUS_MW, admin_limit, board, journal_entries, limits_set, plant

pl = flavour("lightning.pytorch")
GONE = 2**30 + 7  # a pid no process has
HOST = socket.gethostname()


def left_capped(sim, mw: int = 250_000) -> dict:
    """The board as a killed run left it, and that run's entry."""
    sim._store_limit(sim.gpus[0], mw)
    return {"previous_mw": PREVIOUS_MW, "set_mw": mw, "pid": GONE, "host": HOST, "uid": os.geteuid()}


def test_a_valid_entry_of_a_gone_process_is_restored(sim) -> None:
    plant(**{"GPU-1": left_capped(sim)})
    assert PowerLimits().recover() == [
        f"Restored the power limit of GPU-1 to 350 W (left at 250 W by pid {GONE}, which is gone)."
    ]
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"previous_mw": 50_000}, "has previous_mw=50000, outside the board's range [100000, 450000] mW"),
        ({"set_mw": 460_000}, "has set_mw=460000, outside the board's range"),
        ({"uid": 4242}, "dropped the invalid entry 'GPU-1': it names uid 4242, not this journal's user"),
        ({"set_mw": 260_000}, f"limit changed since pid {GONE} set it; left as it is."),
    ],
)
def test_recovery_applies_only_entries_it_can_trust(sim, change, message) -> None:
    plant(**{"GPU-1": {**left_capped(sim), **change}})
    (said,) = PowerLimits().recover()
    assert message in said
    assert limits_set(sim) == [PREVIOUS_MW, 250_000] and journal_entries() == {}  # board left alone, entry gone


def test_entries_for_boards_not_on_this_host_are_dropped_and_other_hosts_kept(sim) -> None:
    gone = left_capped(sim)
    plant(**{"GPU-gone": gone, "GPU-1": {**gone, "host": "another-node"}})
    assert PowerLimits().recover() == [
        f"GPU-gone: no such GPU on this host; the journal entry of pid {GONE} is dropped."
    ]
    assert list(journal_entries()) == ["GPU-1"] and limits_set(sim) == [PREVIOUS_MW, 250_000]


def test_a_live_owner_is_left_alone_and_a_reused_pid_is_not_one(sim) -> None:
    me, started = os.getpid(), process_start(os.getpid())
    live = {**left_capped(sim), "pid": me, "start": started, "token": "other"}
    plant(**{"GPU-1": live})
    assert PowerLimits().recover() == [] and journal_entries()["GPU-1"]["pid"] == me
    if started is None:
        pytest.skip("no /proc start times here: a reused pid cannot be told apart")
    plant(**{"GPU-1": {**live, "start": started + 1}})  # same pid, another process: the writer is gone
    assert "Restored the power limit of GPU-1 to 350 W" in PowerLimits().recover()[0]
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW


@pytest.mark.parametrize("first_to_end", ["first", "second"])
def test_a_board_capped_by_a_live_run_is_not_capped_again(sim, first_to_end) -> None:
    first, second = PowerCapRun(watts=250), PowerCapRun(watts=300)
    first.start()
    notices = second.start()
    assert [n.text for n in notices] == [
        f"Already capped by another run on this host: GPU 0 (GPU-1) at 250 W by pid {os.getpid()}. This run "
        "does not change those limits: the cap stays in force, and the run that set it restores the limit "
        "in force before it."
    ]
    assert sim.limit_mw(sim.gpus[0]) == 250_000 and second.cap_w is None and second.caps() == []
    assert journal_entries()["GPU-1"]["previous_mw"] == PREVIOUS_MW  # the first run's entry, untouched
    if first_to_end == "first":
        first.finish()
        assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW
        second.finish()
    else:
        second.finish()
        assert sim.limit_mw(sim.gpus[0]) == 250_000  # the first run's cap is still in force
        first.finish()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}
    assert limits_set(sim) == [PREVIOUS_MW, 250_000, PREVIOUS_MW]  # the second run never set a limit


def test_strict_on_a_board_another_run_capped_raises_before_any_change(sim) -> None:
    first = PowerCapRun(watts=250)
    first.start()
    with pytest.raises(BoardBusyError, match=r"GPU 0 \(GPU-1\) at 250 W .* strict=True: the run does not start"):
        PowerCapRun(watts=300, strict=True).start()
    first.finish()
    assert limits_set(sim) == [PREVIOUS_MW, 250_000, PREVIOUS_MW]


def test_only_the_boards_another_run_holds_are_left(sim_gpus) -> None:
    sim = sim_gpus(board(), board("GPU-2"))
    admin_limit(sim)
    first, second = PowerCapRun(watts=250, gpus=[0]), PowerCapRun(watts=300)
    first.start()
    second.start()
    assert [sim.limit_mw(g) for g in sim.gpus] == [250_000, 300_000]
    assert [c["uuid"] for c in second.caps()] == ["GPU-2"]
    first.finish()
    second.finish()
    assert [sim.limit_mw(g) for g in sim.gpus] == [PREVIOUS_MW, PREVIOUS_MW]


def test_a_cap_left_by_a_gone_run_is_not_taken_for_the_limit_before(sim) -> None:
    plant(**{"GPU-1": left_capped(sim)})
    limits = PowerLimits()  # no recover() first: apply itself must not trust the board's 250 W
    (capped,) = limits.apply(devices.visible_boards(), 300, None)
    assert capped.previous_mw == PREVIOUS_MW and sim.limit_mw(sim.gpus[0]) == 300_000
    limits.restore()
    limits.guard.uninstall()
    assert sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW and journal_entries() == {}


def test_a_restore_that_interrupts_a_journal_transaction_does_not_wait_for_itself(sim) -> None:
    run = PowerCapRun(watts=250)
    run.start()
    with run.limits.journal.entries():  # as a signal handler arriving mid-transaction would
        messages = run.limits.restore()
    assert messages == ["GPU 0: power limit restored to 350 W."] and sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW
    assert journal_entries()["GPU-1"]["set_mw"] == 250_000  # the transaction it interrupted holds the lock
    run.finish()  # the next call drops the entry
    again = PowerCapRun(watts=300)
    assert again.start()[-1].text.startswith("Power cap in force") and again.finish()


def fit(tmp_path, cap):
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[cap],
    )
    trainer.fit(make_module(pl), regression_data(64))
    return trainer


@pytest.mark.parametrize("boards", [None, []], ids=["no-driver", "no-board"])
def test_strict_without_a_gpu_does_not_start_uncapped(tmp_path, sim_gpus, boards) -> None:
    from lightning_energy import PowerCap

    if boards is not None:
        sim_gpus(*boards)
    with pytest.raises(PowerCapError, match="strict=True: the run does not start uncapped"):
        fit(tmp_path, PowerCap(watts=250, strict=True))
    trainer = fit(tmp_path, PowerCap(watts=250))  # without strict: one message, uncapped
    assert trainer.global_step == 8


@pytest.mark.parametrize("damage", ["[]", '{"GPU-1": {"previous_mw": 1, "set_mw": 1, "pid": "1", "host": "h"}}', "dir"])
def test_a_damaged_journal_never_stops_training(tmp_path, sim, damage) -> None:
    from lightning_energy import PowerCap

    path = journal_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.mkdir() if damage == "dir" else path.write_text(damage)
    with pytest.warns(UserWarning) as caught:
        trainer = fit(tmp_path, PowerCap(watts=250))
    journal_warnings = [str(w.message) for w in caught if "journal" in str(w.message)]
    assert len(journal_warnings) == 1, journal_warnings
    assert trainer.global_step == 8 and sim.limit_mw(sim.gpus[0]) == PREVIOUS_MW
    assert limits_set(sim) == ([PREVIOUS_MW] if damage == "dir" else [PREVIOUS_MW, 250_000, PREVIOUS_MW])


def test_hf_with_an_empty_journal_variable_trains_uncapped(tmp_path, sim, monkeypatch) -> None:
    from hf_energy import PowerCapCallback, attach
    from tests.helpers.hf_models import SeqData, make_trainer

    monkeypatch.setenv("ENERGY_CALLBACKS_POWER_JOURNAL", "")
    trainer = make_trainer(tmp_path / "out", SeqData(64), num_train_epochs=1, logging_steps=2)
    attach(trainer, PowerCapCallback(watts=250))
    trainer.train()
    assert trainer.state.global_step == 8 and limits_set(sim) == [PREVIOUS_MW]
    strict = make_trainer(tmp_path / "strict", SeqData(64), num_train_epochs=1, logging_steps=2)
    attach(strict, PowerCapCallback(watts=250, strict=True))
    with pytest.raises(PowerCapError, match="is set but empty"):
        strict.train()
    assert strict.state.global_step == 0
