"""SSPCAB (Anomalib's layer, used by the KDAnomaly student): the masked centre the paper defines it by."""

from __future__ import annotations

import pytest
import torch
from anomalib.models.components.layers import SSPCAB


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
