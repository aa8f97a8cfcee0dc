"""Per-image files of an inspection: heat-map overlay with region boxes and labels, thumbnail, raw anomaly map."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from .regions import Region

THUMBNAIL_SIDE = 160
FOLDERS = {"overlay": "overlays", "thumbnail": "thumbnails", "map": "maps"}
SUFFIXES = {"overlay": ".jpg", "thumbnail": ".jpg", "map": ".npy"}  # JPEG: a fifth of PNG's encoding time
BOX_COLOUR = (0, 0, 255)  # BGR red


def image_key(path: Path) -> str:
    """The identity of an input across runs: its resolved absolute path."""
    return str(path.resolve())


def output_paths(path: Path) -> dict[str, str]:
    """Relative output file names of one input; a short hash of its full path keeps equal file names apart."""
    stem = f"{path.stem}_{hashlib.sha1(image_key(path).encode()).hexdigest()[:10]}"
    return {kind: f"{FOLDERS[kind]}/{stem}{SUFFIXES[kind]}" for kind in FOLDERS}


def heat_colours(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """BGR uint8 heat map on a fixed scale: 0 (blue) .. threshold (mid-scale) .. 2 x threshold and above (red)."""
    if threshold > 0:
        scaled = np.clip(anomaly_map / (2 * threshold), 0, 1)
    else:  # a map whose threshold is not positive has no natural zero: stretch it
        span = float(anomaly_map.max() - anomaly_map.min()) or 1.0
        scaled = (anomaly_map - anomaly_map.min()) / span
    return cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)


def render_overlay(
    display: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float,
    regions: list[Region],
    original_size: tuple[int, int],
) -> np.ndarray:
    """BGR overlay at the display copy's size: picture and heat map blended, each region boxed and labelled."""
    height, width = display.shape[:2]
    heat = cv2.resize(heat_colours(anomaly_map, threshold), (width, height), interpolation=cv2.INTER_LINEAR)
    overlay = cv2.addWeighted(cv2.cvtColor(display, cv2.COLOR_RGB2BGR), 0.6, heat, 0.4, 0)
    scale_x, scale_y = width / original_size[0], height / original_size[1]
    for region in regions:
        x0, y0, x1, y1 = region.box
        corner, far = (int(x0 * scale_x), int(y0 * scale_y)), (int(x1 * scale_x) - 1, int(y1 * scale_y) - 1)
        cv2.rectangle(overlay, corner, far, BOX_COLOUR, 2)
        label = f"{region.type} {region.similarity:.2f}" if region.type is not None else f"{region.peak:.3g}"
        text_origin = (corner[0] + 2, max(corner[1] - 4, 12))
        cv2.putText(overlay, label, text_origin, cv2.FONT_HERSHEY_SIMPLEX, 0.45, BOX_COLOUR, 1, cv2.LINE_AA)
    return overlay


def write_outputs(
    out: Path, path: Path, display: np.ndarray, anomaly_map: np.ndarray, threshold: float, regions: list[Region],
    original_size: tuple[int, int],
) -> dict[str, str]:  # fmt: skip
    """Write overlay, thumbnail and map (float16) of one image under ``out``; their relative paths."""
    names = output_paths(path)
    overlay = render_overlay(display, anomaly_map, threshold, regions, original_size)
    cv2.imwrite(str(out / names["overlay"]), overlay, [cv2.IMWRITE_JPEG_QUALITY, 90])
    shrink = THUMBNAIL_SIDE / max(display.shape[:2])
    thumbnail = cv2.resize(display, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA) if shrink < 1 else display
    cv2.imwrite(
        str(out / names["thumbnail"]), cv2.cvtColor(thumbnail, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]
    )
    np.save(out / names["map"], anomaly_map.astype(np.float16))
    return names
