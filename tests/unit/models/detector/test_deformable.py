"""Deformable convolutions: zero offsets give the plain convolution; the last blocks start as pretrained."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import DeformConv2d

from kdanomaly.models.detector.deformable import DeformableConv, make_last_blocks_deformable


def test_deformable_conv_with_zero_offsets_equals_the_plain_conv() -> None:
    torch.manual_seed(0)
    plain = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    deformable = DeformableConv.from_conv(plain)
    features = torch.randn(2, 8, 9, 9)
    assert torch.allclose(deformable(features), plain(features), atol=1e-5)  # the offset branch starts at zero
    offsets = torch.zeros(2, 18, 9, 9)
    assert torch.allclose(deformable.conv(features, offsets), plain(features), atol=1e-5)
    shifted = deformable.conv(features, offsets + 1.0)  # every tap moved by one pixel down and right
    assert torch.allclose(shifted[..., 1:-2, 1:-2], plain(features)[..., 2:-1, 2:-1], atol=1e-5)
    assert isinstance(deformable.conv, DeformConv2d)
    with pytest.raises(ValueError, match="square kernels"):
        DeformableConv.from_conv(nn.Conv2d(4, 4, (3, 1)))


def test_last_blocks_become_deformable_and_start_as_the_pretrained_network() -> None:
    import timm

    torch.manual_seed(0)
    body = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True, out_indices=(4,)).eval()
    images = torch.rand(1, 3, 64, 64)
    before = body(images)[0]
    assert make_last_blocks_deformable(body.blocks, 2) == ["6.0", "5.3"]
    assert isinstance(body.blocks[6][0].conv_dw, DeformableConv) and isinstance(
        body.blocks[5][3].conv_dw, DeformableConv
    )
    assert not isinstance(body.blocks[5][2].conv_dw, DeformableConv)
    assert torch.allclose(body(images)[0], before, atol=1e-4)
    with pytest.raises(ValueError, match="eligible"):
        make_last_blocks_deformable(body.blocks, 100)
