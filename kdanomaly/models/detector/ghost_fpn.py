"""A feature pyramid built from Ghost modules: torchvision's top-down FPN with cheap lateral and output blocks."""

from __future__ import annotations

from timm.models.ghostnet import GhostModule
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


def standard_fpn(in_channels: list[int], out_channels: int) -> FeaturePyramidNetwork:
    """torchvision's FPN (1x1 lateral convs, 3x3 output convs) with a max-pooled extra level."""
    return FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=LastLevelMaxPool())


def ghost_fpn(in_channels: list[int], out_channels: int) -> FeaturePyramidNetwork:
    """The same pyramid with every lateral and output conv replaced by a Ghost module (GhostNet, Han et al. 2020).

    A Ghost module computes half its channels with an ordinary conv and the other half with a cheap depthwise 3x3
    conv of the first half; the 3x3 output convs, most of an FPN's weights, shrink by about half.
    """
    fpn = standard_fpn(in_channels, out_channels)
    fpn.inner_blocks = nn.ModuleList(GhostModule(channels, out_channels, kernel_size=1) for channels in in_channels)
    fpn.layer_blocks = nn.ModuleList(GhostModule(out_channels, out_channels, kernel_size=3) for _ in in_channels)
    return fpn
