"""The magnetic-tile split: deterministic, disjoint, every defect image with a mask of its own size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdanomaly.data.magnetic_tile import DEFECT_CLASSES, MagneticTile, make_magnetic_tile_samples


def _write_tile_set(root: Path, n_free: int = 10, n_defect: int = 2) -> None:
    """A miniature copy of the layout: grey JPEGs of varying size, PNG masks beside the defect images."""
    rng = np.random.default_rng(0)
    for cls, count in [("Free", n_free), *((c, n_defect) for c in DEFECT_CLASSES)]:
        folder = root / f"MT_{cls}" / "Imgs"
        folder.mkdir(parents=True)
        for i in range(count):
            height, width = rng.integers(40, 90, size=2)
            Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8)).save(folder / f"exp_{i}.jpg")
            mask = np.zeros((height, width), dtype=np.uint8)
            mask[5:15, 5:15] = 255 if cls != "Free" else 0
            Image.fromarray(mask).save(folder / f"exp_{i}.png")


@pytest.fixture
def tile_root(tmp_path: Path) -> Path:
    _write_tile_set(tmp_path)
    return tmp_path


def test_split_is_deterministic_and_disjoint(tile_root: Path) -> None:
    first = make_magnetic_tile_samples(tile_root, train_fraction=0.6, seed=3)
    assert first.equals(make_magnetic_tile_samples(tile_root, train_fraction=0.6, seed=3))
    assert not first.equals(make_magnetic_tile_samples(tile_root, train_fraction=0.6, seed=4))
    train = set(first[first.split == "train"].image_path)
    test = set(first[first.split == "test"].image_path)
    assert not train & test
    assert len(train) == 6
    assert len(test) == 4 + 2 * len(DEFECT_CLASSES)
    assert all("MT_Free" in path for path in train)


def test_every_defect_image_has_a_mask_of_its_own_size(tile_root: Path) -> None:
    samples = make_magnetic_tile_samples(tile_root)
    defects = samples[samples.label_index == 1]
    assert len(defects) == 2 * len(DEFECT_CLASSES)
    for image_path, mask_path in zip(defects.image_path, defects.mask_path, strict=True):
        assert Path(mask_path).stem == Path(image_path).stem
        assert Image.open(mask_path).size == Image.open(image_path).size


def test_missing_mask_and_missing_folders_are_reported(
    tile_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (tile_root / "MT_Crack" / "Imgs" / "exp_0.png").unlink()
    with pytest.raises(FileNotFoundError, match="has no mask"):
        make_magnetic_tile_samples(tile_root)
    with pytest.raises(FileNotFoundError, match="MT_Free"):
        make_magnetic_tile_samples(tmp_path_factory.mktemp("empty"))
    with pytest.raises(ValueError, match="train_fraction"):
        make_magnetic_tile_samples(tile_root, train_fraction=1.0)


def test_datamodule_serves_anomalib_batches(tile_root: Path) -> None:
    datamodule = MagneticTile(root=tile_root, train_batch_size=4, eval_batch_size=4, num_workers=0)
    datamodule.setup()
    assert len(datamodule.train_data) == 5
    assert len(datamodule.val_data) == len(datamodule.test_data) == 5 + 2 * len(DEFECT_CLASSES)
    item = datamodule.test_data[len(datamodule.test_data) - 1]
    assert item.image.shape[0] == 3
    assert item.gt_mask.shape == item.image.shape[-2:]
    assert bool(item.gt_label)
    assert item.gt_mask.any()
