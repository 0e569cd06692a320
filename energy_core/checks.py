"""Argument checks shared by every public constructor: types, ranges and messages, once.

Each check returns the normalised value, or raises ``TypeError`` (wrong type: a bool is
never a number, a number is never a string) or ``ValueError`` (right type, outside the
allowed range). Both messages name the argument and say what is allowed.

`open_regular` opens a file given by path that another user may have planted (a FIFO, a
link): the carbon series reader, the run-record reader and its writer each say in their own
words what they refuse.

Examples:
    >>> number("pue", 1.2, low=1)
    1.2
    >>> number("pue", True, low=1)
    Traceback (most recent call last):
    ...
    TypeError: pue must be a finite number >= 1, got bool True
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from typing import Any


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool, kind: str) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{_exact(low)}, {_exact(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{kind} {'>' if low_open else '>='} {_exact(low)}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {_exact(high)}"
    return kind


def _exact(bound: float) -> str:
    """A bound as short as it reads back exactly (``1e+06``, ``277777777777777.78``): a rounded one
    (``2.77778e+14``) may lie outside the range it states."""
    return next((text for digits in range(6, 18) if float(text := f"{bound:.{digits}g}") == bound), repr(bound))


def _type_error(name: str, what: str, value: Any) -> TypeError:
    return TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")


def number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    optional: bool = False,
    what: str | None = None,
    unit: str = "",
) -> Any:
    """A finite real number within the bounds (``None`` too when ``optional``), as a float."""
    if value is None and optional:
        return None
    if what is None:
        what = _bounds(low, high, low_open, high_open, "a finite number") + unit + (" (or None)" if optional else "")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _type_error(name, what, value)
    try:
        result = float(value)
    except OverflowError:  # an int beyond a float's range: outside any bound
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    too_low = low is not None and (result <= low if low_open else result < low)
    too_high = high is not None and (result >= high if high_open else result > high)
    if not math.isfinite(result) or too_low or too_high:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return result


def integer(name: str, value: Any, *, low: int | None = None, high: int | None = None, optional: bool = False) -> Any:
    """An integer within the bounds (``None`` too when ``optional``)."""
    if value is None and optional:
        return None
    what = _bounds(low, high, False, False, "an integer") + (" (or None)" if optional else "")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise _type_error(name, what, value)
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def indices(name: str, value: Any, *, what: str = "a non-empty list of distinct indices >= 0") -> tuple[int, ...]:
    """A non-empty list of distinct indices >= 0 (of visible devices), as a tuple.

    Any sequence of ints will do but a string or bytes, which are sequences too
    (``b"\\x00\\x01"`` is not the list ``[0, 1]``).
    """
    if isinstance(value, (str, bytes, bytearray, memoryview)) or not isinstance(value, Sequence):
        raise _type_error(name, what, value)
    found = tuple(value)
    if any(not isinstance(i, Integral) or isinstance(i, bool) for i in found):  # a bool is not an index
        raise _type_error(name, what, value)
    if not found or any(i < 0 for i in found):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if len(set(found)) != len(found):
        raise ValueError(f"{name} must be {what}: {value!r} repeats one")
    return tuple(int(i) for i in found)


def boolean(name: str, value: Any) -> bool:
    """``True`` or ``False``: nothing else means yes or no (``"no"`` is not False)."""
    if not isinstance(value, bool):
        raise _type_error(name, "True or False", value)
    return value


def choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """One of a few strings."""
    what = "one of " + ", ".join(map(repr, choices))
    if not isinstance(value, str):
        raise _type_error(name, what, value)
    if value not in choices:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def text(name: str, value: Any, *, optional: bool = True, what: str = "a string") -> Any:
    """A non-empty string (``None`` too when ``optional``)."""
    if value is None and optional:
        return None
    described = what + (" (or None)" if optional else "")
    if not isinstance(value, str):
        raise _type_error(name, described, value)
    if not value.strip():
        raise ValueError(f"{name} must be {described}, got {value!r}")
    return value


def file_path(name: str, value: Any, *, optional: bool = True) -> Any:
    """A path to a file (str or os.PathLike, not a directory), as a str (``None`` too when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, os.PathLike)):
        raise _type_error(name, "a file path (str or os.PathLike)", value)
    path = os.fspath(value)
    if not isinstance(path, str) or not path:
        raise ValueError(f"{name} must be a file path (str or os.PathLike), got {value!r}")
    if os.path.isdir(path):
        raise ValueError(f"{name} must be a file, but {path!r} is a directory")
    return path


def open_regular(path: str | os.PathLike[str], flags: int = os.O_RDONLY, mode: int = 0o644) -> int | None:
    """A descriptor of ``path`` opened with ``flags``, or None (nothing left open) if it is not a
    regular file: a FIFO, a device, a socket or a directory.

    Another user may have put a FIFO where a file is expected, whose open would wait for ever: the
    open never waits (``O_NONBLOCK``), the kind is checked on the descriptor (the path may change
    between two looks) and only then is it made blocking again. ``O_NOFOLLOW`` in ``flags`` refuses
    a link too. The caller says what is refused, in its own words.

    Raises:
        OSError: from the open (``ELOOP``: a link, with ``O_NOFOLLOW``; ``ENXIO``: for writing, a
            FIFO no one reads).
    """
    fd = os.open(path, flags | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.set_blocking(fd, True)
            return fd
    except OSError:
        os.close(fd)
        raise
    os.close(fd)
    return None


def one_per_trainer(
    callback: Any, others: Sequence[Any], same_job: Callable[[Any], bool] = lambda other: True, how: str = ""
) -> None:
    """Refuse a callback its trainer has already, or a second of its class doing the same job
    (``same_job``, e.g. a target on another metric is not): it would count every step twice, or
    sample the devices again and print a second, different summary of one run.

    Raises:
        ValueError: naming the class and saying what to do (``how``: where to give it once).
    """
    name = type(callback).__name__
    if any(other is callback for other in others):
        raise ValueError(
            f"This {name} was given to the Trainer twice; it would count every step twice. Give it once{how}."
        )
    if any(type(other) is type(callback) and same_job(other) for other in others):
        raise ValueError(
            f"This Trainer already has a {name}; a second would sample the same devices again and print a "
            f"second, different summary of the run. Use one {name} per Trainer."
        )
