"""Checkpoints written beside their target and renamed into place.

Lightning's own writer stages a checkpoint in the system temporary folder and moves it: across file systems (a
``tmpfs`` /tmp, a station on another disk) the move is a copy, so a fit killed during it leaves a truncated
checkpoint that the next ``fit`` cannot resume from, and a kill during the staging leaves the whole file (hundreds
of MB with the memory bank) in /tmp. Here the file is staged in its own folder and renamed, which is atomic
against a killed process (not fsynced: a power cut may still lose the latest checkpoint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

PARTIAL_SUFFIX = ".partial"


class SameFolderCheckpointIO(TorchCheckpointIO):
    """A checkpoint appears complete or not at all; an interrupted write leaves ``<name>.partial`` beside it,
    which the next write of that checkpoint replaces."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + PARTIAL_SUFFIX)
        try:
            torch.save(checkpoint, partial)
            os.replace(partial, target)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
