"""Defect regions: connected components (8-connected) of the anomaly map above the review threshold."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np
from scipy.ndimage import maximum


@dataclass(frozen=True)
class Region:
    """One region in the original image's pixels: ``box`` is ``(x0, y0, x1, y1)`` (x1, y1 exclusive).

    ``type`` and ``similarity`` are the few-shot recognizer's answer when a prototype memory is given.
    """

    box: tuple[int, int, int, int]
    area: int
    peak: float
    type: str | None = None
    similarity: float | None = None

    def as_row(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def find_regions(
    anomaly_map: np.ndarray, threshold: float, original_size: tuple[int, int], max_regions: int = 20
) -> list[Region]:
    """Regions of ``anomaly_map`` ``(h, w)`` above ``threshold``, strongest peak first, at most ``max_regions``.

    Boxes and areas are scaled from the map's grid to ``original_size`` ``(width, height)``.
    """
    if anomaly_map.ndim != 2:
        raise ValueError(f"anomaly map must be (h, w), got shape {anomaly_map.shape}")
    mask = (anomaly_map > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    peaks = np.concatenate([[-np.inf], maximum(anomaly_map, labels, index=np.arange(1, count))])
    width, height = original_size
    scale_x, scale_y = width / anomaly_map.shape[1], height / anomaly_map.shape[0]
    regions = []
    for label in sorted(range(1, count), key=lambda index: -peaks[index])[:max_regions]:
        x, y, w, h, area = stats[label]
        box = (
            int(np.floor(x * scale_x)),
            int(np.floor(y * scale_y)),
            min(int(np.ceil((x + w) * scale_x)), width),
            min(int(np.ceil((y + h) * scale_y)), height),
        )
        regions.append(Region(box, round(float(area * scale_x * scale_y)), float(peaks[label])))
    return regions
