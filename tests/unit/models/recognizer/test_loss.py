"""The recognizer's losses against hand computations: NT-Xent and ArcFace."""

from __future__ import annotations

import math

import pytest
import torch

from kdanomaly.models.recognizer.loss import ArcFaceLoss, nt_xent, self_contrastive_loss


def _hand_nt_xent(first: list[list[float]], second: list[list[float]], temperature: float) -> float:
    rows = [[x / math.hypot(*row) for x in row] for row in first + second]
    n, total = len(first), 0.0
    for i, anchor in enumerate(rows):
        positive = (i + n) % (2 * n)
        similarity = [sum(a * b for a, b in zip(anchor, other, strict=True)) / temperature for other in rows]
        denominator = sum(math.exp(s) for k, s in enumerate(similarity) if k != i)
        total += -math.log(math.exp(similarity[positive]) / denominator)
    return total / (2 * n)


def test_nt_xent_matches_a_hand_computation() -> None:
    first, second = [[1.0, 0.0], [0.6, 0.8]], [[0.8, 0.6], [0.0, 1.0]]
    expected = _hand_nt_xent(first, second, 0.5)
    assert float(nt_xent(torch.tensor(first), torch.tensor(second), 0.5)) == pytest.approx(expected, rel=1e-5)
    third = [[-1.0, 0.2], [0.3, -0.9]]
    averaged = (expected + _hand_nt_xent(first, third, 0.5) + _hand_nt_xent(second, third, 0.5)) / 3
    combined = self_contrastive_loss(torch.tensor(first), torch.tensor(second), torch.tensor(third), 0.5)
    assert float(combined) == pytest.approx(averaged, rel=1e-5)
    with pytest.raises(ValueError, match="N >= 2"):
        nt_xent(torch.ones(1, 2), torch.ones(1, 2))


def test_arcface_adds_the_angular_margin_to_the_true_class_only() -> None:
    loss = ArcFaceLoss(embedding_size=2, num_classes=2, margin=0.5, scale=10.0)
    with torch.no_grad():
        loss.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    angle = math.radians(30)
    embedding = torch.tensor([[math.cos(angle), math.sin(angle)]])
    logits = loss.logits(embedding, torch.tensor([0]))
    assert logits[0, 0].item() == pytest.approx(10 * math.cos(angle + 0.5), rel=1e-5)  # true class: cos(theta + m)
    assert logits[0, 1].item() == pytest.approx(10 * math.sin(angle), rel=1e-5)  # other class: plain cosine
    expected = -math.log(math.exp(10 * math.cos(angle + 0.5)) / (math.exp(10 * math.cos(angle + 0.5)) + math.exp(5)))
    assert float(loss(embedding, torch.tensor([0]))) == pytest.approx(expected, rel=1e-5)
    opposite = loss.logits(torch.tensor([[-1.0, 0.01]]), torch.tensor([0]))  # theta + m beyond pi: stays monotone
    assert opposite[0, 0].item() == pytest.approx(10 * (math.cos(math.pi - 0.01) - 0.5 * math.sin(0.5)), abs=1e-3)
