"""Pasted and blended defects: deterministic, confined to their masks, sized as specified, the input left alone."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from kdanomaly.data.pasted_defects import AREA, BLEND_AREA, WARP_RADIUS, blend_defects, paste_defects, warp_defects


def _good_images(count: int = 6, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.uniform(0.2, 0.8, size=(count, 3, size, size)).astype(np.float32)


def _repeatable_and_input_untouched(
    make: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]], images: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``make(images, seed)``, after asserting that it leaves ``images`` alone and repeats with the seed."""
    before = images.copy()
    defective, masks = make(images, seed)
    np.testing.assert_array_equal(images, before)
    again, again_masks = make(images, seed)
    np.testing.assert_array_equal(defective, again)
    np.testing.assert_array_equal(masks, again_masks)
    return defective, masks


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
    defective, masks = _repeatable_and_input_untouched(blend_defects, grey, seed=1)
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


def _object_on_plain_background(count: int, size: int = 96) -> np.ndarray:
    """Plain grey background with a textured square object in the middle third."""
    images = np.full((count, 3, size, size), 0.7, np.float32)
    third = size // 3
    texture = np.random.default_rng(0).uniform(0, 0.4, size=(count, 1, third, third)).astype(np.float32)
    images[:, :, third : 2 * third, third : 2 * third] = texture.repeat(3, axis=1)
    return images


def test_warps_move_the_image_own_content_inside_a_disc_and_repeat_with_the_seed() -> None:
    images = _object_on_plain_background(8)
    warped, masks = _repeatable_and_input_untouched(warp_defects, images, seed=2)
    # Bilinear resampling of the image itself: no value outside its own range, grey stays grey.
    assert np.all(warped.min(axis=(1, 2, 3)) >= images.min(axis=(1, 2, 3)))
    assert np.all(warped.max(axis=(1, 2, 3)) <= images.max(axis=(1, 2, 3)))
    np.testing.assert_array_equal(warped[:, 0], warped[:, 2])
    largest_disc = np.pi * (WARP_RADIUS[1] * 96) ** 2
    changed = np.any(warped != images, axis=1)
    assert np.all(changed.sum(axis=(1, 2)) <= largest_disc) and np.all(masks.sum(axis=(1, 2)) > 0)
    assert np.abs(warped - images)[np.repeat(masks[:, None], 3, axis=1)].mean() > 0.02


def test_a_warp_leaves_a_plain_image_exactly_as_it_was() -> None:
    plain = np.full((3, 3, 64, 64), 0.4, np.float32)
    warped, masks = warp_defects(plain, seed=0)
    np.testing.assert_array_equal(warped, plain)  # no foreign content, no colour change: only shape
    assert masks.any()


def test_warps_are_centred_on_structure_not_on_plain_background() -> None:
    images = _object_on_plain_background(40)
    _, masks = warp_defects(images, seed=0)
    centres = np.array([np.argwhere(mask).mean(axis=0) for mask in masks])
    on_object = np.all((centres >= 32 - 3) & (centres < 64 + 3), axis=1)  # the object with its edges
    assert on_object.mean() > 0.9
