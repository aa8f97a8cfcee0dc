"""Pasted and blended defects: deterministic, confined to their masks, sized as specified, the input left alone."""

from __future__ import annotations

import numpy as np
import pytest

from kdanomaly.data.pasted_defects import AREA, BLEND_AREA, blend_defects, paste_defects


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


def test_blended_defects_repeat_with_the_seed_keep_grey_images_grey_and_stay_near_their_masks() -> None:
    rng = np.random.default_rng(2)
    grey = rng.uniform(0.2, 0.8, size=(8, 1, 96, 96)).astype(np.float32).repeat(3, axis=1)
    before = grey.copy()
    defective, masks = blend_defects(grey, seed=1)
    np.testing.assert_array_equal(grey, before)
    again, again_masks = blend_defects(grey, seed=1)
    np.testing.assert_array_equal(defective, again)
    np.testing.assert_array_equal(masks, again_masks)
    np.testing.assert_array_equal(defective[:, 0], defective[:, 2])  # one brightness factor for every channel
    changed = np.any(defective != grey, axis=1)
    # The opacity fades over the ellipse's outer 30 %: the mask (opacity >= half) is the inner 85 % of the radius.
    assert np.all(masks.sum(axis=(1, 2)) <= changed.sum(axis=(1, 2)))
    assert np.all(changed.sum(axis=(1, 2)) <= 1.5 * masks.sum(axis=(1, 2)) + 20)
    area = changed.mean(axis=(1, 2))
    assert np.all(area >= 0.5 * BLEND_AREA[0]) and np.all(area <= 1.2 * BLEND_AREA[1])
    assert np.abs(defective - grey)[np.repeat(masks[:, None], 3, axis=1)].mean() > 0.02


def test_blended_defects_fall_mostly_on_the_object() -> None:
    images = np.full((40, 3, 64, 64), 0.8, np.float32)  # plain background ...
    images[:, :, 16:48, 16:48] = np.random.default_rng(0).uniform(0, 0.4, size=(40, 3, 32, 32))  # ... and an object
    _, masks = blend_defects(images, seed=0)
    rows, cols = np.nonzero(masks.sum(axis=0))
    on_object = ((rows >= 16) & (rows < 48) & (cols >= 16) & (cols < 48)).mean()
    assert on_object > 0.7
