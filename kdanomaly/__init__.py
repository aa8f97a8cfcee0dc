"""kdanomaly: industrial visual inspection on Anomalib."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import KDAnomaly

__all__ = ["KDAnomaly"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """Import the models (and with them Anomalib) only when first used: ``kdanomaly.KDAnomaly``."""
    if name == "KDAnomaly":
        from .models import KDAnomaly

        return KDAnomaly
    raise AttributeError(f"module 'kdanomaly' has no attribute {name!r}")
