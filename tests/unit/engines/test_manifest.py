"""model.json of an export: round trip, calibration, probe check, clear errors for files that are not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdanomaly.engines.manifest import Manifest, ManifestError, probe_images, store_export_calibration
from kdanomaly.inspection.calibration import calibrate


def _manifest(precision: str = "fp32") -> Manifest:
    return Manifest(
        model_file="model.xml", precision=precision, image_size=(64, 48), checkpoint="/nowhere/model.ckpt",
        checkpoint_sha256="0" * 64, probe_scores=[1.0, 2.0], probe_maps_range=10.0, probe_map_means=[0.5, 0.25],
    )  # fmt: skip


def test_probe_images_are_fixed_smooth_and_in_unit_range() -> None:
    first, second = probe_images((64, 48)), probe_images((64, 48))
    assert first.shape == (2, 3, 64, 48) and first.dtype == np.float32
    np.testing.assert_array_equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    assert np.abs(np.diff(first, axis=-1)).mean() < 0.05  # blobs, not pixel noise


def test_round_trip_and_calibration_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    _manifest().save(path)
    assert Manifest.load(path) == _manifest() and Manifest.load(path).threshold is None
    calibration = calibrate(np.arange(100.0), 0.1)
    store_export_calibration(tmp_path / "model.xml", calibration)
    loaded = Manifest.load(path)
    assert loaded.threshold == calibration.threshold and loaded.calibrated() == calibration


def test_probe_check_allows_rounding_and_refuses_other_scores() -> None:
    manifest = _manifest()
    maps = np.stack([np.full((64, 48), 0.5), np.full((64, 48), 0.25)])
    manifest.check_probe(np.array([1.0, 2.0 + 5e-4]), maps, "fp32", Path("m.xml"))  # 5e-5 of the range
    with pytest.raises(ManifestError, match="does not reproduce"):
        manifest.check_probe(np.array([1.0, 2.1]), maps, "fp32", Path("m.xml"))
    manifest.check_probe(np.array([1.0, 2.1]), maps, "bf16", Path("m.xml"))  # within bf16's tolerance


def test_files_that_are_not_a_manifest_are_named(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="is missing"):
        Manifest.load(tmp_path / "model.json")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not a kdanomaly export manifest"):
        Manifest.load(tmp_path / "model.json")
    _manifest("fp8").save(tmp_path / "model.json")
    with pytest.raises(ManifestError, match="precision 'fp8' unknown"):
        Manifest.load(tmp_path / "model.json")
