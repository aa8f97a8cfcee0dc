"""KDAnomaly trained on the synthetic set: quality, the normal memory, the frozen teacher, persistence."""

from __future__ import annotations

import torch

from kdanomaly import KDAnomaly
from tests.support import TrainedRun


def test_short_training_detects_and_localises_synthetic_defects(trained: TrainedRun) -> None:
    assert trained.metrics["image_AUROC"] >= 0.90
    assert trained.metrics["pixel_AUROC"] >= 0.90


def test_normal_memory_holds_every_training_image(trained: TrainedRun) -> None:
    assert trained.model.model.memory.n_images == trained.n_train
    means_and_stds = trained.model.model.map_statistics.values
    assert means_and_stds[1] > 0 and means_and_stds[3] > 0
    assert not torch.equal(means_and_stds, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_teacher_is_bit_identical_after_training(trained: TrainedRun) -> None:
    after = trained.model.model.teacher.state_dict()
    assert after.keys() == trained.teacher_before.keys()
    assert all(torch.equal(after[k], trained.teacher_before[k]) for k in after)


def test_checkpoint_round_trip_gives_identical_maps(trained: TrainedRun) -> None:
    restored = KDAnomaly.load_from_checkpoint(trained.checkpoint, visualizer=False).eval()
    with torch.no_grad():
        expected = trained.model(trained.test_images).anomaly_map
        assert torch.equal(restored(trained.test_images).anomaly_map, expected)
