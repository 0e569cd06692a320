"""One callback class for both Lightning flavours.

``lightning.pytorch`` and ``pytorch_lightning`` are separate class hierarchies; a class
deriving from both ``Callback`` bases is accepted by both ``Trainer`` classes. Messages go
through ``lightning_utilities``' rank-zero helpers, which both flavours route to their
own logger.
"""

from __future__ import annotations

from lightning_utilities.core.rank_zero import rank_zero_info, rank_zero_warn
from typing_extensions import override

from energy_core.source import Notice

_bases: list[type] = []
try:
    from lightning.pytorch import Callback as _LightningCallback

    _bases.append(_LightningCallback)
except ImportError:  # pragma: no cover - depends on what is installed
    pass
try:
    from pytorch_lightning import Callback as _PLCallback

    _bases.append(_PLCallback)
except ImportError:  # pragma: no cover
    pass
if not _bases:  # pragma: no cover
    raise ImportError("lightning_energy needs `lightning` or `pytorch_lightning`: pip install 'energy-callbacks[lightning]'")

CALLBACK_BASES: tuple[type, ...] = tuple(_bases)


def emit(notices: list[Notice]) -> None:
    """Show discovery notices once, on rank zero."""
    for notice in notices:
        if notice.level == "warn":
            rank_zero_warn(notice.text)
        else:
            rank_zero_info(notice.text)


__all__ = ["CALLBACK_BASES", "emit", "override", "rank_zero_info", "rank_zero_warn"]
