"""Anomaly maps from teacher-student discrepancies."""

from __future__ import annotations

from typing import Literal

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F

from .loss import Distance, feature_distance

Fusion = Literal["mean", "product"]
Standardisation = Literal["pixels", "image_max"]


def reflect_blur_matrix(weights: torch.Tensor, size: int) -> torch.Tensor:
    """``(size, size)`` matrix ``M`` with ``M @ x`` = ``x`` (a column of ``size`` values) convolved with the odd-length
    1-D ``weights`` under reflect padding (the edge value not repeated), as ``F.pad(..., mode="reflect")`` does."""
    radius = len(weights) // 2
    if radius >= size:
        raise ValueError(f"a blur kernel of {len(weights)} taps needs maps larger than {size} pixels")
    rows = torch.arange(size)[:, None].expand(size, len(weights))
    sources = rows + torch.arange(-radius, radius + 1)[None, :]
    sources = torch.where(sources < 0, -sources, sources)
    sources = torch.where(sources >= size, 2 * (size - 1) - sources, sources)
    matrix = torch.zeros(size, size, dtype=weights.dtype)
    return matrix.index_put_((rows.reshape(-1), sources.reshape(-1)), weights.repeat(size), accumulate=True)


class GaussianBlur(GaussianBlur2d):
    """Anomalib's Gaussian blur of single-channel maps computed as two matrix products, ``B_h @ map @ B_w^T``.

    The Gaussian is separable and the reflect border is linear, so both fold into one matrix per axis; a product
    of 256 x 256 matrices runs at GEMM speed, where a 33 x 33 single-channel convolution is memory-bound (about
    20x slower on a 2-core CPU). Same state (the 2-D kernel buffer) as Anomalib's, so checkpoints load as before.
    """

    def __init__(self, sigma: float, kernel_size: int) -> None:
        super().__init__(sigma=sigma, channels=1, kernel_size=kernel_size)
        self._matrices: dict[tuple[int, int, torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, input_tensor: torch.Tensor) -> torch.Tensor:
        """Blurred ``(B, 1, H, W)`` maps."""
        height, width = input_tensor.shape[-2:]
        key = (int(height), int(width), input_tensor.dtype, input_tensor.device)
        if key not in self._matrices:
            self._matrices[key] = self._blur_matrices(height, width, input_tensor)
        vertical, horizontal = self._matrices[key]
        return vertical @ input_tensor @ horizontal.T

    def _blur_matrices(self, height: int, width: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column blur matrices, as ordinary tensors even when first built under ``torch.inference_mode``
        (Lightning tests and predicts in it; an export afterwards needs tensors autograd may see)."""
        with torch.inference_mode(False), torch.no_grad():
            kernel = self.kernel[0, 0].clone().to(torch.float64)
            rows, cols = kernel.sum(dim=1), kernel.sum(dim=0)  # the 2-D kernel is their outer product
            return (
                reflect_blur_matrix(rows, height).to(dtype=like.dtype, device=like.device),
                reflect_blur_matrix(cols, width).to(dtype=like.dtype, device=like.device),
            )


class AnomalyMapGenerator(nn.Module):
    """Per-scale discrepancy, upsampled to the input size, fused over scales, Gaussian-smoothed."""

    def __init__(self, distance: Distance = "cosine", fusion: Fusion = "mean", sigma: float = 4.0) -> None:
        super().__init__()
        if fusion not in ("mean", "product"):
            raise ValueError(f"unknown fusion {fusion!r}; use 'mean' or 'product'")
        self.distance: Distance = distance
        self.fusion: Fusion = fusion
        kernel_size = 2 * int(4.0 * sigma + 0.5) + 1
        self.blur = GaussianBlur(sigma=sigma, kernel_size=kernel_size)

    def forward(
        self,
        teacher_features: dict[str, torch.Tensor],
        student_features: dict[str, torch.Tensor],
        image_size: tuple[int, int] | torch.Size,
        smooth: bool = True,
    ) -> torch.Tensor:
        """Anomaly map ``(B, 1, H, W)``: large where the student fails to reproduce the teacher.

        ``smooth=False`` skips the Gaussian, for maps that are fused with another map and smoothed once after.
        """
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
        return self.blur(fused) if smooth else fused


RELATIVE_STD_FLOOR = 0.01  # of the mean's size: the least spread a map's normal statistics are given


class MapStatistics(nn.Module):
    """Mean and standard deviation of the distillation and memory maps on normal images; fuses the two maps.

    ``standardise="pixels"``: the statistics of all pixels of the normal maps. ``"image_max"``: those of each
    normal map's maximum (the image score's scale), so a map whose normal pixels are nearly constant but whose
    maxima vary (a segmentation head's probabilities) is not blown up by a tiny pixel standard deviation.
    """

    def __init__(self, standardise: Standardisation = "pixels") -> None:
        super().__init__()
        if standardise not in ("pixels", "image_max"):
            raise ValueError(f"unknown standardisation {standardise!r}; use 'pixels' or 'image_max'")
        self.standardise: Standardisation = standardise
        self.register_buffer("values", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        self.values: torch.Tensor

    def _moments(self, maps: torch.Tensor) -> list[torch.Tensor]:
        """Mean and standard deviation of ``maps (N, 1, H, W)`` as standardised, the deviation floored at
        :data:`RELATIVE_STD_FLOOR` of the mean's size: maxima that agree more closely than that (a segmentation
        head's constant peak) would turn rounding differences between engines into large score differences. One
        map has no spread of maxima: its pixels' statistics stand in (a single-image k-shot memory)."""
        values = maps if self.standardise == "pixels" or len(maps) < 2 else maps.amax(dim=(-2, -1))
        mean = values.mean()
        return [mean, values.std().clamp_min(max(RELATIVE_STD_FLOOR * float(mean.abs()), 1e-6))]

    def fit(self, distillation_maps: torch.Tensor, memory_maps: torch.Tensor | None = None) -> None:
        """Record the maps' statistics. Without ``memory_maps`` only the distillation statistics change (the
        memory's follow the frozen teacher)."""
        memory = self._moments(memory_maps) if memory_maps is not None else list(self.values[2:])
        self.values = torch.stack([*self._moments(distillation_maps), *memory])

    def fuse(self, distillation_map: torch.Tensor, memory_map: torch.Tensor, memory_weight: float) -> torch.Tensor:
        """``(1 - w) * z(distillation) + w * z(memory)``, each map standardised by its normal-image statistics."""
        distillation_mean, distillation_std, memory_mean, memory_std = self.values
        distillation = (distillation_map - distillation_mean) / distillation_std
        return (1 - memory_weight) * distillation + memory_weight * (memory_map - memory_mean) / memory_std
