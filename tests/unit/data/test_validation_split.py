"""The validation set made from training normals: deterministic, disjoint, never a test image."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdanomaly.benchmark.contenders import DatasetSpec
from kdanomaly.data.validation_split import SPLIT_FILE, split_training_normals, write_validation_set


def test_split_is_deterministic_disjoint_and_independent_of_the_input_order() -> None:
    paths = [Path(f"/data/train/{i:03d}.png") for i in range(50)]
    training, held_out = split_training_normals(paths, fraction=0.2, seed=0)
    assert len(held_out) == 10 and len(training) == 40
    assert set(training).isdisjoint(held_out) and set(training) | set(held_out) == set(paths)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    assert split_training_normals(shuffled, fraction=0.2, seed=0) == (training, held_out)
    assert split_training_normals(paths, fraction=0.2, seed=1)[1] != held_out


@pytest.mark.parametrize(("count", "fraction"), [(1, 0.2), (3, 0.9)])
def test_split_refuses_to_leave_nothing_to_train_on(count: int, fraction: float) -> None:
    with pytest.raises(ValueError, match="cannot spare"):
        split_training_normals([Path(f"{i}.png") for i in range(count)], fraction=fraction)


def _mvtec_category(root: Path) -> None:
    """A tiny MVTec-layout category: textured training and test images, one defect type with masks."""
    rng = np.random.default_rng(0)
    for folder, count in [("train/good", 10), ("test/good", 3), ("test/crack", 3)]:
        (root / "part" / folder).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 255, size=(48, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "part" / folder / f"{i:03d}.png")
    (root / "part/ground_truth/crack").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((48, 48), 255, np.uint8)).save(root / f"part/ground_truth/crack/{i:03d}_mask.png")


def test_validation_set_comes_from_training_normals_only(tmp_path: Path) -> None:
    _mvtec_category(tmp_path / "mvtec")
    training_images = DatasetSpec.parse(f"mvtec:{tmp_path / 'mvtec'}:part").training_images(seed=0)
    assert sorted(p.parent.name for p in training_images) == ["good"] * 10
    assert all("train" in p.parts for p in training_images)
    root = write_validation_set(training_images, tmp_path / "validation", image_size=(32, 32))
    split = json.loads((root / SPLIT_FILE).read_text())
    assert len(split["held_out"]) == 2 and set(split["held_out"]).isdisjoint(split["training"])
    linked = sorted(str(link.resolve()) for link in (root / "train").iterdir())
    assert linked == sorted(str(Path(p).resolve()) for p in split["training"])
    names = sorted(p.name for p in (root / "good").iterdir())
    assert (
        names
        == sorted(p.name for p in (root / "defect").iterdir())
        == sorted(p.name for p in (root / "masks").iterdir())
    )
    for name in names:
        good = np.asarray(Image.open(root / "good" / name), dtype=float)
        defect = np.asarray(Image.open(root / "defect" / name), dtype=float)
        mask = np.asarray(Image.open(root / "masks" / name)) > 0
        assert good.shape == (32, 32, 3) and mask.any()
        assert np.abs(good - defect)[mask].max() > 0  # a blended defect under its mask
    datamodule = DatasetSpec("folder", root, "part").datamodule(seed=0)
    datamodule.setup()
    assert len(datamodule.train_data) == 8 and len(datamodule.test_data) == 4
    again = write_validation_set(training_images, tmp_path / "again", image_size=(32, 32))
    for name in names:
        assert (again / "defect" / name).read_bytes() == (root / "defect" / name).read_bytes()


def test_validation_set_of_warped_defects_records_its_family_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    _mvtec_category(tmp_path / "mvtec")
    training_images = DatasetSpec.parse(f"mvtec:{tmp_path / 'mvtec'}:part").training_images(seed=0)
    root = write_validation_set(training_images, tmp_path / "warp", image_size=(32, 32), defects="warp")
    assert json.loads((root / SPLIT_FILE).read_text())["defects"] == "warp"
    blended = write_validation_set(training_images, tmp_path / "blend", image_size=(32, 32))
    assert json.loads((blended / SPLIT_FILE).read_text())["defects"] == "blend"
    name = sorted(p.name for p in (root / "defect").iterdir())[0]
    assert (root / "defect" / name).read_bytes() != (blended / "defect" / name).read_bytes()
    with pytest.raises(ValueError, match="unknown defect family 'cutout'"):
        write_validation_set(training_images, tmp_path / "bad", defects="cutout")
    assert not (tmp_path / "bad").exists()
