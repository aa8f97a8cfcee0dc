"""A validation set made from a dataset's training normals only, for choosing defaults without test images.

A seeded part of the training normals is held out; the rest train. Every held-out image appears twice in the
validation set: as it is (good) and with a synthetic defect of one family (``DEFECT_FAMILIES``: ``blend`` pastes
another image's content in softly, ``warp`` bends the image's own structure; :mod:`kdanomaly.data.pasted_defects`),
with its mask. Both differ from the Perlin anomalies the denoising student learns from, so a choice is not rewarded
for fitting its own training corruption.

Layout written (``folder:ROOT`` of the benchmark reads it): ``ROOT/train/`` (links to the training images),
``ROOT/good/``, ``ROOT/defect/`` and ``ROOT/masks/`` (PNG at ``image_size``, masks 0/255, same names).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from kdanomaly.data.pasted_defects import blend_defects, warp_defects

SPLIT_FILE = "split.json"
DEFECT_FAMILIES: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]] = {
    "blend": blend_defects,
    "warp": warp_defects,
}


def split_training_normals(
    paths: Sequence[str | Path], fraction: float = 0.2, seed: int = 0
) -> tuple[list[Path], list[Path]]:
    """``(training, held_out)`` paths: the sorted paths permuted by ``seed``, the first ``round(fraction * n)``
    (at least one) held out. The same paths in any order give the same split."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    ordered = sorted(Path(path) for path in paths)
    if len(set(ordered)) != len(ordered):
        raise ValueError("the training paths repeat an image")
    held = max(1, round(fraction * len(ordered)))
    if held >= len(ordered):
        raise ValueError(f"{len(ordered)} training images cannot spare {held} for validation and still train")
    order = np.random.default_rng(seed).permutation(len(ordered))
    held_out = sorted(ordered[i] for i in order[:held])
    return sorted(ordered[i] for i in order[held:]), held_out


def _read(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """``(3, H, W)`` float image in [0, 1], resized (bilinear) to ``image_size`` ``(H, W)``."""
    with Image.open(path) as image:
        resized = image.convert("RGB").resize(image_size[::-1], Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255


def _write(image: np.ndarray, path: Path) -> None:
    Image.fromarray(np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)


def write_validation_set(
    training_paths: Sequence[str | Path],
    root: Path,
    image_size: tuple[int, int] = (256, 256),
    fraction: float = 0.2,
    seed: int = 0,
    defects: str = "blend",
) -> Path:
    """Write the validation set of ``training_paths`` under ``root`` (replaced if it exists) with defects of the
    family ``defects``; returns ``root``.

    ``split.json`` records the held-out and training paths and the family. The images are written first and
    ``split.json`` last, so a folder with it is complete.
    """
    if defects not in DEFECT_FAMILIES:
        raise ValueError(f"unknown defect family {defects!r}; choose from {sorted(DEFECT_FAMILIES)}")
    training, held_out = split_training_normals(training_paths, fraction, seed)
    if root.exists():
        shutil.rmtree(root)
    folders = {name: root / name for name in ("train", "good", "defect", "masks")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for index, path in enumerate(training):
        (folders["train"] / f"{index:04d}{path.suffix}").symlink_to(path.resolve())
    good = np.stack([_read(path, image_size) for path in held_out])
    defective, masks = DEFECT_FAMILIES[defects](good, seed)
    for index in range(len(held_out)):
        name = f"{index:04d}.png"
        _write(good[index], folders["good"] / name)
        _write(defective[index], folders["defect"] / name)
        Image.fromarray(masks[index].astype(np.uint8) * 255).save(folders["masks"] / name)
    split = {
        "seed": seed,
        "fraction": fraction,
        "defects": defects,
        "held_out": [str(p) for p in held_out],
        "training": [str(p) for p in training],
    }
    (root / SPLIT_FILE).write_text(json.dumps(split, indent=1))
    return root
