"""The training datamodules: classes, splits and batches from the data; bad data refused when they are built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.io import write_png

from kdanomaly.data.boxed_images import BoxedImagesDataModule
from kdanomaly.data.labelled_images import LabelledImagesDataModule


def _labelled(root: Path, counts: dict[str, int]) -> Path:
    """``root/<class>_<n>.png`` noise images, ``counts[class]`` of each."""
    root.mkdir(parents=True)
    for name, count in counts.items():
        for index in range(count):
            write_png((torch.rand(3, 20, 24) * 255).to(torch.uint8), str(root / f"{name}_{index}.png"))
    return root


def _boxed(root: Path, counts: dict[str, int]) -> tuple[Path, Path]:
    """``root/images`` 40x40 PNGs and ``root/annotations`` VOC files, one box per image, ``counts[class]`` each."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for name, count in counts.items():
        for index in range(count):
            write_png((torch.rand(3, 40, 40) * 255).to(torch.uint8), str(images / f"{name}{index}.png"))
            box = "<bndbox><xmin>5</xmin><ymin>6</ymin><xmax>25</xmax><ymax>30</ymax></bndbox>"
            xml = f"<annotation><object><name>{name}</name>{box}</object></annotation>"
            (annotations / f"{name}{index}.xml").write_text(xml)
    return images, annotations


def test_labelled_images_datamodule_batches_the_chosen_classes(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "types", {"pits": 2, "crazing": 3, "scratch": 1})
    every = LabelledImagesDataModule(root)
    assert every.classes == ["crazing", "pits", "scratch"] and len(every.images.paths) == 6
    two = LabelledImagesDataModule(root, classes=["scratch", "pits"], size=16, batch_size=8)
    assert two.classes == ["pits", "scratch"] and len(two.images.paths) == 3
    two.setup("fit")
    images, labels = next(iter(two.train_dataloader()))
    assert images.shape == (3, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    assert sorted(labels.tolist()) == [0, 0, 1]  # indices into two.classes


def test_labelled_images_datamodule_refuses_bad_data(tmp_path: Path) -> None:
    root = _labelled(tmp_path / "types", {"pits": 2})
    with pytest.raises(ValueError, match=r"no images of \['dent'\]; classes present: \['pits'\]"):
        LabelledImagesDataModule(root, classes=["pits", "dent"])
    with pytest.raises(ValueError, match=r"data\.classes is empty"):
        LabelledImagesDataModule(root, classes=[])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        LabelledImagesDataModule(tmp_path / "empty")
    with pytest.raises(ValueError, match="is not a folder"):
        LabelledImagesDataModule(tmp_path / "missing")


def test_boxed_images_datamodule_splits_seeded_and_stratified(tmp_path: Path) -> None:
    images, annotations = _boxed(tmp_path, {"bar": 5, "square": 10})
    data = BoxedImagesDataModule(images, annotations, image_size=32, batch_size=3)
    assert data.classes == ["bar", "square"]
    assert len(data.train_records) == 12 and len(data.held_out_records) == 3  # 1 bar and 2 squares held out
    assert {r.labels for r in data.held_out_records} == {("bar",), ("square",)}
    again = BoxedImagesDataModule(images, annotations)
    assert [r.path for r in again.held_out_records] == [r.path for r in data.held_out_records]
    other = BoxedImagesDataModule(images, annotations, seed=1)
    assert [r.path for r in other.held_out_records] != [r.path for r in data.held_out_records]
    batch, targets = next(iter(data.train_dataloader()))
    assert batch.shape == (3, 3, 32, 32) and len(targets) == 3 and targets[0]["boxes"].shape == (1, 4)
    held_out, _ = next(iter(data.val_dataloader()))  # no trainer: every held-out image, in order
    assert len(held_out) == 3


def test_boxed_images_datamodule_takes_k_per_class_and_chosen_classes(tmp_path: Path) -> None:
    images, annotations = _boxed(tmp_path, {"bar": 5, "square": 10})
    few = BoxedImagesDataModule(images, annotations, per_class=2, test_fraction=0.4)
    assert len(few.held_out_records) == 6  # 2 bars and 4 squares, before 2 of each are taken for training
    assert sorted(record.labels[0] for record in few.train_records) == ["bar", "bar", "square", "square"]
    bars = BoxedImagesDataModule(images, annotations, classes=["bar"])
    assert bars.classes == ["bar"] and len(bars.train_records) + len(bars.held_out_records) == 5


def test_boxed_images_datamodule_refuses_bad_data(tmp_path: Path) -> None:
    images, annotations = _boxed(tmp_path, {"bar": 3})
    with pytest.raises(ValueError, match=r"classes \['dent'\] do not occur"):
        BoxedImagesDataModule(images, annotations, classes=["dent"])
    with pytest.raises(ValueError, match="need 4 images of each class"):
        BoxedImagesDataModule(images, annotations, per_class=4)
    with pytest.raises(ValueError, match="test_fraction must be in"):
        BoxedImagesDataModule(images, annotations, test_fraction=1.0)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match=r"holds no \.xml annotations"):
        BoxedImagesDataModule(images, tmp_path / "none")
