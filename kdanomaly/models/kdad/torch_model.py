"""PyTorch model of KDAnomaly: frozen pretrained teacher, SimAM student, SSPCAB on the student's features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from anomalib.data import InferenceBatch
from anomalib.models.components.layers import SSPCAB
from torch import nn

from kdanomaly.models.components import TimmFeatures, insert_simam, validate_image_size

from .anomaly_map import AnomalyMapGenerator, Fusion
from .loss import Distance


class TrainingFeatures(NamedTuple):
    """What a training forward pass returns to the loss."""

    teacher: dict[str, torch.Tensor]
    student: dict[str, torch.Tensor]
    sspcab_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]


def _module_key(layer: str) -> str:
    """ModuleDict keys cannot contain dots ("blocks.1" -> "blocks_1")."""
    return layer.replace(".", "_")


class KDADModel(nn.Module):
    """Student-teacher distillation network.

    Args:
        backbone: timm model name shared by teacher (pretrained, frozen) and student (from scratch).
        layers: feature stages to distil, e.g. ``("blocks.1", "blocks.2", "blocks.4")``.
        use_simam: put a SimAM after every block of the student's stages.
        use_sspcab: pass each student feature map through an SSPCAB block before matching the teacher.
        sspcab_kernel_size, sspcab_dilation: size of the SSPCAB's corner sub-kernels and their distance
            from the masked centre.
        distance: ``"cosine"`` or ``"l2"`` (between channel-normalised features), for loss and map alike.
        fusion: how per-scale maps are combined, ``"mean"`` or ``"product"``.
        sigma: Gaussian smoothing of the fused map, in pixels.
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        use_simam: bool = True,
        use_sspcab: bool = True,
        sspcab_kernel_size: int = 1,
        sspcab_dilation: int = 1,
        distance: Distance = "cosine",
        fusion: Fusion = "mean",
        sigma: float = 4.0,
    ) -> None:
        super().__init__()
        self.teacher = TimmFeatures(backbone, layers, pretrained=True).eval()
        self.teacher.requires_grad_(False)
        self.student = TimmFeatures(backbone, layers, pretrained=False)
        if use_simam:
            insert_simam(self.student.model)
        self.sspcab = (
            nn.ModuleDict(
                {
                    _module_key(layer): SSPCAB(channels, kernel_size=sspcab_kernel_size, dilation=sspcab_dilation)
                    for layer, channels in zip(self.student.layers, self.student.channels, strict=True)
                }
            )
            if use_sspcab
            else None
        )
        self.anomaly_map_generator = AnomalyMapGenerator(distance=distance, fusion=fusion, sigma=sigma)
        self.max_stride = max(self.teacher.strides)

    def train(self, mode: bool = True) -> KDADModel:
        """Switch the student to ``mode``; the teacher always stays in eval mode (frozen BatchNorm)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ValueError for tensors the networks cannot take."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        validate_image_size(images.shape[-2:], self.max_stride)

    def student_features(
        self, images: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Student features after SSPCAB, and each SSPCAB's (input, output) pair."""
        features = self.student(images)
        if self.sspcab is None:
            return features, {}
        pairs = {layer: (value, self.sspcab[_module_key(layer)](value)) for layer, value in features.items()}
        return {layer: output for layer, (_, output) in pairs.items()}, pairs

    def forward(self, images: torch.Tensor) -> TrainingFeatures | InferenceBatch:
        """Training: teacher/student features. Eval: anomaly map ``(B, 1, H, W)`` and image score (its max)."""
        self.check_input(images)
        with torch.no_grad():
            teacher = self.teacher(images)
        student, pairs = self.student_features(images)
        if self.training:
            return TrainingFeatures(teacher, student, pairs)
        anomaly_map = self.anomaly_map_generator(teacher, student, images.shape[-2:])
        return InferenceBatch(pred_score=torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map=anomaly_map)
