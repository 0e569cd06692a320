"""Notice: a message that discovery or set-up wants the user to see once.

The core never prints: it returns notices, and each framework adapter shows them through
the framework's own channel (Lightning's rank-zero helpers, the transformers logger).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Notice:
    """A message to show once.

    Args:
        level: ``"info"`` or ``"warn"``.
        text: The message.
    """

    level: str
    text: str
