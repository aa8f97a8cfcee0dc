"""Magnetic-tile surface defects (Huang et al., The Visual Computer 2020) as an Anomalib datamodule.

Layout: ``root/MT_<class>/Imgs/<name>.jpg`` with its pixel mask ``<name>.png`` (0 background, 255 defect).

Split (fixed, seeded): the defect-free ``MT_Free`` images are permuted with ``numpy.random.default_rng(seed)``;
the first ``round(train_fraction * n)`` train the model, the rest are the good test images. Every image of
the five defect classes is a test image, with its own mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.data.datasets.base import AnomalibDataset
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from pandas import DataFrame
from torchvision.transforms.v2 import Transform

DEFECT_CLASSES = ("Blowhole", "Break", "Crack", "Fray", "Uneven")
GOOD_CLASS = "Free"
COLUMNS = ["image_path", "mask_path", "label", "label_index", "split"]


def _images(root: Path, cls: str) -> list[Path]:
    folder = root / f"MT_{cls}" / "Imgs"
    if not folder.is_dir():
        raise FileNotFoundError(f"magnetic tile folder {folder} is missing (expected root/MT_<class>/Imgs)")
    return sorted(folder.glob("*.jpg"))


def make_magnetic_tile_samples(root: str | Path, train_fraction: float = 0.5, seed: int = 0) -> DataFrame:
    """All samples with their split; raises if an image lacks its mask or the set is empty."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    root = Path(root)
    good = _images(root, GOOD_CLASS)
    if not good:
        raise RuntimeError(f"no defect-free images in {root / f'MT_{GOOD_CLASS}' / 'Imgs'}")
    order = np.random.default_rng(seed).permutation(len(good))
    n_train = round(train_fraction * len(good))
    rows = [
        (str(good[i]), "", GOOD_CLASS, int(LabelName.NORMAL), "train" if rank < n_train else "test")
        for rank, i in enumerate(order)
    ]
    for cls in DEFECT_CLASSES:
        for image in _images(root, cls):
            mask = image.with_suffix(".png")
            if not mask.is_file():
                raise FileNotFoundError(f"defect image {image} has no mask {mask.name}")
            rows.append((str(image), str(mask), cls, int(LabelName.ABNORMAL), "test"))
    samples = DataFrame(rows, columns=COLUMNS)
    samples.attrs["task"] = "segmentation"
    return samples


class MagneticTileDataset(AnomalibDataset):
    """One split of the magnetic-tile set."""

    def __init__(
        self,
        root: str | Path,
        split: str | Split,
        train_fraction: float = 0.5,
        seed: int = 0,
        augmentations: Transform | None = None,
    ) -> None:
        super().__init__(augmentations=augmentations)
        split_value = split.value if isinstance(split, Split) else split
        samples = make_magnetic_tile_samples(root, train_fraction, seed)
        subset = samples[samples.split == split_value].reset_index(drop=True)
        subset.attrs["task"] = "segmentation"
        self.samples = subset


class MagneticTile(AnomalibDataModule):
    """Anomalib datamodule: train on part of ``MT_Free``, test on the rest plus every defect image.

    Validation (Anomalib's thresholds and normalisation) uses the test set, as Anomalib's MVTecAD does.
    """

    def __init__(
        self,
        root: str | Path,
        train_fraction: float = 0.5,
        split_seed: int = 0,
        train_batch_size: int = 8,
        eval_batch_size: int = 16,
        num_workers: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            **{"val_split_mode": ValSplitMode.SAME_AS_TEST, "test_split_mode": TestSplitMode.FROM_DIR, **kwargs},
        )
        self.root = Path(root)
        self.category = "magnetic_tile"
        self.train_fraction = train_fraction
        self.split_seed = split_seed

    def _setup(self, _stage: str | None = None) -> None:
        def dataset(split: Split) -> MagneticTileDataset:
            return MagneticTileDataset(self.root, split, self.train_fraction, self.split_seed)

        self.train_data = dataset(Split.TRAIN)
        self.test_data = dataset(Split.TEST)
