"""Why a power cap was not applied: the errors ``strict=True`` raises before anything changes."""

from __future__ import annotations


class PowerCapError(RuntimeError):
    """A cap that cannot be applied safely (no GPU, an unusable journal, a board another
    run has capped). Without ``strict`` the run gets one message and trains on."""


class JournalError(PowerCapError):
    """The power-limit journal cannot be used safely; the message says why and how to fix it."""


class BoardBusyError(PowerCapError):
    """A board is already capped by another live process on this host."""
