"""Contrastive proposal encoding loss (FSCE, Sun et al. 2021): supervised contrastive over IoU-filtered proposals."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def proposal_contrastive_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    ious: torch.Tensor,
    temperature: float = 0.2,
    iou_threshold: float = 0.7,
) -> torch.Tensor:
    """Supervised contrastive loss over the proposals whose IoU with their matched box is at least ``iou_threshold``.

    For a kept proposal ``i`` with positives ``P(i)`` (the other kept proposals of its class)::

        L_i = -1/|P(i)| * sum_{j in P(i)} log( exp(z_i.z_j / t) / sum_{k != i} exp(z_i.z_k / t) )

    on unit embeddings ``z``; the loss is the mean of ``iou_i * L_i`` over kept proposals with a positive (FSCE's
    IoU re-weighting). Zero, still connected to the graph, when no proposal qualifies.
    """
    if embeddings.ndim != 2 or labels.shape != (len(embeddings),) or ious.shape != (len(embeddings),):
        raise ValueError(
            f"expected embeddings (N, D), labels (N,), ious (N,), got {tuple(embeddings.shape)}, "
            f"{tuple(labels.shape)}, {tuple(ious.shape)}"
        )
    keep = ious >= iou_threshold
    z, y, weight = F.normalize(embeddings[keep], dim=1), labels[keep], ious[keep]
    not_self = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    positives = (y[:, None] == y[None, :]) & not_self
    has_positive = positives.any(dim=1)
    if not has_positive.any():
        return embeddings.sum() * 0.0
    logits = (z @ z.T / temperature).masked_fill(~not_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    mean_positive = log_prob.masked_fill(~positives, 0.0).sum(dim=1) / positives.sum(dim=1).clamp(min=1)
    return -(weight * mean_positive)[has_positive].mean()
