"""Procedural industrial surfaces with synthetic defects, written in MVTec AD folder layout.

This is the embedded default dataset: nothing is downloaded. Every image is a pure function of
``(category, image_size, seed, split, label, index)``, so identical arguments give byte-identical PNGs.
Each good image is a fresh random instance of its texture family (noise realisation, phase, small
rotation and illumination change), so a detector has to learn the texture rather than memorise a picture.
"""

from __future__ import annotations

import json
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple, cast

import cv2
import numpy as np
from numpy.typing import NDArray

DEFECT_TYPES: tuple[str, ...] = ("scratch", "spot", "crack", "contamination")
TEXTURES: tuple[str, ...] = ("weave", "brushed", "granite")

_FORMAT_VERSION = 1
_MIN_IMAGE_SIZE = 32
_AREA_RANGE = (0.003, 0.06)  # accepted defect area, as a fraction of the image
_MAX_ATTEMPTS = 100
_MANIFEST = "manifest.json"
_STAIN_COLOURS = np.array([[0.60, 0.30, 0.10], [0.20, 0.50, 0.26], [0.16, 0.25, 0.62], [0.50, 0.18, 0.45]], np.float32)

_F32 = NDArray[np.float32]
_U8 = NDArray[np.uint8]


class SyntheticSample(NamedTuple):
    """One rendered sample: RGB uint8 images of shape (H, W, 3) and a uint8 (H, W) mask in {0, 255}."""

    clean: _U8
    image: _U8
    mask: _U8


def _f32(values: list[float]) -> _F32:
    """``np.float32(values)``: a float32 array (numpy's stubs type the scalar constructor for scalars only)."""
    return np.array(values, dtype=np.float32)


# --------------------------------------------------------------------------------------------- noise
def _grid(size: int) -> tuple[_F32, _F32]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _standardise(field: _F32) -> _F32:
    return (field - field.mean()) / (field.std() + np.float32(1e-6))


def _fbm(rng: np.random.Generator, size: int, cells: int, octaves: int, gain: float = 0.5) -> _F32:
    """Zero-mean, unit-variance fractal noise; the coarsest octave has ``cells`` cells per side."""
    out = np.zeros((size, size), np.float32)
    for octave in range(octaves):
        n = min(cells * 2**octave, size)
        grid = rng.standard_normal((n + 1, n + 1), dtype=np.float32)
        out += np.float32(gain**octave) * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return _standardise(out)


def _streaks(rng: np.random.Generator, size: int, rows: int, cells_along: int) -> _F32:
    """Unit-variance noise stretched along x: ``rows`` independent rows that vary slowly horizontally."""
    grid = rng.standard_normal((rows, cells_along + 1), dtype=np.float32)
    return _standardise(cast(_F32, cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)))  # cv2: MatLike


def _smoothstep(x: _F32, lo: float, hi: float) -> _F32:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# ------------------------------------------------------------------------------------------ textures
def _weave(rng: np.random.Generator, size: int) -> _F32:
    """Plain-weave fabric: interlaced warp and weft yarns with fibre streaks and uneven yarns."""
    period = size / rng.uniform(9.5, 10.5)
    angle = np.deg2rad(rng.uniform(-2.0, 2.0))
    cos_a, sin_a = float(np.cos(angle)) / period, float(np.sin(angle)) / period  # floats keep float32
    yy, xx = _grid(size)
    u = cos_a * xx + sin_a * yy + rng.uniform(0.0, 2.0)
    v = cos_a * yy - sin_a * xx + rng.uniform(0.0, 2.0)
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    sin_u, sin_v = np.sin(np.pi * fu), np.sin(np.pi * fv)
    yarn_gain = 1.0 + 0.06 * rng.standard_normal(64, dtype=np.float32)
    # Each cell shows one yarn: rounded across its width (dark gaps), bulging along its length.
    weft = np.sqrt(sin_v) * (0.72 + 0.28 * sin_u) * yarn_gain[iv.astype(np.int64) % 64]
    warp = np.sqrt(sin_u) * (0.72 + 0.28 * sin_v) * yarn_gain[iu.astype(np.int64) % 64]
    weft += 0.07 * _streaks(rng, size, size, 24)  # fibres run along the yarn
    warp += 0.07 * _streaks(rng, size, size, 24).T
    weft_on_top = (iu + iv) % 2 == 0
    shade = np.where(weft_on_top, weft, warp)[..., None]
    colour = np.where(weft_on_top[..., None], _f32([0.80, 0.71, 0.53]), _f32([0.72, 0.64, 0.48]))
    gap = _f32([0.24, 0.20, 0.15])
    dirt = 1.0 + 0.04 * _fbm(rng, size, 4, 3)[..., None]
    return (gap + (colour - gap) * shade) * dirt


