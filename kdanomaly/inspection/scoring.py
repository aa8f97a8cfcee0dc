"""Batched anomaly scoring of image files: a DataLoader decodes and resizes in worker processes, the model scores.

A file that cannot be read becomes an error item in its batch instead of stopping the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from kdanomaly.data.images import as_unit_float, read_pixels

if TYPE_CHECKING:
    from kdanomaly.engines.runtime import Engine

PREFETCH_BATCHES = 2  # batches decoded ahead of the one being scored
DISPLAY_SIDE = 768  # longest side of the picture kept for overlays, thumbnails and region crops


@dataclass
class LoadedImage:
    """One input: the model's view (float32 ``(3, S, S)`` in [0, 1]), a display copy (uint8 ``(h, w, 3)`` RGB,
    longest side at most ``DISPLAY_SIDE``) and the original ``(width, height)``; or the reason it could not be read.

    Arrays, not tensors: a DataLoader worker hands numpy arrays over its pipe in one copy, where every tensor costs
    a shared-memory file and a socket hand-over (about 4 ms an image at 256 px, measured).
    """

    path: Path
    image: np.ndarray | None = None
    display: np.ndarray | None = None
    size: tuple[int, int] = (0, 0)
    error: str | None = None


def _resized(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``image`` at ``height x width`` (itself when already that size: read images lie in [0, 1])."""
    if tuple(image.shape[-2:]) == (height, width):
        return image
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
            pixels = read_pixels(path)
            image = as_unit_float(pixels)
            height, width = image.shape[1:]
            shrink = min(1.0, DISPLAY_SIDE / max(height, width))
            if shrink == 1 and pixels.dtype == torch.uint8:  # 8-bit and small: the decoded pixels themselves
                display_pixels = np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
            else:
                display = _resized(image, max(round(height * shrink), 1), max(round(width * shrink), 1))
                display_pixels = (display * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            model_view = _resized(image, *self.image_size).numpy()
            return LoadedImage(path, model_view, display_pixels, (width, height))
        except Exception as error:
            return LoadedImage(path, error=str(error) or type(error).__name__)


def read_images(paths: Sequence[Path], image_size: tuple[int, int]) -> list[LoadedImage]:
    """``paths`` decoded as ``inspect`` decodes them, in order; ValueError naming every one that cannot be read
    (for callers that need all of them: reviewed images, a benchmark's test set)."""
    files = ImageFiles(paths, image_size)
    loaded = [files[i] for i in range(len(files))]
    unreadable = [f"{item.path}: {item.error}" for item in loaded if item.error is not None]
    if unreadable:
        raise ValueError("images that cannot be read: " + "; ".join(unreadable))
    return loaded


def model_views(loaded: Sequence[LoadedImage]) -> np.ndarray:
    """The model views ``(N, 3, S, S)`` of the readable images among ``loaded``, in order."""
    return np.stack([item.image for item in loaded if item.image is not None])


def read_model_views(paths: Sequence[Path], image_size: tuple[int, int]) -> np.ndarray:
    """The model views ``(N, 3, S, S)`` of ``paths``, all of which must be readable (see :func:`read_images`)."""
    return model_views(read_images(paths, image_size))


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

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores ``(B,)`` and maps ``(B, S, S)`` of images ``(B, 3, S, S)`` in [0, 1] at :attr:`image_size`."""
        return self.engine(images)

    def batches(self, paths: Sequence[Path], batch_size: int = 16, workers: int = 2) -> Iterator[ScoredBatch]:
        """Score ``paths`` in order, ``batch_size`` at a time, decoding in ``workers`` threads ahead of the engine.

        Threads, not processes: Pillow, numpy and the engines release the GIL, and a thread hands its arrays over
        without the copy and the pipe a worker process needs (at 256 px that hand-over cost as much as decoding).
        """
        files = ImageFiles(paths, self.image_size)
        with ThreadPoolExecutor(max_workers=max(workers, 1)) as decoders:
            pending: deque[Future[LoadedImage]] = deque()
            ahead = iter(range(len(files)))
            for index in islice(ahead, batch_size * (PREFETCH_BATCHES + 1)):
                pending.append(decoders.submit(files.__getitem__, index))
            while pending:
                items = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
                for index in islice(ahead, len(items)):
                    pending.append(decoders.submit(files.__getitem__, index))
                yield self._scored(items)

    def _scored(self, items: list[LoadedImage]) -> ScoredBatch:
        readable = [item.image for item in items if item.image is not None]
        if readable:
            scores, maps = self(np.stack(readable))
        else:
            scores, maps = np.zeros(0, np.float32), np.zeros((0, *self.image_size), np.float32)
        return ScoredBatch(items, scores, maps)
