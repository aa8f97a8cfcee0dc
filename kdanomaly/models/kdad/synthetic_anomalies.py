"""Synthetic anomalies for training (DRAEM / DeSTSeg style): Anomalib's Perlin-noise generator applied to
pre-processed (normalised) images, so the denoising student and the segmentation head see defect-like inputs
while only good images exist."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from torch import nn


class SyntheticAnomalies(nn.Module):
    """Paste Perlin-shaped anomalies into normalised images.

    Args:
        mean, std: the input normalisation of the images (per channel), undone before the generator (which works
            on [0, 1] images) and applied again after.
        probability: chance that an image receives an anomaly; the others pass unchanged with an empty mask.

    ``forward(images (B, 3, H, W))`` returns the images with anomalies and their masks ``(B, 1, H, W)`` in [0, 1]
    (1 inside an anomaly). Draws from torch's global generator, so ``seed_everything`` makes it repeatable.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], probability: float = 0.5) -> None:
        super().__init__()
        if not 0 < probability <= 1:
            raise ValueError(f"probability must be in (0, 1], got {probability}")
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).reshape(1, 3, 1, 1), persistent=False)
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.generator = PerlinAnomalyGenerator(probability=probability)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images with anomalies (same normalisation as the input) and the anomaly masks ``(B, 1, H, W)``."""
        unit = (images * self.std + self.mean).clamp(0, 1)
        anomalous, masks = self.generator(unit)
        return (anomalous - self.mean) / self.std, masks
