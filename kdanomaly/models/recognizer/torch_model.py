"""PyTorch model of the few-shot recognizer: timm backbone, global pooling, MLP projection to unit embeddings."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from kdanomaly.models.components.backbone import create_backbone


class RecognizerNet(nn.Module):
    """Image ``(B, 3, H, W)`` to L2-normalised pooled features and projected embeddings ``(B, embedding_size)``.

    Args:
        backbone: timm model (pooled features); ``pretrained`` loads its ImageNet weights.
        embedding_size: size of the projected embedding (the prototype memory's dimension).
        hidden_size: width of the projection MLP's hidden layer.
    """

    def __init__(
        self, backbone: str, embedding_size: int = 128, hidden_size: int = 512, pretrained: bool = True
    ) -> None:
        super().__init__()
        # Channels-last: a training step of tf_efficientnet_lite0 on CPU takes about half the time (measured).
        self.backbone = create_backbone(backbone, pretrained, num_classes=0).to(memory_format=torch.channels_last)
        self.projection = nn.Sequential(
            nn.Linear(cast(int, self.backbone.num_features), hidden_size),  # timm models' num_features: an int
            nn.ReLU(inplace=True),
            nn.Linear(hidden_size, embedding_size),
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-length pooled backbone features ``(B, num_features)`` and projected embeddings."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        pooled = self.backbone(images.contiguous(memory_format=torch.channels_last))
        return F.normalize(pooled, dim=1), F.normalize(self.projection(pooled), dim=1)
