"""Synthetic defects pasted into good images (CutPaste, Li et al. 2021): a patch of another good image, its colours
scaled, pasted at a random place; subtler blended ones; and structural ones, a local warp of the image itself. Where a
model or a quantization must see defect-like inputs and only good images exist (int8 calibration ranges, validation
without test images), these stand in for real defects.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_fill_holes, gaussian_filter, map_coordinates, sobel

AREA = (0.02, 0.15)  # patch area as a fraction of the image (CutPaste's range)
ASPECT = (0.3, 3.3)  # patch height / width, sampled log-uniformly (CutPaste's range)
COLOUR_GAIN = (0.6, 1.4)  # per-channel factor on the pasted pixels, so the patch differs from its surroundings


def _check_images(images: np.ndarray) -> None:
    """ValueError unless ``images`` is a non-empty batch ``(N, 3, H, W)``."""
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"expected images of shape (N, 3, H, W) with N >= 1, got {images.shape}")


def _start(images: np.ndarray, seed: int) -> tuple[np.random.Generator, np.ndarray, np.ndarray]:
    """After checking ``images``: the seeded generator, a copy of the images to draw defects into and empty masks
    ``(N, H, W)``."""
    _check_images(images)
    return np.random.default_rng(seed), images.copy(), np.zeros((len(images), *images.shape[-2:]), dtype=bool)


def paste_defects(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``images (N, 3, H, W)`` (float in [0, 1]) with one pasted patch, and the patches' masks ``(N, H, W)``
    (bool). The patch is cut from the next image (the image itself when N = 1) at another place; the same ``seed``
    gives the same defects. The input is not modified."""
    rng, defective, masks = _start(images, seed)
    height, width = images.shape[-2:]
    for index in range(len(images)):
        area = rng.uniform(*AREA) * height * width
        aspect = np.exp(rng.uniform(*np.log(ASPECT)))
        patch_h = int(np.clip(round(np.sqrt(area * aspect)), 1, height - 1))
        patch_w = int(np.clip(round(np.sqrt(area / aspect)), 1, width - 1))
        source_y, target_y = rng.integers(0, height - patch_h + 1, size=2)
        source_x, target_x = rng.integers(0, width - patch_w + 1, size=2)
        source = images[(index + 1) % len(images), :, source_y : source_y + patch_h, source_x : source_x + patch_w]
        gain = rng.uniform(*COLOUR_GAIN, size=(3, 1, 1)).astype(images.dtype)
        target = (index, slice(None), slice(target_y, target_y + patch_h), slice(target_x, target_x + patch_w))
        defective[target] = np.clip(source * gain, 0, 1)
        masks[index, target_y : target_y + patch_h, target_x : target_x + patch_w] = True
    return defective, masks


