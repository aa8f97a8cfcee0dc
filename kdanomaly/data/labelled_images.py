"""Labelled defect images for the few-shot recognizer: one folder per class, or ``<class>_<n>.<ext>`` names (NEU);
their LightningDataModule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset
from torchvision.transforms.v2.functional import resize

from kdanomaly.data import IMAGE_SUFFIXES, image_files
from kdanomaly.data.images import read_image


@dataclass(frozen=True)
class LabelledImages:
    """Image paths and their class names, sorted by path."""

    paths: list[Path]
    labels: list[str]

    @property
    def classes(self) -> list[str]:
        """The class names, sorted."""
        return sorted(set(self.labels))

    def of(self, classes: Sequence[str]) -> LabelledImages:
        """Only the images of ``classes``; ValueError for a class that has none."""
        missing = set(classes) - set(self.labels)
        if missing:
            raise ValueError(f"no images of {sorted(missing)}; classes present: {self.classes}")
        kept = [(p, label) for p, label in zip(self.paths, self.labels, strict=True) if label in classes]
        return LabelledImages([p for p, _ in kept], [label for _, label in kept])


def list_labelled_images(root: str | Path) -> LabelledImages:
    """Images under ``root``: ``root/<class>/*.ext`` if it has class folders, else ``root/<class>_<n>.ext``."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of labelled images")
    images = image_files(root)
    if not images:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    nested = any(p.parent != root for p in images)
    if nested:
        labels = [p.relative_to(root).parts[0] for p in images]
        images = [p for p, label in zip(images, labels, strict=True) if label != p.name]
        labels = [p.relative_to(root).parts[0] for p in images]
    else:
        unnamed = [p.name for p in images if "_" not in p.stem]
        if unnamed:
            raise ValueError(f"{root}: cannot tell the class of {unnamed[:3]}; use <class>_<n> names or class folders")
        labels = [p.stem.rsplit("_", 1)[0] for p in images]
    return LabelledImages(images, labels)


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """Images as ``(N, 3, size, size)`` floats in ``[0, 1]``, read as ``read_image`` does; names a bad file."""
    return torch.stack([resize(read_image(path), [size, size], antialias=True).clamp_(0, 1) for path in paths])


class LabelledImagesDataModule(LightningDataModule):
    """Labelled images (see :func:`list_labelled_images`) as shuffled ``(images, labels)`` training batches:
    images ``(B, 3, size, size)`` in ``[0, 1]``, labels int64 indices into :attr:`classes`.

    The images are listed (and ``classes`` checked) on construction, so bad data fails before any model is built;
    they are read into memory in :meth:`setup`.

    Args:
        root: class folders or ``<class>_<n>`` images.
        classes: train on these classes only (default: every class under ``root``).
        size: image side after resizing, in pixels.
        batch_size: images per training batch (per process under DDP).
    """

    def __init__(self, root: Path, classes: list[str] | None = None, size: int = 128, batch_size: int = 32) -> None:
        super().__init__()
        if classes is not None and not classes:
            raise ValueError("data.classes is empty; leave it out to train on every class")
        everything = list_labelled_images(root)
        self.images = everything if classes is None else everything.of(classes)
        self.classes = self.images.classes
        self.size = size
        self.batch_size = batch_size

    def setup(self, stage: str) -> None:
        """Read and resize every image once (the recognizer's data sets are small)."""
        del stage
        labels = torch.tensor([self.classes.index(label) for label in self.images.labels])
        self.dataset = TensorDataset(load_images(self.images.paths, self.size), labels)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)
