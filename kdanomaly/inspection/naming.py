"""Defect types of regions: the few-shot recognizer embeds each region's crop, the prototype memory names it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.nn import functional as F

from kdanomaly.memory import PrototypeMemory

from .regions import Region

CONTEXT = 0.25  # each crop is the region's box grown by this fraction of its size on every side
MIN_CROP = 16  # display pixels


def crop_box(box: tuple[int, int, int, int], scale: tuple[float, float], limits: tuple[int, int]) -> tuple[int, ...]:
    """``box`` (original pixels) as a crop of the display copy: scaled, grown by CONTEXT, at least MIN_CROP wide."""
    (box_x0, box_y0, box_x1, box_y1), (scale_x, scale_y), (width, height) = box, scale, limits
    x0, x1, y0, y1 = box_x0 * scale_x, box_x1 * scale_x, box_y0 * scale_y, box_y1 * scale_y
    grow_x = max((x1 - x0) * CONTEXT, (MIN_CROP - (x1 - x0)) / 2, 0)
    grow_y = max((y1 - y0) * CONTEXT, (MIN_CROP - (y1 - y0)) / 2, 0)
    left, top = max(int(x0 - grow_x), 0), max(int(y0 - grow_y), 0)
    return (
        left,
        top,
        min(max(int(np.ceil(x1 + grow_x)), left + 1), width),
        min(max(int(np.ceil(y1 + grow_y)), top + 1), height),
    )


class Embedder(Protocol):
    """Anything that embeds region crops ``(B, 3, S, S)`` in [0, 1] as ``(B, embedding_dim)``."""

    @property
    def embedding_dim(self) -> int: ...

    def embed(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class WeightedEmbedder(Protocol):
    """An embedder that can pool each crop's features with weights ``(B, 1, S, S)``."""

    def embed_weighted(self, images: torch.Tensor, weights: torch.Tensor) -> torch.Tensor: ...


def _resized(pixels: np.ndarray, side: int) -> torch.Tensor:
    """``(h, w, C)`` float pixels as a ``(C, side, side)`` tensor (bilinear, antialiased)."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return F.interpolate(tensor, size=(side, side), mode="bilinear", antialias=True)[0]


class DefectNamer:
    """An embedder of region crops and a :class:`PrototypeMemory` of its embeddings of named defects."""

    def __init__(self, embedder: Embedder, memory: PrototypeMemory, image_size: int = 128, source: str = "") -> None:
        if memory.dim != embedder.embedding_dim:
            raise ValueError(
                f"{source or 'the memory'} holds {memory.dim}-d embeddings; the embedder makes"
                f" {embedder.embedding_dim}-d ones: enrol the references with this recognizer"
                " (kdanomaly fewshot enroll)"
            )
        self.embedder, self.memory, self.image_size = embedder, memory, image_size

    @classmethod
    def from_recognizer(cls, recognizer: str | Path, memory: str | Path, image_size: int = 128) -> DefectNamer:
        """A trained :class:`FewShotRecognizer` checkpoint and the prototype memory enrolled with it."""
        from kdanomaly.models.recognizer import FewShotRecognizer

        model = FewShotRecognizer.load_from_checkpoint(recognizer, map_location="cpu", pretrained=False).eval()
        return cls(model, PrototypeMemory.load(memory), image_size, f"{memory} (for {recognizer})")

    def crops(
        self, display: np.ndarray, original_size: tuple[int, int], boxes: list[tuple[int, int, int, int]],
        anomaly_map: np.ndarray | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """Crops ``(R, 3, S, S)`` in [0, 1] of the display copy ``(h, w, 3)`` uint8 around ``boxes`` (original
        pixels), each grown by :data:`CONTEXT`; with ``anomaly_map`` (any resolution), the same crops of it as
        pooling weights ``(R, 1, S, S)``: scaled to [0, 1] within the crop and squared, so the defect, not the
        surface around it, makes the embedding."""
        height, width = display.shape[:2]
        scale = (width / original_size[0], height / original_size[1])
        crops, weights = [], []
        for box in boxes:
            left, top, right, bottom = crop_box(box, scale, (width, height))
            crops.append(_resized(display[top:bottom, left:right].astype(np.float32) / 255, self.image_size))
            if anomaly_map is not None:
                map_height, map_width = anomaly_map.shape
                rows = slice(int(top * map_height / height), max(int(np.ceil(bottom * map_height / height)), 1))
                columns = slice(int(left * map_width / width), max(int(np.ceil(right * map_width / width)), 1))
                patch = anomaly_map[rows, columns].astype(np.float32)
                patch = (patch - patch.min()) / max(float(patch.max() - patch.min()), 1e-12)
                weights.append(_resized(patch[:, :, None] ** 2, self.image_size))
        return torch.stack(crops).clamp_(0, 1), torch.stack(weights) if weights else None

    @torch.no_grad()
    def embed(
        self, display: np.ndarray, original_size: tuple[int, int], boxes: list[tuple[int, int, int, int]],
        anomaly_map: np.ndarray | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """Embeddings ``(R, D)`` of the regions ``boxes``; an embedder that pools by weights gets the map's."""
        crops, weights = self.crops(display, original_size, boxes, anomaly_map)
        if weights is not None and isinstance(self.embedder, WeightedEmbedder):
            return self.embedder.embed_weighted(crops, weights)
        return self.embedder.embed(crops)

    def name(
        self, display: np.ndarray, original_size: tuple[int, int], regions: list[Region],
        anomaly_map: np.ndarray | None = None,
    ) -> list[Region]:  # fmt: skip
        """``regions`` with ``type`` and ``similarity`` from crops of the display copy ``(h, w, 3)`` uint8 (and of
        the ``anomaly_map``, for an embedder that pools by it)."""
        if not regions:
            return regions
        embeddings = self.embed(display, original_size, [region.box for region in regions], anomaly_map)
        prediction = self.memory.predict(embeddings)
        return [
            replace(region, type=label, similarity=round(float(similarity), 4))
            for region, label, similarity in zip(regions, prediction.labels, prediction.similarities, strict=True)
        ]
