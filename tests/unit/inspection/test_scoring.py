"""Decoding for scoring: the model's view and the display copy of 8-bit and 16-bit files, and the ordered batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdanomaly.inspection.scoring import AnomalyScorer, ImageFiles, read_images, read_model_views


def test_an_8_bit_image_keeps_its_pixels_for_display_and_scales_them_for_the_model(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    item = ImageFiles([tmp_path / "rgb.png"], (48, 64))[0]
    np.testing.assert_array_equal(item.display, pixels)
    np.testing.assert_allclose(item.image, pixels.transpose(2, 0, 1) / 255, atol=1e-7)
    assert item.image.dtype == np.float32 and item.size == (64, 48)


def test_a_16_bit_image_is_shown_at_8_bits_and_resized_for_the_model(tmp_path: Path) -> None:
    gray = (np.linspace(0, 65535, 40 * 30).reshape(30, 40)).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "gray16.png")
    item = ImageFiles([tmp_path / "gray16.png"], (16, 16))[0]
    assert item.display.shape == (30, 40, 3) and item.display.dtype == np.uint8
    np.testing.assert_array_equal(item.display[..., 0], np.round(gray / 65535 * 255).astype(np.uint8))
    assert item.image.shape == (3, 16, 16) and item.image.min() >= 0 and item.image.max() <= 1


def test_reading_images_all_needed_names_every_unreadable_one(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert read_model_views([tmp_path / "good.png"] * 2, (4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"broken\.png") as raised:
        read_images([tmp_path / "good.png", tmp_path / "broken.png", tmp_path / "missing.png"], (4, 4))
    assert "missing.png" in str(raised.value) and "good.png" not in str(raised.value)


class _Echo:
    """An engine whose score is the image's mean, so the order of the batches can be checked."""

    name, precision, image_size, batch_size = "echo", "fp32", (8, 8), 4

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images.mean(axis=(1, 2, 3)), images[:, 0]


def test_batches_come_in_input_order_with_unreadable_files_as_errors(tmp_path: Path) -> None:
    paths = []
    for index in range(11):
        path = tmp_path / f"{index:02d}.png"
        Image.fromarray(np.full((8, 8), index * 20, dtype=np.uint8)).save(path)
        paths.append(path)
    (tmp_path / "05.png").write_bytes(b"not an image")
    batches = list(AnomalyScorer(_Echo()).batches(paths, batch_size=4, workers=2))
    assert [len(batch.items) for batch in batches] == [4, 4, 3]
    items = [item for batch in batches for item in batch.items]
    assert [item.path for item in items] == paths and items[5].error is not None
    scores = np.concatenate([batch.scores for batch in batches])
    np.testing.assert_allclose(scores, [index * 20 / 255 for index in range(11) if index != 5], atol=1e-6)
