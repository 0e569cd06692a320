"""The board the power-limit tests share: one simulated GPU whose administrator's limit is `PREVIOUS_MW`."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from energy_core.power.exit_guard import _unchained
from tests.helpers.shared_machine import admin_limit, board


@pytest.fixture
def sim(sim_gpus):
    sim = sim_gpus(board())
    admin_limit(sim)
    return sim


@pytest.fixture
def two_boards(sim_gpus):
    """Two simulated GPUs of one vendor (GPU-1, GPU-2), each at the administrator's limit."""
    sim = sim_gpus(board("GPU-1"), board("GPU-2"))
    admin_limit(sim)
    return sim


@pytest.fixture
def sigterm_seen() -> Iterator[list[int]]:
    """A Python SIGTERM handler below the guard, as Lightning's (note the signal, stop at the next step)."""
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    yield seen
    signal.signal(signal.SIGTERM, before)


@pytest.fixture(autouse=True)
def no_guard_left():
    """A test that installs a power-limit guard (signal handlers that restore limits) uninstalls it: a
    guard left installed would take the next test's signals (a Ctrl-C test then ended pytest itself). An
    uninstalled guard's handler that a framework put back after it (Lightning restores the SIGTERM handler
    it found) only passes the signal on: it counts as the handler it found."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    yield
    after = tuple(_unchained(s, signal.getsignal(s)) for s in (signal.SIGINT, signal.SIGTERM))
    signal.signal(signal.SIGINT, before[0])
    signal.signal(signal.SIGTERM, before[1])
    assert after == tuple(_unchained(s, h) for s, h in zip((signal.SIGINT, signal.SIGTERM), before)), (
        f"a power-limit guard was left installed: {after}"
    )
