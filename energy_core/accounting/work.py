"""Counting samples and tokens in a batch, without synchronising the device.

Batches are inspected by duck typing (anything with ``.shape``), so the core imports no
framework. Token counts from an ``attention_mask`` stay a lazy tensor sum: adding it to a
running total queues work on the device but never waits for it; the total is read once
per logging window. The sum counts the mask's non-zero entries, so it is a 64-bit integer
whatever the mask's dtype (a float16 sum would stop at 65,504 and lose units past 2,048).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_LOOK = 4  # items of a list or tuple looked at for a size: a batch of plain numbers is not walked through


def _first_dim(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape) > 0:
        return int(shape[0])
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        if isinstance(first, (str, bytes)):
            return len(value)  # a batch of texts, as collated from a dataset of strings
        found = _first_dim(first)  # (x, y): the first item, as a rule
        if found is not None:
            return found
        for item in value[1:_LOOK]:  # (texts, labels): the first item that has a size, among the first few
            found = _first_dim(item)
            if found is not None:
                return found
    if isinstance(value, Mapping):
        for item in value.values():
            found = _first_dim(item)
            if found is not None:
                return found
    return None


def count_batch(batch: Any) -> tuple[int, Any]:
    """(samples, tokens) of one (micro-)batch.

    Samples are the first dimension of the first tensor found (a tensor, the first item of
    a tuple/list that has one, or of a dict), or the length of a list of strings. Tokens
    are the non-zero entries of ``attention_mask``, summed as a 64-bit integer (padding
    excluded) when the batch maps ``"attention_mask"``, else ``input_ids.numel()``, else 0.
    The token count may be a lazy tensor: sum it with others and convert once with `int`.

    Examples:
        >>> import torch
        >>> count_batch({"input_ids": torch.ones(4, 8), "attention_mask": torch.ones(4, 8)})[0]
        4
    """
    if isinstance(batch, Mapping):
        mask = batch.get("attention_mask")
        if mask is not None and hasattr(mask, "sum"):
            return _first_dim(mask) or 0, (mask != 0).sum()  # a bool sum is int64 in torch and numpy
        ids = batch.get("input_ids")
        if ids is not None and hasattr(ids, "numel"):
            return _first_dim(ids) or 0, int(ids.numel())
    return _first_dim(batch) or 0, 0
