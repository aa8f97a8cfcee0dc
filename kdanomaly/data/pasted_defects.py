"""Synthetic defects pasted into good images (CutPaste, Li et al. 2021): a patch of another good image, its colours
scaled, pasted at a random place. Where a model or a quantization must see defect-like inputs and only good images
exist (int8 calibration ranges, validation without test images), these stand in for real defects.
"""

from __future__ import annotations

import numpy as np

AREA = (0.02, 0.15)  # patch area as a fraction of the image (CutPaste's range)
ASPECT = (0.3, 3.3)  # patch height / width, sampled log-uniformly (CutPaste's range)
COLOUR_GAIN = (0.6, 1.4)  # per-channel factor on the pasted pixels, so the patch differs from its surroundings


def paste_defects(images: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each of ``images (N, 3, H, W)`` (float in [0, 1]) with one pasted patch, and the patches' masks ``(N, H, W)``
    (bool). The patch is cut from the next image (the image itself when N = 1) at another place; the same ``seed``
    gives the same defects. The input is not modified."""
    if images.ndim != 4 or images.shape[1] != 3 or len(images) == 0:
        raise ValueError(f"expected images of shape (N, 3, H, W) with N >= 1, got {images.shape}")
    rng = np.random.default_rng(seed)
    height, width = images.shape[-2:]
    defective = images.copy()
    masks = np.zeros((len(images), height, width), dtype=bool)
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
