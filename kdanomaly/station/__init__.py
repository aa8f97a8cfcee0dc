"""Inspection stations: ``kdanomaly fit`` makes one from good images, ``kdanomaly learn`` versions it from reviews."""

from .record import Station, StationError, Version

__all__ = ["Station", "StationError", "Version"]
