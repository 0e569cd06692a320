"""Accounting: the typed figures of a run and how they add up (windows, stages, ranks, totals)."""
