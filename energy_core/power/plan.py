"""What to cap: the boards named by ``gpus`` and each one's target, checked before anything changes;
the cap finder's candidate targets (`cap_ladder`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from energy_core import devices
from energy_core.devices import GpuBoard, LimitRange


@dataclass
class CappedGpu:
    """One board whose limit this process changed.

    Args:
        board: The board.
        previous_mw: The limit in force before, restored at the end.
        limits: The board's allowed range and default.
        applied_mw: The limit read back after the last change.
        pending_mw: While a change is in the driver, its target (the board may carry it
            already: it is this run's own limit too).
        restore_to: Set by a restore that came while a change was in the driver: the limit
            to leave on the board once the change has returned (it may land after the restore).
        hung_mw: The target of a change that did not return from the driver in time
            (`energy_core.devices.deadline`): it may land whenever the driver answers, so the
            board carries it or its limit before; the board is changed no more, and its journal
            entry (which names both) is kept until a restore gets through.
    """

    board: GpuBoard
    previous_mw: int
    limits: LimitRange
    applied_mw: int
    pending_mw: int | None = field(default=None, compare=False)
    restore_to: int | None = field(default=None, compare=False)
    hung_mw: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PlannedCap:
    """A limit to set on one board, checked against its range before anything changes."""

    board: GpuBoard
    limits: LimitRange
    target_mw: int


def plan_caps(boards: Sequence[GpuBoard], watts: float | None, fraction: float | None) -> list[PlannedCap]:
    """Each board's target limit (mW): ``watts``, ``fraction`` x its default, or its current limit
    (registered only, for the cap finder: it is in force already, even where it lies outside the
    range the board reports, and the finder's changes from it are checked as they are made).

    Raises:
        ValueError: a target outside a board's range, naming the argument (nothing changed).
    """
    planned = []
    for board in boards:
        limits = board.limits()
        if watts is not None:
            target = int(round(watts * 1000))
        elif fraction is not None:
            target = int(round(fraction * limits.default_mw))
        else:
            target = limits.current_mw
        low, high, default = limits.min_mw, limits.max_mw, limits.default_mw
        if (watts is not None or fraction is not None) and not low <= target <= high:  # registered: not set
            where = f"the allowed range of {board.label} ({board.uuid}): [{low / 1000:g}, {high / 1000:g}] W"
            if watts is not None:
                raise ValueError(f"watts={watts:g} is outside {where}")
            raise ValueError(
                f"fraction={fraction:g} gives {target / 1000:g} W, outside {where}, i.e. fraction in "
                f"[{low / default:.3g}, {high / default:.3g}] of its {default / 1000:g} W default"
            )
        planned.append(PlannedCap(board, limits, target))
    return planned


def cap_ladder(boards: Sequence[CappedGpu], min_watts: float | None = None, step_w: float = 25.0) -> list[float]:
    """Candidate caps as fractions of each board's limit at start, highest first.

    Rungs are ``step_w`` apart on the board with the highest limit at start; the last rung
    is the floor: the highest of the boards' minimum limits and ``min_watts``, as a
    fraction of each board's limit at start.
    """
    if not boards:
        return [1.0]
    floor_mw = 0 if min_watts is None else min_watts * 1000
    floor = max(max(b.limits.min_mw, floor_mw) / b.previous_mw for b in boards)
    reference = max(b.previous_mw for b in boards)
    rungs = [1.0]
    while (fraction := 1 - len(rungs) * step_w * 1000 / reference) > floor + 1e-9:
        rungs.append(fraction)
    if floor < 1 - 1e-9:
        rungs.append(floor)
    return rungs


@dataclass(frozen=True)
class BusyBoard:
    """A board left alone because another live process of this host holds it.

    Args:
        board: The board.
        limit_mw: The limit it carries (that process's cap).
        pid: The process (None where it cannot be named).
        uid: Its user, where it is another user (None otherwise).
    """

    board: GpuBoard
    limit_mw: int
    pid: int | None
    uid: int | None = None


def busy_message(busy: Sequence[BusyBoard]) -> str:
    """One message for the boards another run holds."""

    def by(b: BusyBoard) -> str:
        who = "another process" if b.pid is None else f"pid {b.pid}"
        return who + ("" if b.uid is None else f" (uid {b.uid})")

    boards = "; ".join(f"{b.board.label} ({b.board.uuid}) at {b.limit_mw / 1000:g} W by {by(b)}" for b in busy)
    return (
        f"Already capped by another run on this host: {boards}. This run does not change those limits: "
        "the cap stays in force, and the run that set it restores the limit in force before it."
    )


def select_boards(gpus: str | tuple[int, ...]) -> list[GpuBoard]:
    """The visible boards named by ``gpus`` (``"all"`` or visible indices).

    Raises:
        DeviceError: no GPU library at all.
        ValueError: an unknown index, naming the visible ones.
    """
    visible = devices.visible_boards()
    if isinstance(gpus, str):  # "all", the only word check_cap_arguments lets through
        return visible
    known = {b.index: b for b in visible}
    unknown = [i for i in gpus if i not in known]
    if unknown:
        raise ValueError(
            f"gpus: no visible GPU with index {unknown}; visible indices are "
            f"{sorted(known) if known else 'none'} (0 to {len(visible) - 1})"
        )
    return [known[i] for i in gpus]


def unseen_boards(visible: list[GpuBoard], names: Sequence[str]) -> list[GpuBoard]:
    """The boards named ``vendor:uuid`` (`energy_core.accounting.ranks.board_of`: the boards the
    ranks of this node train on) that are not among ``visible``: with ``CUDA_VISIBLE_DEVICES`` set
    per rank, the node's leader does not see the others' boards, but NVML and amdsmi find them
    by UUID (index -1: not visible here). A name no library knows is left out."""
    seen = {(b.vendor, b.uuid) for b in visible}
    found: list[GpuBoard] = []
    for name in names:
        vendor, _, uuid = name.partition(":")
        if (vendor, uuid) in seen:
            continue
        board = devices.board_by_uuid(uuid)
        if board is not None and board.vendor == vendor:
            seen.add((vendor, uuid))
            found.append(board)
    return found
