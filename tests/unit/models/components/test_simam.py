"""SimAM: the numeric properties the paper defines it by, and its insertion after every backbone block."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from kdanomaly.models.components import SimAM, insert_simam


def simam_by_energy(x: np.ndarray, lambda_: float) -> np.ndarray:
    """SimAM from the paper's minimal energy e* = 4(s2 + l) / ((t - mu)^2 + 2 s2 + 2 l), out = x * sigmoid(1/e*)."""
    out = np.empty_like(x)
    for b, c in np.ndindex(x.shape[:2]):
        t = x[b, c]
        mu = t.mean()
        s2 = ((t - mu) ** 2).sum() / (t.size - 1)
        energy = 4 * (s2 + lambda_) / ((t - mu) ** 2 + 2 * s2 + 2 * lambda_)
        out[b, c] = t / (1 + np.exp(-1 / energy))
    return out


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 8, 16, 16)])
def test_simam_matches_its_closed_form(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    expected = simam_by_energy(x.numpy(), 1e-4)
    np.testing.assert_allclose(SimAM(1e-4)(x).numpy(), expected, rtol=1e-10, atol=1e-12)


def test_simam_has_no_parameters_and_emphasises_outliers() -> None:
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 3, 3] = 5.0
    x[0, 0, 5, 5] = 1.0
    weights = SimAM()(x) / x.clamp(min=1e-12)
    assert not list(SimAM().parameters())
    assert weights[0, 0, 3, 3] > weights[0, 0, 5, 5] > 0.5


@pytest.mark.parametrize(("backbone", "expected"), [("tf_efficientnet_lite0", 16), ("resnet18", 8)])
def test_insert_simam_follows_every_block(backbone: str, expected: int) -> None:
    model = timm.create_model(backbone, pretrained=False, features_only=True)
    assert insert_simam(model) == expected
    wrapped = [m for m in model.modules() if isinstance(m, torch.nn.Sequential) and isinstance(m[-1], SimAM)]
    assert len(wrapped) == expected
    assert model(torch.randn(1, 3, 64, 64))[-1].shape[-1] == 2
