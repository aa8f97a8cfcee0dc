"""A feature pyramid built from Ghost convolutions: torchvision's top-down FPN with cheap lateral and output blocks."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class GhostConv(nn.Module):
    """A linear Ghost module (GhostNet, Han et al. 2020): half the output channels from an ordinary ``k x k`` conv,
    the other half from a cheap depthwise 3x3 conv of that first half, concatenated.

    timm's ``GhostModule`` adds BatchNorm and ReLU to both halves, right for a classification backbone but not for
    an FPN, whose convs are linear with a bias; batch statistics of a few detection images are noise. Initialised
    as torchvision initialises its FPN convs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"a Ghost conv needs an even number of output channels, got {out_channels}")
        half = out_channels // 2
        self.primary = nn.Conv2d(in_channels, half, kernel_size, padding=kernel_size // 2)
        self.cheap = nn.Conv2d(half, half, 3, padding=1, groups=half)
        for conv in (self.primary, self.cheap):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.zeros_(cast(torch.Tensor, conv.bias))  # built with bias=True

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        primary = self.primary(features)
        return torch.cat([primary, self.cheap(primary)], dim=1)


def standard_fpn(in_channels: list[int], out_channels: int) -> FeaturePyramidNetwork:
    """torchvision's FPN (1x1 lateral convs, 3x3 output convs) with a max-pooled extra level."""
    return FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())


def ghost_fpn(in_channels: list[int], out_channels: int) -> FeaturePyramidNetwork:
    """The same pyramid with every lateral and output conv replaced by a :class:`GhostConv`; the 3x3 output convs,
    most of an FPN's weights, shrink by about half."""
    fpn = standard_fpn(in_channels, out_channels)
    fpn.inner_blocks = nn.ModuleList(GhostConv(channels, out_channels, 1) for channels in in_channels)
    fpn.layer_blocks = nn.ModuleList(GhostConv(out_channels, out_channels, 3) for _ in in_channels)
    return fpn