def _brushed(rng: np.random.Generator, size: int) -> _F32:
    """Brushed steel: fine anisotropic polishing streaks, broader bands and a soft specular sheen."""
    fine = _streaks(rng, size, size, 6)
    coarse = _streaks(rng, size, max(8, size // 6), 3)
    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-3.0, 3.0), 1.0)
    streaks = cv2.warpAffine(0.10 * fine + 0.06 * coarse, rotation, (size, size), borderMode=cv2.BORDER_REFLECT_101)
    _, xx = _grid(size)
    sheen = 0.5 + 0.5 * np.cos(2 * np.pi * (xx / size * rng.uniform(0.5, 0.9) + rng.uniform(0.0, 1.0)))
    steel = _f32([0.58, 0.60, 0.64])
    # float32 at run time (NEP 50); numpy's stubs type ``float32 array / int`` (in ``sheen``) as float64.
    return cast(_F32, steel * (1.0 + streaks[..., None]) + 0.10 * sheen[..., None])


def _granite(rng: np.random.Generator, size: int) -> _F32:
    """Granite: mottled grey matrix speckled with feldspar, quartz and dark mica grains."""
    img = _f32([0.56, 0.55, 0.54]) * (1.0 + 0.07 * _fbm(rng, size, 3, 3)[..., None])
    for cells, threshold, colour in (
        (20, 0.7, [0.70, 0.56, 0.51]),  # feldspar
        (26, 1.2, [0.84, 0.83, 0.80]),  # quartz
        (32, 1.5, [0.12, 0.12, 0.13]),  # mica
    ):
        weight = _smoothstep(_fbm(rng, size, cells, 2), threshold, threshold + 0.3)[..., None]
        img = img * (1.0 - weight) + _f32(colour) * weight
    return img + 0.025 * rng.standard_normal((size, size, 1), dtype=np.float32)


_TEXTURE_FNS: dict[str, Callable[[np.random.Generator, int], _F32]] = {
    "weave": _weave,
    "brushed": _brushed,
    "granite": _granite,
}


def _render_texture(rng: np.random.Generator, category: str, size: int) -> _F32:
    """One random instance of a texture family under slightly varying illumination, in [0, 1]."""
    img = _TEXTURE_FNS[category](rng, size)
    yy, xx = _grid(size)
    tilt_x, tilt_y = rng.uniform(-0.08, 0.08, 2)
    light = rng.uniform(0.92, 1.08) * (1.0 + tilt_x * (xx / size - 0.5) + tilt_y * (yy / size - 0.5))
    white_balance = 1.0 + 0.01 * rng.standard_normal(3, dtype=np.float32)
    img = img * light[..., None] * white_balance + 0.008 * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- defects
def _darken(rng: np.random.Generator, clean: _F32, lo: float, hi: float) -> _F32:
    return clean * np.float32(rng.uniform(lo, hi))


def _lighten(rng: np.random.Generator, clean: _F32, lo: float, hi: float) -> _F32:
    return clean + (1.0 - clean) * np.float32(rng.uniform(lo, hi))


def _draw_polyline(canvas: _U8, points: NDArray[np.float64], thickness: int) -> None:
    """Anti-aliased open polyline with sub-pixel vertices (cv2 fixed point, 4 fractional bits)."""
    cv2.polylines(canvas, [np.round(points * 16).astype(np.int32)], False, 255, thickness, cv2.LINE_AA, 4)


def _scratch(rng: np.random.Generator, clean: _F32) -> tuple[_F32, _F32]:
    """A thin, slightly curved line (quadratic Bezier), brighter or darker than the surface."""
    size = clean.shape[0]
    start = rng.uniform(0.15, 0.85, 2) * size
    angle = rng.uniform(0.0, 2 * np.pi)
    direction, normal = np.array([np.cos(angle), np.sin(angle)]), np.array([-np.sin(angle), np.cos(angle)])
    length = rng.uniform(0.25, 0.6) * size
    end = start + length * direction
    control = (start + end) / 2 + normal * rng.uniform(-0.2, 0.2) * length
    t = np.linspace(0.0, 1.0, 48)[:, None]
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    canvas = np.zeros((size, size), np.uint8)
    _draw_polyline(canvas, points, max(1, round(size * rng.uniform(0.006, 0.012))))
    target = _lighten(rng, clean, 0.6, 0.85) if rng.random() < 0.5 else _darken(rng, clean, 0.15, 0.35)
    return canvas.astype(np.float32) / 255.0, target


