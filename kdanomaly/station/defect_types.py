"""Defect types of a station without a trained recognizer: region crops embedded by its KDAnomaly teacher."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.nn import functional as F

from kdanomaly.inspection.naming import DefectNamer

from .record import Station

CROP_SIZE = 128  # side of the region crops the teacher embeds, in pixels (the recognizer's default)


class TeacherEmbedder:
    """A KDAnomaly checkpoint's frozen (ImageNet) teacher as an embedder of region crops: its deepest distilled
    stage, pooled over the crop (by the anomaly map's weights when given), L2-normalised, ``(B, channels)``.
    ``background_contrast``: minus the same features pooled by the weights' complement (the crop's background),
    so the texture a defect sits on cancels out.

    Chosen on synthetic surfaces: with crops around the ground-truth masks (`make demo`'s 256-px weave set, 4
    defect types, 2 enrolled per type, 20 draws) averaging every distilled stage named 69 % right, the deepest
    stage pooled by the squared anomaly map 93 %; with a station's regions (``benchmarks/station_naming.py``)
    subtracting the background raised that from 73 % to 83 % (forward student) and from 71 % to 79 % (the
    validation-chosen KDAnomaly).
    """

    def __init__(self, checkpoint: str | Path, background_contrast: bool = True) -> None:
        from kdanomaly.engines.graph import load_scoring_graph

        graph, _ = load_scoring_graph(checkpoint)
        self.teacher = graph.model.network("teacher")  # BatchNorm folded, as KDAnomaly evaluates it
        self.mean, self.std = graph.mean, graph.std
        self.embedding_dim = int(graph.model.teacher.channels[-1])
        self.background_contrast = background_contrast

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of crops ``(B, 3, S, S)`` in [0, 1], features averaged over the crop."""
        return self.embed_weighted(images, torch.ones_like(images[:, :1]))

    @torch.no_grad()
    def embed_weighted(self, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Embeddings ``(B, D)`` of crops ``(B, 3, S, S)`` in [0, 1], features averaged with ``weights``
        ``(B, 1, S, S)`` (non-negative; resized to the feature grid)."""
        features = list(self.teacher((images - self.mean) / self.std).values())[-1]
        grid = F.interpolate(weights, size=features.shape[-2:], mode="area")
        pooled = _pooled(features, grid)
        if self.background_contrast:
            pooled = pooled - _pooled(features, (grid.amax(dim=(-2, -1), keepdim=True) - grid))
        return F.normalize(pooled, dim=1)


def _pooled(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``features (B, C, h, w)`` averaged with ``weights (B, 1, h, w)``: ``(B, C)``."""
    weights = weights + 1e-6
    return (features * weights).sum(dim=(-2, -1)) / weights.sum(dim=(-2, -1))


def station_setup(root: Path, crop_size: int = CROP_SIZE) -> tuple[DefectNamer | None, dict[str, object], Path]:
    """For ``inspect --station``: the namer of the current version's defect types (None before any was learnt),
    the run settings naming the station, its version and known types, and the version's model file."""
    from kdanomaly.memory import PrototypeMemory

    station = Station.load(root)
    version = station.version()
    settings: dict[str, object] = {"station": str(root.resolve()), "station_version": version.number}
    namer = None
    if version.defect_types is not None:
        memory = PrototypeMemory.load(station.path(version.defect_types))
        embedder = TeacherEmbedder(station.path(version.checkpoint))
        namer = DefectNamer(embedder, memory, crop_size, str(station.path(version.defect_types)))
        settings |= {"defect_types": memory.classes, "recognizer_size": crop_size}
    return namer, settings, station.path(version.model)
