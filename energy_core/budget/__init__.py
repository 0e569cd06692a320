"""Budgets: stop when an energy, CO2e or cost limit is spent, and forecast the whole run."""