def _spot(rng: np.random.Generator, clean: _F32) -> tuple[_F32, _F32]:
    """A soft-edged elliptical blob, darker or brighter than the surface."""
    size = clean.shape[0]
    centre = rng.uniform(0.2, 0.8, 2) * size
    axes = rng.uniform(0.035, 0.08, 2) * size
    canvas = np.zeros((size, size), np.uint8)
    cv2.ellipse(
        canvas,
        tuple(int(c) for c in np.round(centre * 16)),
        tuple(int(a) for a in np.round(axes * 16)),
        rng.uniform(0.0, 180.0),
        0,
        360,
        255,
        -1,
        cv2.LINE_AA,
        4,
    )
    alpha = cast(_F32, cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), 0.2 * axes.min()))  # cv2: MatLike
    target = _darken(rng, clean, 0.3, 0.5) if rng.random() < 0.5 else _lighten(rng, clean, 0.55, 0.8)
    return alpha, target


def _crack(rng: np.random.Generator, clean: _F32) -> tuple[_F32, _F32]:
    """A dark, jagged random-walk polyline with one thinner side branch."""
    size = clean.shape[0]
    step = size * rng.uniform(0.012, 0.02)
    thickness = max(1, round(size * rng.uniform(0.005, 0.009)))
    canvas = np.zeros((size, size), np.uint8)

    def walk(origin: NDArray[np.float64], heading: float, steps: int) -> NDArray[np.float64]:
        angles = np.empty(steps)
        current = heading
        for k, kick in enumerate(rng.normal(0.0, 0.45, steps)):
            current += kick - 0.3 * (current - heading)  # mean-reverting heading keeps the crack directed
            angles[k] = current
        offsets = np.cumsum(step * np.stack([np.cos(angles), np.sin(angles)], axis=1), axis=0)
        return np.vstack([origin, origin + offsets + rng.normal(0.0, 0.25 * step, offsets.shape)])

    heading = rng.uniform(0.0, 2 * np.pi)
    trunk = walk(rng.uniform(0.2, 0.8, 2) * size, heading, int(rng.integers(18, 36)))
    _draw_polyline(canvas, trunk, thickness)
    fork = trunk[int(rng.integers(len(trunk) // 4, 3 * len(trunk) // 4))]
    branch = walk(fork, heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.0), len(trunk) // 3)
    _draw_polyline(canvas, branch, max(1, thickness - 1))
    return canvas.astype(np.float32) / 255.0, _darken(rng, clean, 0.08, 0.2)


def _contamination(rng: np.random.Generator, clean: _F32) -> tuple[_F32, _F32]:
    """An irregular, semi-transparent coloured stain (rust, coolant, ink, dye)."""
    size = clean.shape[0]
    centre = rng.uniform(0.2, 0.8, 2) * size
    radius = rng.uniform(0.06, 0.12) * size
    yy, xx = _grid(size)
    field = 1.0 - np.hypot(xx - centre[0], yy - centre[1]) / radius + 0.35 * _fbm(rng, size, 6, 3)
    alpha = np.float32(rng.uniform(0.8, 0.95)) * _smoothstep(field, 0.0, 0.3)
    stain = _STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))]
    target = np.clip(stain * (0.5 + clean.mean(axis=2, keepdims=True)), 0.0, 1.0)
    return alpha, target


_DEFECT_FNS: dict[str, Callable[[np.random.Generator, _F32], tuple[_F32, _F32]]] = {
    "scratch": _scratch,
    "spot": _spot,
    "crack": _crack,
    "contamination": _contamination,
}


