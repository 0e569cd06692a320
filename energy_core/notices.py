"""Notice: a message that discovery or set-up wants the user to see once, made safe to show;
`printable`: text from elsewhere made safe to show.

The core never prints: it returns notices, and each framework adapter shows them through
the framework's own channel (Lightning's rank-zero helpers, the transformers logger).
"""

from __future__ import annotations

import re
import sys
import warnings
from dataclasses import dataclass

# Control characters (C0, DEL, C1: ESC starts the terminal's escape sequences, which can
# rewrite the screen, the window title or the clipboard) and the bidirectional overrides
# that reorder what is shown.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` with every control character written as its escape (``\\x1b``), so that text
    another user or a server wrote (a record, an API's answer) reaches a terminal or a page
    as characters, never as commands.

    Examples:
        >>> printable("done\\x1b[2J")
        'done\\\\x1b[2J'
    """
    return _UNSAFE.sub(lambda found: repr(found.group())[1:-1], str(text))


def printable_lines(text: str) -> str:
    """``text`` with each of its lines `printable`, the line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


@dataclass(frozen=True)
class Notice:
    """A message to show once.

    Args:
        level: ``"info"`` or ``"warn"``.
        text: The message; made printable here (`printable_lines`), since many carry text from
            elsewhere (a file name, a driver's or a server's error), and every adapter shows it
            on a terminal.
    """

    level: str
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", printable_lines(self.text))


# Frames of these packages are never "where the user called": a warning points past them.
_INTERNAL = (
    "energy_core", "lightning_energy", "hf_energy", "lightning", "pytorch_lightning", "lightning_utilities",
    "lightning_fabric", "transformers", "accelerate", "torch", "warnings", "contextlib", "functools", "threading",
)  # fmt: skip


def warn_at_user_code(text: str) -> None:
    """``warnings.warn(text)``, attributed to the first frame outside the frameworks and this
    library (the user's ``trainer.fit(...)`` line), not to a hook deep inside them."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in _INTERNAL:
        frame = frame.f_back
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    module = frame.f_globals.get("__name__", "__main__")
    try:  # no module_globals: a script run with -m has a loader that cannot serve __main__'s source
        warnings.warn_explicit(text, UserWarning, frame.f_code.co_filename, frame.f_lineno, module, registry)
    except Warning:
        raise  # warnings turned into errors by the user's filters stay theirs
    except Exception:  # noqa: BLE001 - a message must never break training
        warnings.warn(text, UserWarning, stacklevel=2)
