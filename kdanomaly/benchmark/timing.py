"""Inference timing shared by the benchmarks."""

from __future__ import annotations

import time
from typing import cast

import torch
from anomalib.data import AnomalibDataset
from anomalib.models.components import AnomalibModule


def timing_images(test_data: AnomalibDataset, size: tuple[int, int], count: int = 16) -> torch.Tensor:
    """``count`` test images spread over ``test_data``, each resized to ``size`` (sources may differ in size)."""
    # Anomalib's FieldDescriptor types every item field Optional; a dataset item has its image.
    indices = range(0, len(test_data), max(1, len(test_data) // count))
    picked = [cast(torch.Tensor, test_data[i].image)[None] for i in indices][:count]
    return torch.cat([torch.nn.functional.interpolate(image, size=size, mode="bilinear") for image in picked])


@torch.no_grad()
def inference_ms_per_image(model: AnomalibModule, images: torch.Tensor, batch_size: int, repeats: int = 3) -> float:
    """Median over ``repeats`` passes of the time per image of the whole module (pre-processing to map)."""
    model.eval()
    model(images[:batch_size])  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            model(images[first : first + batch_size])
        timings.append((time.perf_counter() - start) / len(images) * 1000)
    return sorted(timings)[len(timings) // 2]
