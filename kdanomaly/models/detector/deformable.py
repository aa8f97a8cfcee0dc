"""Deformable convolution for the last backbone blocks: torchvision's ``DeformConv2d`` with learned offsets."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torchvision.ops import DeformConv2d


class DeformableConv(nn.Module):
    """A ``DeformConv2d`` whose sampling offsets are predicted from its input.

    The offset branch is separable (a depthwise ``k x k`` conv, then a ``1 x 1`` conv to the ``2 k^2`` offsets), far
    lighter than a full ``k x k`` offset conv on wide layers; its last conv starts at zero, so a freshly converted
    layer computes exactly what the plain convolution did.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.conv = DeformConv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.offset = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels, bias=False),
            nn.Conv2d(in_channels, 2 * kernel_size * kernel_size, 1),
        )
        offset_conv = cast(nn.Conv2d, self.offset[1])
        nn.init.zeros_(offset_conv.weight)
        nn.init.zeros_(cast(torch.Tensor, offset_conv.bias))  # built with bias=True

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> DeformableConv:
        """The deformable counterpart of a square, symmetric-padded ``conv``, with its weights."""
        kernel, stride, padding = conv.kernel_size, conv.stride, conv.padding
        if isinstance(padding, str) or len(set(kernel)) != 1 or len(set(stride)) != 1 or len(set(padding)) != 1:
            raise ValueError(f"only square kernels with symmetric numeric padding can be made deformable: {conv}")
        if conv.dilation != (1, 1):
            raise ValueError(f"dilated convolutions are not supported: {conv}")
        layer = cls(
            conv.in_channels, conv.out_channels, kernel[0], stride[0], padding[0], conv.groups, conv.bias is not None
        )
        layer.conv.weight.data.copy_(conv.weight.data)
        if conv.bias is not None:
            layer.conv.bias.data.copy_(conv.bias.data)
        return layer

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features, self.offset(features))


def make_last_blocks_deformable(blocks: nn.Sequential, count: int) -> list[str]:
    """Replace the depthwise conv of the last ``count`` stride-1 inverted-residual blocks with a DeformableConv.

    ``blocks`` is a timm EfficientNet/MobileNet ``blocks`` attribute (stages of blocks with ``conv_dw``).
    Returns the names of the converted blocks (``"stage.block"``), last first.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    candidates = [
        (f"{stage_index}.{block_index}", block)
        for stage_index, stage in enumerate(blocks)
        for block_index, block in enumerate(cast(nn.Sequential, stage))
        if type(getattr(block, "conv_dw", None)) is nn.Conv2d and block.conv_dw.stride == (1, 1)
    ]
    if count > len(candidates):
        raise ValueError(f"asked for {count} deformable blocks, the backbone has {len(candidates)} eligible ones")
    converted = []
    for name, block in reversed(candidates[len(candidates) - count :]):
        block.conv_dw = DeformableConv.from_conv(cast(nn.Conv2d, block.conv_dw))  # a Conv2d: filtered above
        converted.append(name)
    return converted
