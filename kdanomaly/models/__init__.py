"""kdanomaly's models."""

from .kdad import KDAnomaly

__all__ = ["KDAnomaly"]
