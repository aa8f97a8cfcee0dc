"""The reverse-distillation student (RD4AD, Deng & Li, CVPR 2022): it never sees the image. The teacher's stages
are squeezed through a one-class bottleneck and a decoder rebuilds every stage from it; what the bottleneck cannot
carry (an anomaly) is rebuilt as normal, so teacher and student part exactly there.

SimAM follows every decoder block, and the SSPCAB sits on the bottleneck's code."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from anomalib.models.components.layers import SSPCAB
from torch import nn

from kdanomaly.models.components.simam import SimAM

DEFAULT_BOTTLENECK_WIDTH = 512
MIN_DECODER_WIDTH = 64


def _conv_bn_relu(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(outputs),
        nn.ReLU(inplace=True),
    )


def _steps_of_two(ratio: int) -> int:
    """How many stride-2 steps make ``ratio``, which must be a power of two."""
    if ratio < 1 or ratio & (ratio - 1):
        raise ValueError(f"the stages' strides must differ by powers of two, got a ratio of {ratio}")
    return ratio.bit_length() - 1


class OneClassBottleneck(nn.Module):
    """RD4AD's multi-scale fusion and one-class embedding: each teacher stage is brought to the deepest stage's
    stride and channels by stride-2 3x3 convolutions, the stages are concatenated, and a strided residual block
    compresses them to ``width`` channels at twice the deepest stride: ``(B, width, H / 2s, W / 2s)``."""

    def __init__(self, channels: Sequence[int], strides: Sequence[int], width: int = DEFAULT_BOTTLENECK_WIDTH) -> None:
        super().__init__()
        deepest, fused = max(strides), channels[-1]
        self.align = nn.ModuleList(
            nn.Sequential(
                *(_conv_bn_relu(c if step == 0 else fused, fused, 2) for step in range(_steps_of_two(deepest // s)))
            )
            for c, s in zip(channels, strides, strict=True)
        )
        joined = fused * len(channels)
        self.residual = nn.Sequential(
            _conv_bn_relu(joined, width, 2),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(joined, width, 1, stride=2, bias=False), nn.BatchNorm2d(width))

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Code ``(B, width, h, w)`` for the teacher's stage features, shallowest first."""
        joined = torch.cat([align(value) for align, value in zip(self.align, features, strict=True)], dim=1)
        return torch.relu(self.residual(joined) + self.shortcut(joined))


class DecoderStage(nn.Module):
    """Upsample by ``factor`` (transposed convolution), refine with a 3x3 convolution (SimAM after it), and
    project to the teacher stage's channels. Returns the refined activation (the next stage's input) and the
    projection (the rebuilt teacher features)."""

    def __init__(self, inputs: int, width: int, channels: int, factor: int, use_simam: bool) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ConvTranspose2d(inputs, width, factor, stride=factor, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            _conv_bn_relu(width, width),
            SimAM() if use_simam else nn.Identity(),
        )
        self.project = nn.Conv2d(width, channels, 1)

    def forward(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.block(inputs)
        return hidden, self.project(hidden)


class ReverseStudent(nn.Module):
    """Teacher features in, rebuilt teacher features out (same layers, shapes), through the one-class bottleneck.

    Args:
        layers, channels, strides: the teacher's distilled stages, shallowest first.
        use_simam: a SimAM after every decoder block.
        use_sspcab: an SSPCAB on the bottleneck's code (its (input, output) pair feeds the SSPCAB loss).
        sspcab_kernel_size, sspcab_dilation: the SSPCAB's sub-kernel size and dilation.
        bottleneck_width: channels of the code.
    """

    def __init__(
        self,
        layers: Sequence[str],
        channels: Sequence[int],
        strides: Sequence[int],
        use_simam: bool = True,
        use_sspcab: bool = True,
        sspcab_kernel_size: int = 1,
        sspcab_dilation: int = 1,
        bottleneck_width: int = DEFAULT_BOTTLENECK_WIDTH,
    ) -> None:
        super().__init__()
        if not len(layers) == len(channels) == len(strides) or list(strides) != sorted(strides):
            raise ValueError(f"expected one channel count and stride per layer, shallowest first: {layers}, {strides}")
        self.layers = list(layers)
        self.bottleneck = OneClassBottleneck(channels, strides, bottleneck_width)
        self.sspcab = (
            SSPCAB(bottleneck_width, kernel_size=sspcab_kernel_size, dilation=sspcab_dilation) if use_sspcab else None
        )
        stages, inputs, previous_stride = [], bottleneck_width, 2 * max(strides)
        for c, s in reversed(list(zip(channels, strides, strict=True))):
            width = max(MIN_DECODER_WIDTH, 2 * c)
            stages.append(DecoderStage(inputs, width, c, 2 ** _steps_of_two(previous_stride // s), use_simam))
            inputs, previous_stride = width, s
        self.decoder = nn.ModuleList(stages)

    def forward(
        self, teacher: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Rebuilt features per layer, and the SSPCAB's ``{"bottleneck": (input, output)}`` (empty without it)."""
        code = self.bottleneck([teacher[layer] for layer in self.layers])
        pairs = {}
        if self.sspcab is not None:
            pairs["bottleneck"] = (code, self.sspcab(code))
            code = pairs["bottleneck"][1]
        rebuilt, hidden = {}, code
        for layer, stage in zip(reversed(self.layers), self.decoder, strict=True):
            hidden, rebuilt[layer] = stage(hidden)
        return {layer: rebuilt[layer] for layer in self.layers}, pairs
