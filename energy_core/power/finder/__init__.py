"""The automatic power-cap finder: drive caps on training steps, decide which to keep."""
