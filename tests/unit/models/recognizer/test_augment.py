"""The recognizer's defect views: rotations and flips of the whole image."""

from __future__ import annotations

import pytest
import torch

from kdanomaly.models.recognizer.augment import DefectViews


def test_views_are_rotations_and_flips_of_the_whole_image_at_full_scale() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 16, 16)
    views = DefectViews(scale=(1.0, 1.0))(images)
    assert views.shape == images.shape
    for image, view in zip(images, views, strict=True):
        symmetries = [torch.rot90(image, k, (-2, -1)).flip(f) for k in range(4) for f in ([], [-1], [-2], [-1, -2])]
        assert any(torch.allclose(view, candidate, atol=1e-5) for candidate in symmetries)
    with pytest.raises(ValueError, match="square"):
        DefectViews()(torch.rand(1, 3, 16, 12))
