"""``model.json`` beside an exported model: what it was exported from, its input, its threshold and a probe.

The probe is a fixed pseudo-random image and the scores the checkpoint gave it at export time; an engine that
opens the model scores it again before any real image, so a model file swapped for another export (other weights,
another memory) or a manifest edited by hand is refused instead of silently mis-scoring.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdanomaly.files import write_bytes_atomic
from kdanomaly.inspection.calibration import Calibration

FORMAT_VERSION = 1
PRECISIONS = ("fp32", "bf16", "int8")
# Largest probe difference an engine may show against the probe recorded at export (by the export itself, at its
# precision), as a fraction of the probe map's range: fp32 and int8 rounding only; bf16 run on an fp32 export's
# record. A wrong model or memory moves the probe by far more.
PROBE_TOLERANCE = {"fp32": 1e-4, "bf16": 0.05, "int8": 1e-3}
PROBE_SEED = 20261201
PROBE_IMAGES = 2


class ManifestError(ValueError):
    """An exported model that does not match what its manifest claims."""


def probe_images(image_size: tuple[int, int]) -> np.ndarray:
    """The probe batch ``(2, 3, H, W)`` float32 in [0, 1]: smooth random blobs (as parts look, not pure noise)."""
    rng = np.random.default_rng(PROBE_SEED)
    coarse = rng.random((PROBE_IMAGES, 3, 8, 8), dtype=np.float32)
    rows = np.linspace(0, 7, image_size[0])
    cols = np.linspace(0, 7, image_size[1])
    row_index, col_index = np.round(rows).astype(int), np.round(cols).astype(int)
    return np.ascontiguousarray(coarse[:, :, row_index][:, :, :, col_index])


@dataclass
class Manifest:
    """Everything an engine needs besides the model file (``model.xml`` + ``.bin``, or ``model.onnx``)."""

    model_file: str
    precision: str
    image_size: tuple[int, int]
    checkpoint: str
    checkpoint_sha256: str
    probe_scores: list[float]
    probe_maps_range: float
    probe_map_means: list[float]
    calibration: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def threshold(self) -> float | None:
        """The calibrated review threshold (a raw score), if calibrated."""
        return None if self.calibration is None else float(self.calibration["threshold"])

    def with_calibration(self, calibration: Calibration) -> Manifest:
        """This manifest with ``calibration`` as its review threshold."""
        return Manifest(
            **{**asdict(self), "calibration": {**asdict(calibration), "interval": list(calibration.interval)}}
        )

    def calibrated(self) -> Calibration | None:
        """The stored calibration as :class:`Calibration`."""
        if self.calibration is None:
            return None
        return Calibration(**{**self.calibration, "interval": tuple(self.calibration["interval"])})

    def save(self, path: Path) -> None:
        """Write the manifest atomically."""
        write_bytes_atomic(path, json.dumps(asdict(self), indent=2).encode())

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read ``path``; ManifestError naming what is missing or wrong."""
        if not path.is_file():
            raise ManifestError(f"{path} is missing: an exported model needs the model.json `kdanomaly export` wrote")
        try:
            raw = json.loads(path.read_text())
            manifest = cls(**{**raw, "image_size": tuple(raw["image_size"])})
        except (json.JSONDecodeError, TypeError, KeyError) as error:
            raise ManifestError(f"{path} is not a kdanomaly export manifest: {error}") from error
        if manifest.format_version != FORMAT_VERSION or manifest.precision not in PRECISIONS:
            raise ManifestError(f"{path}: format {manifest.format_version}, precision {manifest.precision!r} unknown")
        if manifest.calibration is not None and "threshold" not in manifest.calibration:
            raise ManifestError(f"{path}: its calibration has no threshold")
        return manifest

    def check_probe(self, scores: np.ndarray, maps: np.ndarray, precision: str, where: Path) -> None:
        """ManifestError unless the engine's probe scores and map means (run at ``precision``) match the ones
        recorded at export."""
        tolerance = PROBE_TOLERANCE[precision] * max(self.probe_maps_range, 1e-12)
        measured = np.concatenate([scores.ravel(), maps.reshape(len(maps), -1).mean(axis=1)])
        recorded = np.asarray([*self.probe_scores, *self.probe_map_means])
        difference = float(np.abs(measured - recorded).max()) if len(measured) == len(recorded) else np.inf
        if not difference <= tolerance:
            raise ManifestError(
                f"{where} does not reproduce the scores of {self.checkpoint} it claims (probe difference "
                f"{difference:.3g} > {tolerance:.3g}): other weights or another normal memory; export it again"
            )


def store_export_calibration(model: Path, calibration: Calibration) -> Path:
    """Write ``calibration`` into the ``model.json`` beside the exported ``model`` (atomically); that file."""
    path = model.parent / "model.json"
    Manifest.load(path).with_calibration(calibration).save(path)
    return path
