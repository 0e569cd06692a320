"""Units every layer shares, written once."""

from __future__ import annotations

J_PER_KWH = 3.6e6  # joules in a kilowatt-hour
