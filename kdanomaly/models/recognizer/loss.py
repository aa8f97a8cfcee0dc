"""Losses of the few-shot recognizer: self-contrastive NT-Xent over three views and ArcFace."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def nt_xent(first: torch.Tensor, second: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised-temperature cross entropy: row ``i`` of ``first`` and of ``second`` are a positive pair,
    every other row of both is a negative. Mean over the ``2N`` anchors."""
    if first.shape != second.shape or first.ndim != 2 or len(first) < 2:
        raise ValueError(f"expected two (N, D) batches with N >= 2, got {tuple(first.shape)}, {tuple(second.shape)}")
    embeddings = F.normalize(torch.cat([first, second]), dim=1)
    logits = embeddings @ embeddings.T / temperature
    logits = logits.masked_fill(torch.eye(len(logits), dtype=torch.bool, device=logits.device), float("-inf"))
    n = len(first)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(logits.device)
    return F.cross_entropy(logits, positives)


def self_contrastive_loss(
    original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, temperature: float = 0.5
) -> torch.Tensor:
    """NT-Xent averaged over the pairs (original, view1), (original, view2) and (view1, view2)."""
    pairs = [(original, view1), (original, view2), (view1, view2)]
    return torch.stack([nt_xent(a, b, temperature) for a, b in pairs]).mean()


class ArcFaceLoss(nn.Module):
    """Additive angular margin (ArcFace): ``scale * cos(theta_y + margin)`` for the true class, cross entropy.

    Where ``theta_y + margin`` would pass pi the logit continues as ``cos(theta) - margin * sin(margin)`` (as in
    InsightFace), so it keeps decreasing with the angle.
    """

    def __init__(self, embedding_size: int, num_classes: int, margin: float = 0.5, scale: float = 30.0) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"ArcFace needs at least 2 classes, got {num_classes}")
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.xavier_uniform_(self.weight)
        self.margin, self.scale = margin, scale

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled cosine logits with the angular margin on each row's true class."""
        cosine = F.normalize(embeddings, dim=1) @ F.normalize(self.weight, dim=1).T
        true = cosine.gather(1, labels[:, None]).clamp(-1 + 1e-7, 1 - 1e-7)
        with_margin = torch.cos(torch.acos(true) + self.margin)
        beyond_pi = true <= math.cos(math.pi - self.margin)
        with_margin = torch.where(beyond_pi, true - self.margin * math.sin(self.margin), with_margin)
        return self.scale * cosine.scatter(1, labels[:, None], with_margin)

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean ArcFace cross entropy."""
        return F.cross_entropy(self.logits(embeddings, labels), labels)


class RecognizerLoss(nn.Module):
    """``alpha * L_con + beta * L_arc`` (defaults 0.75 and 0.25); ArcFace on the original images' embeddings."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        alpha: float = 0.75,
        beta: float = 0.25,
        temperature: float = 0.5,
        margin: float = 0.5,
    ) -> None:
        super().__init__()
        self.alpha, self.beta, self.temperature = alpha, beta, temperature
        self.arcface = ArcFaceLoss(embedding_size, num_classes, margin=margin)

    def forward(
        self, original: torch.Tensor, view1: torch.Tensor, view2: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Total loss and its two parts."""
        contrastive = self_contrastive_loss(original, view1, view2, self.temperature)
        arcface = self.arcface(original, labels)
        return {"loss": self.alpha * contrastive + self.beta * arcface, "contrastive": contrastive, "arcface": arcface}
