"""What every benchmark result file starts with: the machine and the settings of the run."""

from __future__ import annotations

import argparse
import platform

import torch


def machine() -> str:
    """CPU architecture, torch threads and torch version."""
    return f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def run_header(args: argparse.Namespace, **readable: object) -> dict[str, object]:
    """``machine`` and ``settings``: every command-line argument as text, or as given in ``readable``."""
    settings = {key: str(value) for key, value in vars(args).items()} | readable
    return {"machine": machine(), "settings": settings}
