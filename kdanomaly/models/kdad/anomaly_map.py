"""Anomaly maps from teacher-student discrepancies."""

from __future__ import annotations

from typing import Literal

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F

from .loss import Distance, feature_distance

Fusion = Literal["mean", "product"]


class AnomalyMapGenerator(nn.Module):
    """Per-scale discrepancy, upsampled to the input size, fused over scales, Gaussian-smoothed."""

    def __init__(self, distance: Distance = "cosine", fusion: Fusion = "mean", sigma: float = 4.0) -> None:
        super().__init__()
        if fusion not in ("mean", "product"):
            raise ValueError(f"unknown fusion {fusion!r}; use 'mean' or 'product'")
        self.distance: Distance = distance
        self.fusion: Fusion = fusion
        kernel_size = 2 * int(4.0 * sigma + 0.5) + 1
        self.blur = GaussianBlur2d(sigma=sigma, channels=1, kernel_size=kernel_size)

    def forward(
        self,
        teacher_features: dict[str, torch.Tensor],
        student_features: dict[str, torch.Tensor],
        image_size: tuple[int, int] | torch.Size,
    ) -> torch.Tensor:
        """Anomaly map ``(B, 1, H, W)``: large where the student fails to reproduce the teacher."""
        layer_maps = [
            F.interpolate(
                feature_distance(teacher_features[layer], student_features[layer], self.distance),
                size=image_size,
                mode="bilinear",
                align_corners=False,
            )
            for layer in teacher_features
        ]
        stacked = torch.stack(layer_maps)
        fused = stacked.mean(dim=0) if self.fusion == "mean" else stacked.prod(dim=0)
        return self.blur(fused)
