"""Read a run record (JSON lines) the way a test wants it: every line, parsed."""

from __future__ import annotations

import json
from pathlib import Path


def read_record(path: Path) -> list[dict]:
    """Every line of a JSON-lines run record, parsed."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
