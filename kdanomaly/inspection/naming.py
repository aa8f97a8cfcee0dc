"""Defect types of regions: the few-shot recognizer embeds each region's crop, the prototype memory names it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

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


class DefectNamer:
    """A trained :class:`FewShotRecognizer` checkpoint and a :class:`PrototypeMemory` of its embeddings."""

    def __init__(self, recognizer: str | Path, memory: str | Path, image_size: int = 128) -> None:
        from kdanomaly.memory import PrototypeMemory
        from kdanomaly.models.recognizer import FewShotRecognizer

        self.recognizer = FewShotRecognizer.load_from_checkpoint(recognizer, map_location="cpu", pretrained=False)
        self.recognizer.eval()
        self.memory = PrototypeMemory.load(memory)
        if self.memory.dim != self.recognizer.embedding_dim:
            raise ValueError(
                f"{memory} holds {self.memory.dim}-d embeddings; {recognizer} makes {self.recognizer.embedding_dim}-d"
                " ones: enrol the references with this recognizer (kdanomaly fewshot enroll)"
            )
        self.image_size = image_size

    @torch.no_grad()
    def name(self, display: np.ndarray, original_size: tuple[int, int], regions: list[Region]) -> list[Region]:
        """``regions`` with ``type`` and ``similarity`` from crops of the display copy ``(h, w, 3)`` uint8."""
        if not regions:
            return regions
        height, width = display.shape[:2]
        scale = (width / original_size[0], height / original_size[1])
        crops = []
        for region in regions:
            left, top, right, bottom = crop_box(region.box, scale, (width, height))
            crop = torch.from_numpy(display[top:bottom, left:right]).permute(2, 0, 1).float()[None] / 255
            crops.append(F.interpolate(crop, size=(self.image_size,) * 2, mode="bilinear", antialias=True)[0])
        prediction = self.memory.predict(self.recognizer.embed(torch.stack(crops).clamp_(0, 1)))
        return [
            replace(region, type=label, similarity=round(float(similarity), 4))
            for region, label, similarity in zip(regions, prediction.labels, prediction.similarities, strict=True)
        ]
