"""SimAM and SSPCAB: the numeric properties the papers define them by."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from anomalib.models.components.layers import SSPCAB

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


def masked_response(block: SSPCAB, inputs: torch.Tensor) -> torch.Tensor:
    """Sum of SSPCAB's four corner sub-kernel convolutions, recomputed from its parts."""
    padded = torch.nn.functional.pad(inputs, (block.pad,) * 4)
    c = block.crop
    return (
        block.masked_conv1(padded[..., :-c, :-c])
        + block.masked_conv2(padded[..., :-c, c:])
        + block.masked_conv3(padded[..., c:, :-c])
        + block.masked_conv4(padded[..., c:, c:])
    )


def se_gate(block: SSPCAB, masked: torch.Tensor) -> torch.Tensor:
    """SSPCAB's squeeze-excitation channel weights, ``(B, C, 1, 1)``."""
    se = block.attention_module
    return torch.sigmoid(se.fc2(torch.relu(se.fc1(masked.mean(dim=(2, 3))))))[..., None, None]


@pytest.mark.parametrize(("kernel_size", "dilation"), [(1, 1), (3, 2)])
@torch.no_grad()
def test_sspcab_output_at_a_pixel_ignores_the_input_at_that_pixel(kernel_size: int, dilation: int) -> None:
    """The masked convolution never sees the centre; the only path from it is the global SE channel gate."""
    torch.manual_seed(0)
    block = SSPCAB(16, kernel_size=kernel_size, dilation=dilation).eval()
    x = torch.randn(2, 16, 12, 12)
    changed = x.clone()
    changed[:, :, 5, 6] += 10 * torch.randn(2, 16)

    torch.testing.assert_close(block(x), masked_response(block, x) * se_gate(block, masked_response(block, x)))
    assert torch.equal(masked_response(block, x)[..., 5, 6], masked_response(block, changed)[..., 5, 6])
    assert not torch.equal(masked_response(block, x), masked_response(block, changed))  # neighbours do see it
    expected = masked_response(block, x)[..., 5, 6] * se_gate(block, masked_response(block, changed))[..., 0, 0]
    torch.testing.assert_close(block(changed)[..., 5, 6], expected)
