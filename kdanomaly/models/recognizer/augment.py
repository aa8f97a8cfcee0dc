"""The recognizer's random views: resized crop, rotation by a multiple of 90 degrees, flips."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2 import RandomResizedCrop
from torchvision.transforms.v2.functional import resized_crop


class DefectViews(nn.Module):
    """A random view of every image of a square batch ``(B, C, S, S)``, independently per image.

    Surface defects have no canonical orientation, so the four 90-degree rotations and both flips are all views
    of the same defect; the resized crop (``scale`` of the area) keeps most of it in view.
    """

    def __init__(self, scale: tuple[float, float] = (0.5, 1.0)) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """One random view per image, same shape."""
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"expected a batch of square images (B, C, S, S), got {tuple(images.shape)}")
        size = list(images.shape[-2:])
        views = []
        for image in images:
            top, left, height, width = RandomResizedCrop.get_params(image, list(self.scale), [3 / 4, 4 / 3])
            view = resized_crop(image, top, left, height, width, size, antialias=True)
            view = torch.rot90(view, int(torch.randint(4, ())), dims=(-2, -1))
            flips = [dim for dim, flip in zip((-1, -2), torch.rand(2) < 0.5, strict=True) if flip]
            views.append(view.flip(flips) if flips else view)
        return torch.stack(views)
