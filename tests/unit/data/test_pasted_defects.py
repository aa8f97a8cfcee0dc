"""Pasted defects: deterministic, confined to their masks, sized as CutPaste's, the input left alone."""

from __future__ import annotations

import numpy as np
import pytest

from kdanomaly.data.pasted_defects import AREA, paste_defects


def _good_images(count: int = 6, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.uniform(0.2, 0.8, size=(count, 3, size, size)).astype(np.float32)


def test_same_seed_same_defects_other_seed_other_defects() -> None:
    images = _good_images()
    first, first_masks = paste_defects(images, seed=3)
    again, again_masks = paste_defects(images, seed=3)
    _, other_masks = paste_defects(images, seed=4)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first_masks, again_masks)
    assert not np.array_equal(first_masks, other_masks)


def test_pixels_change_only_inside_the_mask_and_the_patch_has_cutpaste_size() -> None:
    images = _good_images()
    before = images.copy()
    defective, masks = paste_defects(images, seed=0)
    np.testing.assert_array_equal(images, before)  # the input is not modified
    changed = np.any(defective != images, axis=1)
    assert not np.any(changed & ~masks)
    assert np.all(changed.sum(axis=(1, 2)) > 0.5 * masks.sum(axis=(1, 2)))  # the patch differs from what it covers
    area = masks.mean(axis=(1, 2))
    assert np.all(area >= AREA[0] * 0.8) and np.all(area <= AREA[1] * 1.2)  # rounding of the patch's sides
    assert defective.min() >= 0 and defective.max() <= 1 and defective.dtype == images.dtype


def test_a_single_image_takes_its_patch_from_itself() -> None:
    defective, masks = paste_defects(_good_images(count=1), seed=0)
    assert defective.shape == (1, 3, 64, 64) and masks.sum() > 0


def test_anything_but_a_batch_of_rgb_images_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        paste_defects(np.zeros((3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"N >= 1"):
        paste_defects(np.zeros((0, 3, 64, 64), np.float32))