# -------------------------------------------------------------------------------------------- public
def _to_uint8(img: _F32) -> _U8:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def _check_args(category: str, image_size: int, seed: int) -> None:
    if category not in TEXTURES:
        raise ValueError(f"Unknown synthetic category {category!r}; expected one of: {', '.join(TEXTURES)}")
    if image_size < _MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {_MIN_IMAGE_SIZE} pixels, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def render_sample(
    category: str,
    split: str,
    label: str,
    index: int,
    image_size: int = 256,
    seed: int = 0,
) -> SyntheticSample:
    """Render one sample exactly as ``generate_synthetic_dataset`` writes it, plus its defect-free version.

    ``split`` is "train" or "test"; ``label`` is "good" or one of ``DEFECT_TYPES`` (test only). For good
    samples ``image`` equals ``clean`` and the mask is all zero; for defects the mask (255 where the soft
    defect alpha is >= 0.5) covers between 0.3% and 6% of the image.
    """
    _check_args(category, image_size, seed)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if label != "good" and (label not in DEFECT_TYPES or split == "train"):
        raise ValueError(f"label must be 'good' or, for the test split, one of {DEFECT_TYPES}; got {label!r}")
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    key = [seed, zlib.crc32(category.encode()), zlib.crc32(f"{split}/{label}".encode()), index]
    rng = np.random.default_rng(key)
    clean = _render_texture(rng, category, image_size)
    clean_u8 = _to_uint8(clean)
    if label == "good":
        return SyntheticSample(clean_u8, clean_u8, np.zeros((image_size, image_size), np.uint8))
    for _ in range(_MAX_ATTEMPTS):
        alpha, target = _DEFECT_FNS[label](rng, clean)
        mask = alpha >= 0.5
        if _AREA_RANGE[0] <= mask.mean() <= _AREA_RANGE[1]:
            defective = clean + alpha[..., None] * (target - clean)
            return SyntheticSample(clean_u8, _to_uint8(defective), mask.astype(np.uint8) * 255)
    raise RuntimeError(f"could not place a {label} of plausible size on a {image_size}px image")


def _write_png(path: Path, array: _U8) -> None:
    pixels = array if array.ndim == 2 else np.ascontiguousarray(array[..., ::-1])  # cv2 expects BGR
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"failed to write {path}")


def _is_complete(category_dir: Path, params: dict[str, object], n_png: int) -> bool:
    try:
        manifest = json.loads((category_dir / _MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return manifest == params and sum(1 for _ in category_dir.rglob("*.png")) == n_png


def generate_synthetic_dataset(
    root: str | Path,
    category: str = "weave",
    image_size: int = 256,
    n_train: int = 80,
    n_test_good: int = 20,
    n_test_per_defect: int = 10,
    seed: int = 0,
) -> Path:
    """Write a synthetic surface-inspection dataset in MVTec AD layout and return ``root/category``.

    Writes ``train/good``, ``test/good``, ``test/<defect>`` and ``ground_truth/<defect>/*_mask.png``
    plus ``manifest.json``. If the folder already holds a complete dataset with the same parameters this
    is a no-op; otherwise the category folder is rebuilt in a staging folder (manifest written last) that
    then replaces the old one, so an interrupted run never looks complete.
    """
    _check_args(category, image_size, seed)
    if n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise ValueError("need n_train >= 1, n_test_good >= 0 and n_test_per_defect >= 0")
    root = Path(root)
    category_dir = root / category
    params: dict[str, object] = {
        "generator": "kdanomaly.data.synthetic",
        "format_version": _FORMAT_VERSION,
        "category": category,
        "image_size": image_size,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_test_per_defect,
        "seed": seed,
        "defect_types": list(DEFECT_TYPES),
    }
    n_png = n_train + n_test_good + 2 * n_test_per_defect * len(DEFECT_TYPES)
    if _is_complete(category_dir, params, n_png):
        return category_dir

    staging = root / f".{category}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    jobs = [("train", "good", n_train), ("test", "good", n_test_good)]
    jobs += [("test", defect, n_test_per_defect) for defect in DEFECT_TYPES]
    # One zero-padded width for all files keeps image and mask names in the same sorted order (anomalib
    # pairs them by sorting).
    width = max(3, len(str(max(n_train, n_test_good, n_test_per_defect) - 1)))
    for split, label, count in jobs:
        if count == 0:
            continue
        image_dir, mask_dir = staging / split / label, staging / "ground_truth" / label
        image_dir.mkdir(parents=True)
        if label != "good":
            mask_dir.mkdir(parents=True)
        for index in range(count):
            sample = render_sample(category, split, label, index, image_size, seed)
            _write_png(image_dir / f"{index:0{width}d}.png", sample.image)
            if label != "good":
                _write_png(mask_dir / f"{index:0{width}d}_mask.png", sample.mask)
    (staging / _MANIFEST).write_text(json.dumps(params, indent=2) + "\n")

    if category_dir.exists():
        shutil.rmtree(category_dir)
    staging.rename(category_dir)
    return category_dir
