"""Tests for the embedded synthetic surface-defect dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdanomaly.data.synthetic import (
    DEFECT_TYPES,
    TEXTURES,
    generate_synthetic_dataset,
    render_sample,
)

SIZE = 64
COUNTS = {"n_train": 3, "n_test_good": 2, "n_test_per_defect": 2}


def _generate(root: Path, category: str = "weave", **overrides: int) -> Path:
    return generate_synthetic_dataset(root, category, image_size=SIZE, **{**COUNTS, **overrides})


def _files(category_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(category_dir)): p.read_bytes() for p in category_dir.rglob("*") if p.is_file()}


def _mtimes(category_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(category_dir)): p.stat().st_mtime_ns for p in category_dir.rglob("*")}


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _generate(tmp_path_factory.mktemp("synthetic"), "granite")


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    first, second = _generate(tmp_path / "a"), _generate(tmp_path / "b")
    assert _files(first) == _files(second)
    assert _files(_generate(tmp_path / "c", seed=1)) != _files(first)


def test_layout_and_counts(dataset: Path) -> None:
    assert dataset.name == "granite"
    assert _names(dataset) == ["ground_truth", "manifest.json", "test", "train"]
    assert _names(dataset / "train") == ["good"]
    assert _names(dataset / "train" / "good") == ["000.png", "001.png", "002.png"]
    assert _names(dataset / "test") == sorted(["good", *DEFECT_TYPES])
    assert _names(dataset / "test" / "good") == ["000.png", "001.png"]
    assert _names(dataset / "ground_truth") == sorted(DEFECT_TYPES)
    for defect in DEFECT_TYPES:
        assert _names(dataset / "test" / defect) == ["000.png", "001.png"]
        assert _names(dataset / "ground_truth" / defect) == ["000_mask.png", "001_mask.png"]
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert manifest["category"] == "granite"
    assert manifest["image_size"] == SIZE
    assert manifest["seed"] == 0
    assert {key: manifest[key] for key in COUNTS} == COUNTS


def test_images_are_rgb_and_match_render_sample(dataset: Path) -> None:
    for path in dataset.glob("t*/*/*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB"
            assert image.size == (SIZE, SIZE)
            pixels = np.asarray(image)
        split, label = path.parts[-3], path.parts[-2]
        expected = render_sample("granite", split, label, int(path.stem), image_size=SIZE)
        np.testing.assert_array_equal(pixels, expected.image)


def test_defect_masks_are_binary_nonempty_and_plausibly_sized(dataset: Path) -> None:
    for defect in DEFECT_TYPES:
        for image_path in sorted((dataset / "test" / defect).glob("*.png")):
            mask_path = dataset / "ground_truth" / defect / f"{image_path.stem}_mask.png"
            with Image.open(mask_path) as mask_image, Image.open(image_path) as image:
                assert mask_image.mode == "L"
                assert mask_image.size == image.size
                mask = np.asarray(mask_image)
            assert set(np.unique(mask)) == {0, 255}
            assert 0.003 <= (mask > 0).mean() <= 0.06


@pytest.mark.parametrize("category", TEXTURES)
@pytest.mark.parametrize("defect", DEFECT_TYPES)
@pytest.mark.parametrize("size", [SIZE, 256])
def test_mask_marks_where_the_image_was_altered(category: str, defect: str, size: int) -> None:
    clean, image, mask = render_sample(category, "test", defect, index=3, image_size=size)
    assert clean.shape == image.shape == (size, size, 3)
    assert mask.shape == (size, size)
    inside = mask > 0
    diff = np.abs(image.astype(np.int16) - clean.astype(np.int16)).mean(axis=2)
    assert diff[inside].mean() > 15  # clearly visible: mean change of more than 15 grey levels
    assert diff[inside].mean() > 20 * diff[~inside].mean()
    assert (diff[inside] > 0).mean() > 0.95


@pytest.mark.parametrize("category", TEXTURES)
def test_good_samples_are_unmasked_distinct_instances_of_one_texture(category: str) -> None:
    samples = [render_sample(category, "train", "good", index, image_size=SIZE) for index in range(4)]
    for clean, image, mask in samples:
        np.testing.assert_array_equal(image, clean)
        assert not mask.any()
    images = [sample.image.astype(np.float32) for sample in samples]
    means = np.array([image.mean(axis=(0, 1)) for image in images])
    assert np.ptp(means, axis=0).max() < 25  # same texture family and colour...
    assert all(np.abs(images[0] - other).mean() > 5 for other in images[1:])  # ...but different instances


def test_good_images_have_no_mask_files(dataset: Path) -> None:
    assert not (dataset / "ground_truth" / "good").exists()
    assert not list(dataset.rglob("good/*_mask.png"))


def test_invalid_arguments_raise_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'marble'.*weave, brushed, granite"):
        generate_synthetic_dataset(tmp_path, category="marble")
    with pytest.raises(ValueError, match="image_size must be at least 32"):
        generate_synthetic_dataset(tmp_path, image_size=16)
    with pytest.raises(ValueError, match="label"):
        render_sample("weave", "train", "scratch", 0, image_size=SIZE)
    assert not any(tmp_path.iterdir())


def test_second_call_is_a_noop_and_changed_parameters_regenerate(tmp_path: Path) -> None:
    category_dir = _generate(tmp_path)
    before = _mtimes(category_dir)
    assert _generate(tmp_path) == category_dir
    assert _mtimes(category_dir) == before

    _generate(tmp_path, n_train=2, seed=1)
    assert _names(category_dir / "train" / "good") == ["000.png", "001.png"]
    assert json.loads((category_dir / "manifest.json").read_text())["seed"] == 1
    assert _files(category_dir) == _files(_generate(tmp_path / "fresh", n_train=2, seed=1))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_interrupted_run_is_detected_and_redone(tmp_path: Path) -> None:
    category_dir = _generate(tmp_path)
    expected = _files(category_dir)
    (category_dir / "manifest.json").unlink()  # as if the run had stopped before finishing
    (category_dir / "test" / "crack" / "001.png").unlink()
    (tmp_path / ".weave.partial" / "train").mkdir(parents=True)  # stale staging folder
    assert _files(_generate(tmp_path)) == expected
    assert not (tmp_path / ".weave.partial").exists()


def test_anomalib_mvtec_datamodule_reads_the_dataset(dataset: Path) -> None:
    from anomalib.data import MVTecAD

    datamodule = MVTecAD(
        root=dataset.parent,
        category=dataset.name,
        train_batch_size=4,
        eval_batch_size=4,
        num_workers=0,
    )
    datamodule.setup()
    n_defective = COUNTS["n_test_per_defect"] * len(DEFECT_TYPES)
    assert len(datamodule.train_data) == COUNTS["n_train"]
    assert len(datamodule.test_data) == COUNTS["n_test_good"] + n_defective
    samples = datamodule.test_data.samples
    assert (samples.label_index == 1).sum() == n_defective
    item = datamodule.test_data[int(np.flatnonzero(samples.label_index == 1)[0])]
    assert item.gt_mask is not None and item.gt_mask.any()
