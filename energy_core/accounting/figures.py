"""The typed figures of a run: `RunTotals` (what it has spent and done so far) and
`WindowFigures` (one closed logging window), before any formatting.

`RunTotals` serves three purposes: the totals a tracker reports, the state stored in a
checkpoint (`RunTotals.to_state` / `RunTotals.from_state`, validated so that a damaged
checkpoint is a clear error, never a poisoned total), and the job's totals summed over
the ranks of a multi-process run.

Examples:
    >>> a = RunTotals({"gpu": 3.6e6}, samples=10)
    >>> (a + RunTotals({"gpu": 3.6e6, "cpu": 1.0})).total_kwh
    2.0000002777777777
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

from energy_core.devices import DEVICE_KINDS
from energy_core.units import J_PER_KWH, MAX_CO2E_KG, MAX_COST, MAX_COUNT, MAX_JOULES, MAX_SECONDS

STAGES = ("val", "test", "predict")
STATE_VERSION = 1
STATE_KEYS = ("version", "energy_j", "stage_j", "samples", "tokens", "fit_s", "co2e_kg", "cost", "energy_err",
              "stage_err", "co2e_err", "cost_err", "epoch")  # fmt: skip


def _add(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    merged = dict(a)
    for key, value in b.items():
        merged[key] = merged.get(key, 0.0) + value
    return merged


@dataclass(frozen=True)
class WindowFigures:
    """One closed logging window.

    Args:
        steps: Optimizer steps in the window.
        seconds: Training seconds (stages inside it taken out).
        joules: Training energy, all devices (all ranks, once summed).
        gpu_j: Training energy per GPU, keyed by the name in ``power/<name>_w``.
        samples: Training samples.
        tokens: Training tokens.
        joules_err: The bound of ``joules``: the half-width of an interval holding the true
            energy (`energy_core.sampling.bounds`; summed over sources and ranks).
    """

    steps: int
    seconds: float
    joules: float
    gpu_j: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    joules_err: float = 0.0


@dataclass(frozen=True)
class RunTotals:
    """Cumulative figures of a run.

    Args:
        energy_j: Joules by device kind measured (``"gpu"``, ``"cpu"``, ``"dram"``).
        stage_j: Joules of each non-training stage (``"val"``, ``"test"``, ``"predict"``).
        samples: Training samples.
        tokens: Training tokens (padding excluded where a mask says so).
        fit_s: Training wall time in seconds.
        co2e_kg: CO2e of the energy, each slice at the intensity in force (PUE applied).
        cost: Electricity cost of the energy (PUE applied), 0 without a price.
        energy_err, stage_err, co2e_err, cost_err: The bound of each figure (same keys and
            units): the half-width of an interval holding its true value. Bounds add
            linearly (worst cases): over device kinds, ranks, and a checkpoint and the fit
            after it. CO2e and cost carry the energy's relative bound (intensity and price
            are taken as given).
    """

    energy_j: dict[str, float] = field(default_factory=dict)
    stage_j: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    tokens: int = 0
    fit_s: float = 0.0
    co2e_kg: float = 0.0
    cost: float = 0.0
    energy_err: dict[str, float] = field(default_factory=dict)
    stage_err: dict[str, float] = field(default_factory=dict)
    co2e_err: float = 0.0
    cost_err: float = 0.0

    @property
    def total_j(self) -> float:
        """Joules over every device kind."""
        return float(sum(self.energy_j.values()))

    @property
    def total_err(self) -> float:
        """The bound of `total_j`, in joules."""
        return float(sum(self.energy_err.values()))

    @property
    def total_kwh(self) -> float:
        return self.total_j / J_PER_KWH

    def stage_kwh(self, stage: str) -> float:
        return self.stage_j.get(stage, 0.0) / J_PER_KWH

    def __add__(self, other: RunTotals) -> RunTotals:
        return RunTotals(
            _add(self.energy_j, other.energy_j),
            _add(self.stage_j, other.stage_j),
            self.samples + other.samples,
            self.tokens + other.tokens,
            self.fit_s + other.fit_s,
            self.co2e_kg + other.co2e_kg,
            self.cost + other.cost,
            _add(self.energy_err, other.energy_err),
            _add(self.stage_err, other.stage_err),
            self.co2e_err + other.co2e_err,
            self.cost_err + other.cost_err,
        )

    def to_state(self) -> dict[str, Any]:
        """The checkpoint form (JSON-safe); every stage is listed."""
        return {
            "version": STATE_VERSION,
            "energy_j": dict(self.energy_j),
            "stage_j": {s: self.stage_j.get(s, 0.0) for s in STAGES},
            "samples": self.samples,
            "tokens": self.tokens,
            "fit_s": self.fit_s,
            "co2e_kg": self.co2e_kg,
            "cost": self.cost,
            "energy_err": dict(self.energy_err),
            "stage_err": {s: self.stage_err.get(s, 0.0) for s in STAGES},
            "co2e_err": self.co2e_err,
            "cost_err": self.cost_err,
        }

    @classmethod
    def from_state(cls, state: Any) -> RunTotals:
        """Totals from a checkpoint's energy state.

        A state written before CO2e was charged slice by slice has no ``co2e_kg``: it comes
        back as NaN, for the tracker to charge at today's factor. A state written before
        figures carried bounds has none: its bounds come back as 0 (unknown, not claimed).

        Raises:
            ValueError: naming the field of the stored energy state that is missing, unknown or
                wrong (the version, types, known device kinds and stages, each figure >= 0 and within its
                physical bound in `energy_core.units`, so that no sum overflows).
        """
        if not isinstance(state, Mapping):
            raise ValueError(f"the stored energy state must be a mapping, got {type(state).__name__}")
        version = state.get("version")
        if isinstance(version, bool) or version != STATE_VERSION:  # True == 1, but no version
            raise ValueError(f"stored energy state: version {version!r} is not {STATE_VERSION}")
        unknown = sorted(str(k) for k in state if k not in STATE_KEYS)
        if unknown:  # a foreign or newer state: none of its figures is taken on trust
            raise ValueError(f"stored energy state has unknown keys {unknown}; known: {', '.join(STATE_KEYS)}")
        return cls(
            _joules(state, "energy_j", DEVICE_KINDS),
            _joules(state, "stage_j", STAGES),
            _count(state, "samples"),
            _count(state, "tokens"),
            _amount("fit_s", state.get("fit_s"), MAX_SECONDS),
            _amount("co2e_kg", state.get("co2e_kg"), MAX_CO2E_KG) if "co2e_kg" in state else math.nan,
            _amount("cost", state.get("cost", 0.0), MAX_COST),
            _joules(state, "energy_err", DEVICE_KINDS) if "energy_err" in state else {},
            _joules(state, "stage_err", STAGES) if "stage_err" in state else {},
            _amount("co2e_err", state.get("co2e_err", 0.0), MAX_CO2E_KG),
            _amount("cost_err", state.get("cost_err", 0.0), MAX_COST),
        )


@dataclass(frozen=True)
class EpochPart:
    """The part of the epoch under way that a checkpoint taken mid-epoch holds (the job's figures),
    so that the epoch's energy after a resume counts its part before.

    Args:
        energy_j: Its energy, and ``energy_err`` that energy's bound.
        seconds: Its training seconds.
        epoch: The epoch's index (as the adapter numbers epochs), None where unknown: after a
            resume the part counts only in that epoch (a checkpoint written after an epoch's last
            step, before its end, resumes at the next one).
    """

    energy_j: float = 0.0
    energy_err: float = 0.0
    seconds: float = 0.0
    epoch: int | None = None

    def __add__(self, other: EpochPart) -> EpochPart:
        return EpochPart(
            self.energy_j + other.energy_j,
            self.energy_err + other.energy_err,
            self.seconds + other.seconds,
            self.epoch if self.epoch is not None else other.epoch,
        )

    def within(self, totals: RunTotals) -> EpochPart:
        """This part, stored with ``totals``, the whole it is part of (`from_state` checks it): the two are
        figures of the same joules, summed in another order or read a moment apart, which may pass each
        other by their last bits (or within their bounds). A part is never more than its whole, nor less
        than nothing."""
        return EpochPart(
            min(max(self.energy_j, 0.0), max(totals.total_j, 0.0)),
            self.energy_err,
            min(max(self.seconds, 0.0), max(totals.fit_s, 0.0)),
            self.epoch,
        )

    def to_state(self) -> dict[str, Any]:
        return {"energy_j": self.energy_j, "energy_err": self.energy_err, "seconds": self.seconds, "epoch": self.epoch}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], totals: RunTotals) -> EpochPart | None:
        """From an energy state (`RunTotals.to_state` with ``"epoch"``) whose totals are ``totals``;
        None where it has none (a state written at no epoch, or before epochs were kept). A part
        without its epoch's index (written before parts named it) counts in the next epoch to end.

        Raises:
            ValueError: naming the field that is missing or out of its range (a part larger than
                the totals it is part of included).
        """
        part = state.get("epoch")
        if part is None:
            return None
        if not isinstance(part, Mapping) or set(part) - {"epoch"} != {"energy_j", "energy_err", "seconds"}:
            raise ValueError(
                f"stored energy state: epoch must map energy_j, energy_err, seconds and epoch, got {part!r}"
            )
        index = part.get("epoch")
        whole = isinstance(index, Integral) and not isinstance(index, bool)
        if index is not None and (not whole or not 0 <= index <= MAX_COUNT):
            raise ValueError(f"stored energy state: epoch['epoch'] must be None or an integer in [0, {MAX_COUNT}], "
                             f"got {index!r}")  # fmt: skip
        return cls(
            _amount("epoch['energy_j']", part["energy_j"], totals.total_j),
            _amount("epoch['energy_err']", part["energy_err"], MAX_JOULES),
            _amount("epoch['seconds']", part["seconds"], totals.fit_s),
            None if index is None else int(index),
        )


def _amount(name: str, value: Any, high: float) -> float:
    """A stored figure in [0, ``high``]."""
    number = isinstance(value, Real) and not isinstance(value, bool)
    if not number or not 0 <= value <= high:  # NaN fails too; a huge int is compared exactly, never made a float
        raise ValueError(f"stored energy state: {name} must be a number in [0, {high:g}], got {value!r}")
    return float(value)


def _count(state: Mapping[str, Any], name: str) -> int:
    value: Any = state.get(name)
    whole = isinstance(value, Integral) and not isinstance(value, bool)
    if not whole or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"stored energy state: {name} must be an integer in [0, {MAX_COUNT}], got {value!r}")
    return int(value)


def _joules(state: Mapping[str, Any], name: str, known: tuple[str, ...]) -> dict[str, float]:
    values = state.get(name)
    if not isinstance(values, Mapping):
        raise ValueError(
            f"stored energy state: {name} must be a mapping of {', '.join(known)} to joules, got {values!r}"
        )
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ValueError(f"stored energy state: {name} has unknown keys {unknown}; known: {', '.join(known)}")
    return {str(k): _amount(f"{name}[{k!r}]", v, MAX_JOULES) for k, v in values.items()}
