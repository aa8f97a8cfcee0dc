"""Where checkpoints converted for OpenVINO or ONNX Runtime are kept, keyed by what their scoring graph computes."""

from __future__ import annotations

import os
from pathlib import Path

from .graph import ScoringGraph, graph_digest


def export_cache() -> Path:
    """``$KDANOMALY_CACHE`` or ``~/.cache/kdanomaly``."""
    return Path(os.environ.get("KDANOMALY_CACHE", Path.home() / ".cache" / "kdanomaly"))


def cached_export_folder(graph: ScoringGraph, image_size: tuple[int, int], engine: str) -> Path:
    """The folder of the fp32 ``engine`` export of ``graph`` (calibrated copies of a checkpoint share it)."""
    return export_cache() / graph_digest(graph, image_size) / engine
