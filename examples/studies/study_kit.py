"""What the studies share: text that ships with Python, a padding collator that counts what
it pads, reading a run record back, and a Markdown table.

Not part of the library: the studies use only the public callbacks and ``energy-report``;
this module only keeps their data and report plumbing in one place.
"""

from __future__ import annotations

import builtins
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

PAD = 0


def quiet() -> None:
    """Keep the studies' output to their own tables."""
    for name in ("lightning.pytorch", "pytorch_lightning", "lightning.fabric", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def text_lines(max_chars: int = 100) -> list[str]:
    """Non-empty lines of the built-in functions' docstrings (they ship with every Python)."""
    docs = [getattr(obj, "__doc__", None) or "" for name, obj in sorted(vars(builtins).items()) if callable(obj)]
    return [line.strip()[:max_chars] for doc in docs for line in doc.splitlines() if len(line.strip()) > 8]


def byte_ids(line: str) -> list[int]:
    """A line as byte-level token ids 1-255 (0 is padding): no tokenizer to download."""
    return [min(255, max(1, ord(c))) for c in line]


class TextData(torch.utils.data.Dataset):
    """Lines as ``input_ids`` (byte ids), with an optional integer label per line."""

    def __init__(self, lines: Sequence[str], labels: Sequence[int] | None = None) -> None:
        self.items = [byte_ids(line) for line in lines]
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.items[i]}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        return item

    def tokens(self) -> int:
        return sum(len(ids) for ids in self.items)


class Collator:
    """Pads a batch to its longest line (``pad_to=None``: dynamic padding) or to ``pad_to``.

    Counts what passes through: ``real`` tokens and ``processed`` positions (real +
    padding), so a study can relate energy to both. Without labels in the items, the
    labels are the inputs (language modelling, padding ignored).
    """

    def __init__(self, pad_to: int | None = None) -> None:
        self.pad_to = pad_to
        self.real = 0
        self.processed = 0

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = self.pad_to or max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), PAD)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = min(width, len(b["input_ids"]))
            ids[row, :n] = torch.tensor(b["input_ids"][:n])
            mask[row, :n] = 1
        self.real += int(mask.sum())
        self.processed += ids.numel()
        out = {"input_ids": ids, "attention_mask": mask}
        if "labels" in batch[0]:
            out["labels"] = torch.tensor([b["labels"] for b in batch])
        else:
            out["labels"] = ids.masked_fill(mask == 0, -100)
        return out

    def pass_counts(self, dataset: TextData, batch_size: int) -> tuple[int, int]:
        """(real, processed) that one pass over ``dataset``, in order and in batches of
        ``batch_size``, adds to the counts (an evaluation pass, to take out of training's)."""
        real = processed = 0
        for start in range(0, len(dataset), batch_size):
            lengths = [len(dataset[i]["input_ids"]) for i in range(start, min(start + batch_size, len(dataset)))]
            width = self.pad_to or max(lengths)
            real += sum(min(width, n) for n in lengths)
            processed += width * len(lengths)
        return real, processed

    def reset(self) -> tuple[int, int]:
        """Return (real, processed) counted so far and start again."""
        counts = (self.real, self.processed)
        self.real = self.processed = 0
        return counts


def read_runs_by_type(path: Path) -> list[dict[str, Any]]:
    """Every run in a record (read by `energy-report`'s reader), each by line type: ``header``
    and ``summary`` are one line each, every other type (``window``, ``epoch``, ``stage``,
    ``budget``, ``power_cap``, ``target``) a list, maybe empty. A stage run outside a fit
    (``trainer.predict()`` after ``train()``) is a run of its own, its header naming its ``stage``."""
    from energy_core.output.record import read_runs

    runs, _ = read_runs(Path(path))
    out = []
    for run in runs:
        by_type: dict[str, Any] = {"window": [], "epoch": [], "stage": [], "budget": [], "power_cap": [], "target": []}
        for line in run:
            if line["type"] in ("header", "summary"):
                by_type[line["type"]] = line
            else:
                by_type.setdefault(line["type"], []).append(line)
        out.append(by_type)
    return out


def read_record(path: Path) -> dict[str, Any]:
    """The last fit in a record (runs of a stage alone left out), by line type (see `read_runs_by_type`)."""
    return [run for run in read_runs_by_type(path) if "stage" not in run.get("header", {})][-1]


def write_report(out: Path, result: dict[str, Any], lines: list[str], records: Sequence[Path | str]) -> None:
    """Write ``report.json`` (``result``) and ``report.md`` (``lines``) in ``out``, the
    `energy-report` page comparing ``records`` in ``out/energy-report``, and print the
    Markdown."""
    from energy_core.report.cli import main as energy_report

    (out / "report.json").write_text(json.dumps(result, indent=1))
    (out / "report.md").write_text("\n".join(lines) + "\n")
    if records:
        energy_report([str(r) for r in records] + ["--out", str(out / "energy-report")])
    print("\n".join(lines))


def markdown_table(rows: list[dict[str, Any]], columns: dict[str, str]) -> list[str]:
    """``columns`` maps a row key to its heading; floats get 4 significant figures."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key, "")) for key in columns) + " |" for row in rows]
    return lines
