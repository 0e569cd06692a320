"""Integration: what framework adapters and hand-written loops call (the adapter contract)."""
