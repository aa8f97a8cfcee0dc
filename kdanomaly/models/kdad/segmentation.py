"""DeSTSeg's segmentation head (Zhang et al., CVPR 2023): it learns, on synthetic anomalies, where the student's
features part from the teacher's, from the per-channel products of their normalised features at every scale."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import sigmoid_focal_loss


def _conv_bn_relu(inputs: int, outputs: int, kernel_size: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel_size // 2)
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, kernel_size, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


class SegmentationHead(nn.Module):
    """Anomaly logits ``(B, 1, h, w)`` at the finest scale's resolution from teacher and student feature dicts.

    Per scale the input is ``normalize(t) * normalize(s)`` (channels sum to the cosine similarity, so the head
    sees each channel's share of it), upsampled to the finest scale and concatenated; then a 1x1 reduction to
    ``width`` channels, two 3x3 convolutions (the second dilated by 2) and a 1x1 output.
    """

    def __init__(self, channels: Sequence[int], width: int = 48) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv_bn_relu(sum(channels), width, 1),
            _conv_bn_relu(width, width, 3),
            _conv_bn_relu(width, width, 3, dilation=2),
            nn.Conv2d(width, 1, 1),
        )

    def forward(self, teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits ``(B, 1, h, w)``, ``(h, w)`` the largest feature map's size."""
        size = max((value.shape[-2:] for value in teacher.values()), key=lambda shape: shape[0] * shape[1])
        products = [
            F.interpolate(F.normalize(teacher[layer], dim=1) * F.normalize(student[layer], dim=1), size=size,
                          mode="bilinear", align_corners=False)
            for layer in teacher
        ]  # fmt: skip
        return self.layers(torch.cat(products, dim=1))


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Focal loss (gamma 2, unweighted) plus L1 between the predicted probabilities and the masks, as DeSTSeg.

    ``masks (B, 1, H, W)`` in [0, 1] are area-averaged down to the logits' size (soft targets at mask borders).
    """
    targets = F.interpolate(masks, size=logits.shape[-2:], mode="area")
    focal = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=2, reduction="mean")
    return focal + F.l1_loss(torch.sigmoid(logits), targets)
