"""Helpers shared by the tests: models, logger read-back, records, docs snippets' givens.

`ROOT` is the repository's root (the tests run examples, scripts and docs from it).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
