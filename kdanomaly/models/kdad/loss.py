"""KDAnomaly's training loss: per-scale distillation plus the SSPCAB self-supervised term."""

from __future__ import annotations

from typing import Literal, cast

import torch
from torch import nn
from torch.nn import functional as F

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
    """``sum_layers mean(distance(teacher, student)) + sspcab_weight * mean_layers MSE(SSPCAB(s), s)``."""

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
    ) -> dict[str, torch.Tensor]:
        """Return ``{"loss", "distillation", "sspcab"}``; ``sspcab_pairs`` maps layer -> (input, output)."""
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
        return {"loss": distillation + self.sspcab_weight * sspcab, "distillation": distillation, "sspcab": sspcab}
