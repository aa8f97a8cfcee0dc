"""KDAnomaly's training loss: per-scale distillation, the SSPCAB self-supervised term and, with a segmentation
head, its loss on the synthetic anomalies' masks."""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

from .segmentation import segmentation_loss

Distance = Literal["cosine", "l2"]


def feature_distance(teacher: torch.Tensor, student: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Per-position discrepancy ``(B, 1, h, w)`` between channel-normalised feature maps.

    ``cosine``: ``1 - cos(t, s)``; ``l2``: ``||t/|t| - s/|s| ||_2`` (both 0 for a perfect student).
    """
    if distance == "cosine":
        return 1 - F.cosine_similarity(teacher, student, dim=1).unsqueeze(1)
    if distance == "l2":
        return torch.linalg.vector_norm(F.normalize(teacher, dim=1) - F.normalize(student, dim=1), dim=1, keepdim=True)
    raise ValueError(f"unknown distance {distance!r}; use 'cosine' or 'l2'")


class KDADLoss(nn.Module):
    """``sum_layers mean(distance(teacher, student)) + sspcab_weight * mean_layers MSE(SSPCAB(s), s)``
    ``+ segmentation_loss(logits, masks)`` (focal + L1, when the model has a segmentation head)."""

    def __init__(self, distance: Distance = "cosine", sspcab_weight: float = 0.1) -> None:
        super().__init__()
        if distance not in ("cosine", "l2"):
            raise ValueError(f"unknown distance {distance!r}; use 'cosine' or 'l2'")
        self.distance: Distance = distance
        self.sspcab_weight = sspcab_weight

    def forward(
        self,
        teacher_features: dict[str, torch.Tensor],
        student_features: dict[str, torch.Tensor],
        sspcab_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        segmentation_logits: torch.Tensor | None = None,
        masks: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "distillation", "sspcab", "segmentation"}``; ``sspcab_pairs`` maps layer ->
        (input, output); ``masks (B, 1, H, W)`` are the synthetic anomalies' masks the logits must predict."""
        # A sum of tensors (``sum`` is typed ``Tensor | Literal[0]`` for an empty iterable).
        distillation = cast(
            torch.Tensor,
            sum(
                feature_distance(teacher_features[layer], student_features[layer], self.distance).mean()
                for layer in teacher_features
            ),
        )
        sspcab = torch.zeros((), device=distillation.device)
        if sspcab_pairs:
            sspcab = torch.stack([F.mse_loss(out, inp) for inp, out in sspcab_pairs.values()]).mean()
        segmentation = torch.zeros((), device=distillation.device)
        if segmentation_logits is not None:
            if masks is None:
                raise ValueError("segmentation logits need the synthetic anomalies' masks to learn from")
            segmentation = segmentation_loss(segmentation_logits, masks)
        loss = distillation + self.sspcab_weight * sspcab + segmentation
        return {"loss": loss, "distillation": distillation, "sspcab": sspcab, "segmentation": segmentation}
