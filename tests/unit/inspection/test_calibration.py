"""Conformal calibration of the review threshold, and its storage in the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from kdanomaly.inspection.calibration import calibrate, read_calibration, store_calibration


def test_conformal_threshold_is_the_rank_statistic_and_keeps_its_promise() -> None:
    scores = np.arange(19.0)[::-1]
    calibration = calibrate(scores, target_rate=0.1)
    assert calibration.threshold == 17.0  # rank ceil(20 * 0.9) = 18 of 0..18
    assert calibration.expected_rate == pytest.approx(2 / 20)
    rng = np.random.default_rng(0)
    rates, covered = [], []
    for _ in range(3000):  # the false-review rate of a threshold from 50 normal scores, over many held-out sets
        found = calibrate(rng.standard_normal(50), target_rate=0.1, confidence=0.9)
        rate = norm.sf(found.threshold)
        rates.append(rate)
        covered.append(found.interval[0] <= rate <= found.interval[1])
    assert np.mean(rates) == pytest.approx(found.expected_rate, abs=0.004)
    assert np.mean(rates) <= 0.1 + 0.004
    assert np.mean(covered) == pytest.approx(0.9, abs=0.02)


def test_too_few_or_broken_normal_scores_are_refused() -> None:
    assert calibrate(np.arange(9.0), 0.1).threshold == 8.0
    with pytest.raises(ValueError, match="8 normal images cannot calibrate a 10 % false-review rate; it needs 9"):
        calibrate(np.arange(8.0), 0.1)
    with pytest.raises(ValueError, match="finite"):
        calibrate([1.0, math.nan] * 20, 0.1)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        calibrate(np.arange(100.0), 1.5)


def test_calibration_is_written_into_the_checkpoint_atomically(tmp_path: Path) -> None:
    original = tmp_path / "model.ckpt"
    nan = torch.tensor(float("nan"))
    state = {"post_processor._image_threshold": nan, "post_processor._pixel_threshold": nan, "w": torch.ones(3)}
    torch.save({"state_dict": state}, original)
    before = original.read_bytes()
    calibration = calibrate(np.linspace(0, 1, 99), 0.05)
    copy = store_calibration(original, calibration, tmp_path / "calibrated.ckpt")
    assert original.read_bytes() == before  # --out leaves the given checkpoint alone
    stored = torch.load(copy, weights_only=False)
    assert read_calibration(stored) == calibration
    assert all(stored["state_dict"][key] == calibration.threshold for key in state if "threshold" in key)
    assert torch.equal(stored["state_dict"]["w"], torch.ones(3))
    store_calibration(original, calibration)
    assert read_calibration(torch.load(original, weights_only=False)) == calibration
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrated.ckpt", "model.ckpt"]  # no temporary left
