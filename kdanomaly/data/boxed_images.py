"""Boxed defect images (Pascal VOC or COCO) as a LightningDataModule: seeded training images and held-out images."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from kdanomaly.data import detection
from kdanomaly.data.detection import DetectionDataset, collate, read_annotated
from kdanomaly.models.components.distributed import evaluation_sampler

HELD_OUT_BATCH_SIZE = 8


class BoxedImagesDataModule(LightningDataModule):
    """``(images, targets)`` batches of :class:`DetectionDataset`: training images and the held-out ones for mAP.

    The annotations are read and split on construction (a seeded, stratified split, see
    :func:`~kdanomaly.data.detection.split`), so bad data fails before any model is built; the images themselves are
    read batch by batch.

    Args:
        images: image folder.
        annotations: Pascal VOC ``.xml`` folder or COCO ``.json`` file.
        classes: only images whose boxes are all of these classes, which are then the class list (default: every
            annotated class).
        per_class: train on this many images of each class (seeded; default: every training image).
        test_fraction: share of every class held out for the validation mAP.
        seed: seed of the split and of ``per_class`` (``kdanomaly detect train`` seeds everything with it).
        flips: random left-right and top-bottom flips of the training images.
        image_size: square side the images are resized to, in pixels.
        batch_size: training images per batch (per process under DDP).
    """

    def __init__(
        self,
        images: Path,
        annotations: Path,
        classes: list[str] | None = None,
        per_class: int | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
        flips: bool = True,
        image_size: int = 224,
        batch_size: int = 4,
    ) -> None:
        super().__init__()
        records, self.classes = read_annotated(Path(images), Path(annotations), classes)
        self.train_records, self.held_out_records = detection.split(records, test_fraction, seed)
        if per_class is not None:
            self.train_records = detection.per_class(self.train_records, per_class, seed)
        self.flips = flips
        self.image_size = image_size
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        dataset = DetectionDataset(self.train_records, self.classes, self.image_size, flips=self.flips)
        return DataLoader(dataset, self.batch_size, shuffle=True, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        """The held-out images, each scored by exactly one process under DDP (no repeats in the mAP); every image in
        order without a trainer."""
        dataset = DetectionDataset(self.held_out_records, self.classes, self.image_size)
        sampler = None if self.trainer is None else evaluation_sampler(dataset, self.trainer)
        return DataLoader(dataset, HELD_OUT_BATCH_SIZE, sampler=sampler, collate_fn=collate)
