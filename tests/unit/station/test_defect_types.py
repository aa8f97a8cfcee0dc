"""The station's type embedding: with background contrast, the texture a defect sits on cancels out."""

from __future__ import annotations

import torch

from kdanomaly.station.defect_types import TeacherEmbedder


def _identity_embedder(background_contrast: bool) -> TeacherEmbedder:
    """A TeacherEmbedder whose 'teacher' returns the image itself as its one feature map (no checkpoint)."""
    embedder = TeacherEmbedder.__new__(TeacherEmbedder)
    embedder.teacher = lambda images: {"deepest": images}  # type: ignore[assignment]
    embedder.mean, embedder.std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    embedder.embedding_dim = 3
    embedder.background_contrast = background_contrast
    return embedder


def test_background_contrast_cancels_the_surface_a_defect_sits_on() -> None:
    defect = torch.zeros(1, 3, 8, 8)
    defect[:, 0, 2:5, 2:5] = 1.0  # the same defect on two surfaces of different colour
    weights = (defect[:, :1] > 0).float()
    surfaces = [torch.tensor([0.0, 0.5, 0.2]), torch.tensor([0.0, 0.1, 0.9])]
    images = torch.cat([defect + surface.reshape(1, 3, 1, 1) for surface in surfaces])
    contrasted = _identity_embedder(True).embed_weighted(images, weights.expand(2, 1, 8, 8))
    torch.testing.assert_close(contrasted[0], contrasted[1], atol=1e-4, rtol=0)
    plain = _identity_embedder(False).embed_weighted(images, weights.expand(2, 1, 8, 8))
    assert torch.dot(plain[0], plain[1]) < 0.9  # without it, the surfaces pull the two apart
