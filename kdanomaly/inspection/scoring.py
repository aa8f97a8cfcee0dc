"""Batched anomaly scoring of image files: a DataLoader decodes and resizes in worker processes, the model scores.

A file that cannot be read becomes an error item in its batch instead of stopping the run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from kdanomaly.data.images import read_image

if TYPE_CHECKING:
    from kdanomaly.engines.runtime import Engine

DISPLAY_SIDE = 768  # longest side of the picture kept for overlays, thumbnails and region crops


@dataclass
class LoadedImage:
    """One input: the model's view (``(3, S, S)`` in [0, 1]), a display copy (uint8 ``(h, w, 3)`` RGB, longest side
    at most ``DISPLAY_SIDE``) and the original ``(width, height)``; or the reason it could not be read."""

    path: Path
    image: torch.Tensor | None = None
    display: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    error: str | None = None


def _resized(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True)[0].clamp_(0, 1)


class ImageFiles(Dataset):
    """Image files as :class:`LoadedImage` items; every failure (unreadable, truncated, ...) is caught as an error."""

    def __init__(self, paths: Sequence[Path], image_size: tuple[int, int]) -> None:
        self.paths = list(paths)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> LoadedImage:
        path = self.paths[index]
        try:
            image = read_image(path)
            height, width = image.shape[1:]
            shrink = min(1.0, DISPLAY_SIDE / max(height, width))
            display = _resized(image, max(round(height * shrink), 1), max(round(width * shrink), 1))
            display_pixels = (display * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            return LoadedImage(path, _resized(image, *self.image_size), display_pixels, (width, height))
        except Exception as error:
            return LoadedImage(path, error=str(error) or type(error).__name__)


@dataclass
class ScoredBatch:
    """Loaded images of one batch; ``scores``/``maps`` (``(n, S, S)``) for the readable ones, in their order."""

    items: list[LoadedImage]
    scores: np.ndarray
    maps: np.ndarray


class AnomalyScorer:
    """An engine (see :mod:`kdanomaly.engines`) as a scorer of image files: raw anomaly scores and maps."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.image_size: tuple[int, int] = engine.image_size

    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(B,)`` and maps ``(B, S, S)`` of images ``(B, 3, S, S)`` in [0, 1] at :attr:`image_size`."""
        return self.engine(images)

    def batches(self, paths: Sequence[Path], batch_size: int = 16, workers: int = 2) -> Iterator[ScoredBatch]:
        """Score ``paths`` in order, ``batch_size`` at a time, decoding in ``workers`` processes."""
        loader = DataLoader(
            ImageFiles(paths, self.image_size), batch_size=batch_size, num_workers=workers, collate_fn=list,
            persistent_workers=False, prefetch_factor=4 if workers else None,
        )  # fmt: skip
        for items in loader:
            readable = [item.image for item in items if item.error is None]
            if readable:
                scores, maps = self(torch.stack(readable))
            else:
                scores, maps = np.zeros(0, np.float32), np.zeros((0, *self.image_size), np.float32)
            yield ScoredBatch(items, scores, maps)
