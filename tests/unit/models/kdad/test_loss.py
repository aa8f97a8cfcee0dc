"""The KDAnomaly distillation loss."""

from __future__ import annotations

import pytest
import torch

from kdanomaly.models.kdad.loss import KDADLoss


def test_loss_is_zero_for_a_perfect_student_and_counts_sspcab() -> None:
    features = {"a": torch.randn(2, 8, 4, 4), "b": torch.randn(2, 16, 2, 2)}
    loss = KDADLoss(sspcab_weight=0.1)
    perfect = loss(features, {k: 3 * v for k, v in features.items()})  # cosine ignores the scale
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-6)
    pairs = {"a": (torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2))}
    assert loss(features, features, pairs)["loss"].item() == pytest.approx(0.1, abs=1e-6)


def test_segmentation_term_is_added_and_needs_masks() -> None:
    features = {"a": torch.randn(2, 8, 4, 4)}
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :4, :4] = 1
    loss = KDADLoss()
    wrong = torch.full((2, 1, 4, 4), 5.0)  # confident "anomaly" everywhere
    losses = loss(features, features, segmentation_logits=wrong, masks=masks)
    assert losses["segmentation"].item() > 1
    assert losses["loss"].item() == pytest.approx(losses["segmentation"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="masks"):
        loss(features, features, segmentation_logits=wrong)