def _centre_on_object(image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel ``(row, col)`` of ``image (3, H, W)`` drawn with probability growing with its distance from the
    image's median grey, so a defect falls mostly on the object, not on a plain background."""
    grey = image.mean(axis=0).astype(np.float64)
    weights = np.abs(grey - np.median(grey)).ravel() + 1e-3
    centre = int(rng.choice(grey.size, p=weights / weights.sum()))
    row, col = divmod(centre, grey.shape[1])
    return row, col


BLEND_AREA = (0.002, 0.02)  # ellipse area as a fraction of the image: the size of small real defects
BLEND_OPACITY = (0.3, 0.8)  # opacity at the ellipse's centre
FEATHER = 0.3  # outer fraction of the ellipse's radius over which the opacity fades to zero


def blend_defects(
    images: np.ndarray, seed: int = 0, opacity: tuple[float, float] = BLEND_OPACITY
) -> tuple[np.ndarray, np.ndarray]:
    """Subtler defects than :func:`paste_defects`: a rotated ellipse of another image's content (shifted,
    brightness scaled by 0.85-1.15, the same factor for every channel so grey images stay grey) blended in with
    partial opacity that fades at the border, so there is no sharp edge to find. The centre falls mostly on the
    object (:func:`_centre_on_object`). Returns the images and masks ``(N, H, W)`` (bool: where the opacity is at
    least half its centre value). Same input contract as :func:`paste_defects`; the same ``seed`` gives the same
    defects."""
    rng, defective, masks = _start(images, seed)
    height, width = images.shape[-2:]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    for index in range(len(images)):
        area = rng.uniform(*BLEND_AREA) * height * width
        aspect = np.exp(rng.uniform(*np.log(ASPECT)))
        semi_a, semi_b = np.sqrt(area * aspect / np.pi), np.sqrt(area / aspect / np.pi)
        centre_y, centre_x = _centre_on_object(images[index], rng)
        angle = rng.uniform(0, np.pi)
        along = (rows - centre_y) * np.cos(angle) + (cols - centre_x) * np.sin(angle)
        across = -(rows - centre_y) * np.sin(angle) + (cols - centre_x) * np.cos(angle)
        radius = np.sqrt((along / semi_a) ** 2 + (across / semi_b) ** 2)
        centre_opacity = rng.uniform(*opacity)
        alpha = centre_opacity * np.clip((1 - radius) / FEATHER, 0, 1)
        shift = (
            int(rng.integers(height // 4, height - height // 4)),
            int(rng.integers(width // 4, width - width // 4)),
        )
        source = np.roll(images[(index + 1) % len(images)], shift, axis=(1, 2))
        gain = rng.uniform(0.85, 1.15)
        blended = (1 - alpha) * images[index] + alpha * np.clip(source * gain, 0, 1)
        defective[index] = blended.astype(images.dtype)
        masks[index] = alpha >= centre_opacity / 2
    return defective, masks


STRUCTURE_SHARE = 0.05  # warps are centred among this share of pixels with the strongest gradient
WARP_RADIUS = (0.04, 0.08)  # radius of the warped disc as a fraction of the image's shorter side
WARP_SWIRL = (1.5, 3.0)  # swirl: rotation at the centre (radians), fading to 0 at the radius
WARP_PUSH = (0.2, 0.4)  # push: shift at the centre as a fraction of the radius, fading to 0 at the radius
WARP_MASK_PIXELS = 1.0  # a pixel is in the mask where it moved at least this far (pixels)


def _centre_on_structure(image: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A pixel ``(row, col)`` of ``image (3, H, W)`` drawn uniformly among the ``STRUCTURE_SHARE`` of pixels with
    the strongest gradient of the smoothed grey (sigma 2 px): on edges and texture, where a warp shows, not on a
    plain background however large."""
    grey = gaussian_filter(image.mean(axis=0).astype(np.float64), sigma=2)
    strength = np.hypot(sobel(grey, axis=0), sobel(grey, axis=1)).ravel()
    strongest = np.argsort(strength, kind="stable")[-max(1, round(STRUCTURE_SHARE * grey.size)) :]
    row, col = divmod(int(rng.choice(strongest)), grey.shape[1])
    return row, col


def warp_defects(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Structural defects: a disc of the image itself geometrically warped (a swirl or, at even odds, a push in
    one direction; a bent thread, a dent), no foreign content and no colour change, so only the shape tells it
    from a good image. The centre falls on edges and texture (:func:`_centre_on_structure`), where a warp shows;
    the displacement fades smoothly to zero at the disc's border and pixels are resampled bilinearly. Returns the
    images and masks ``(N, H, W)`` (bool: where a pixel moved at least ``WARP_MASK_PIXELS``, or half the largest
    move in a small image, holes filled: a swirl's still centre is part of the defect). Same input contract as
    :func:`paste_defects`; the same ``seed`` gives the same defects."""
    rng, defective, masks = _start(images, seed)
    height, width = images.shape[-2:]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    for index in range(len(images)):
        radius = rng.uniform(*WARP_RADIUS) * min(height, width)
        centre_y, centre_x = _centre_on_structure(images[index], rng)
        dy, dx = rows - centre_y, cols - centre_x
        fade = np.clip(1 - np.hypot(dy, dx) / radius, 0, 1) ** 2
        if rng.uniform() < 0.5:
            angle = rng.uniform(*WARP_SWIRL) * fade * rng.choice([-1, 1])
            source_y = centre_y + dy * np.cos(angle) - dx * np.sin(angle)
            source_x = centre_x + dy * np.sin(angle) + dx * np.cos(angle)
        else:
            direction = rng.uniform(0, 2 * np.pi)
            shift = rng.uniform(*WARP_PUSH) * radius * fade
            source_y, source_x = rows + shift * np.sin(direction), cols + shift * np.cos(direction)
        for channel in range(images.shape[1]):
            defective[index, channel] = map_coordinates(
                images[index, channel], [source_y, source_x], order=1, mode="nearest"
            )
        moved = np.hypot(source_y - rows, source_x - cols)
        masks[index] = binary_fill_holes(moved >= min(WARP_MASK_PIXELS, moved.max() / 2))
    return defective, masks
