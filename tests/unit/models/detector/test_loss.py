"""The detector's contrastive proposal loss against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from kdanomaly.models.detector.loss import proposal_contrastive_loss


def _hand_contrastive(embeddings: list[list[float]], labels: list[int], ious: list[float], t: float) -> float:
    kept = [i for i, iou in enumerate(ious) if iou >= 0.7]
    unit = {i: [x / math.hypot(*embeddings[i]) for x in embeddings[i]] for i in kept}
    losses = []
    for i in kept:
        positives = [j for j in kept if j != i and labels[j] == labels[i]]
        if not positives:
            continue
        sim = {k: sum(a * b for a, b in zip(unit[i], unit[k], strict=True)) / t for k in kept if k != i}
        denominator = sum(math.exp(s) for s in sim.values())
        mean_log = sum(math.log(math.exp(sim[j]) / denominator) for j in positives) / len(positives)
        losses.append(-ious[i] * mean_log)
    return sum(losses) / len(losses)


def test_proposal_contrastive_loss_matches_a_hand_computation() -> None:
    embeddings = [[1.0, 0.1], [0.9, 0.3], [-0.2, 1.0], [0.1, 0.8], [0.5, 0.5], [1.0, -1.0]]
    labels, ious = [1, 1, 2, 2, 3, 1], [0.9, 0.75, 0.8, 0.95, 0.85, 0.3]  # class 3 has no positive; last is dropped
    expected = _hand_contrastive(embeddings, labels, ious, 0.2)
    loss = proposal_contrastive_loss(torch.tensor(embeddings), torch.tensor(labels), torch.tensor(ious), 0.2, 0.7)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    none_kept = proposal_contrastive_loss(torch.ones(3, 2, requires_grad=True), torch.ones(3), torch.zeros(3))
    assert float(none_kept.detach()) == 0.0 and none_kept.requires_grad
    with pytest.raises(ValueError, match="labels"):
        proposal_contrastive_loss(torch.ones(3, 2), torch.ones(2), torch.ones(3))
