"""The ``kdanomaly`` command: one dispatcher (:mod:`.main`) over Anomalib's subcommands and kdanomaly's own."""

from .main import main

__all__ = ["main"]
