"""KDADModel: multiscale features in training, a map of the input size in evaluation, sizes it cannot take."""

from __future__ import annotations

import pytest
import torch

from kdanomaly import KDAnomaly
from kdanomaly.models.kdad import KDADModel


@pytest.fixture(scope="module")
def small_model() -> KDADModel:
    torch.manual_seed(0)
    return KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"], memory_weight=0.0)


def test_training_forward_gives_matching_multiscale_features(small_model: KDADModel) -> None:
    small_model.train()
    out = small_model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in out.teacher.values()] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    assert [f.shape for f in out.student.values()] == [f.shape for f in out.teacher.values()]
    assert set(out.sspcab_pairs) == set(out.teacher)
    assert not small_model.teacher.training, "the teacher's BatchNorm must stay frozen in training mode"


def test_eval_forward_gives_a_map_of_the_input_size_and_its_max_as_score(small_model: KDADModel) -> None:
    small_model.eval()
    with torch.no_grad():
        out = small_model(torch.randn(3, 3, 96, 64))
    assert out.anomaly_map.shape == (3, 1, 96, 64)
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(-2, -1)))
    assert (out.anomaly_map >= 0).all()


@pytest.mark.parametrize("size", [(100, 100), (32, 32), (256, 250)])
def test_image_sizes_the_model_cannot_take_are_rejected(size: tuple[int, int], small_model: KDADModel) -> None:
    with pytest.raises(ValueError, match="cannot be taken"):
        KDAnomaly.configure_pre_processor(image_size=size)
    with pytest.raises(ValueError, match="cannot be taken"):
        small_model(torch.zeros(1, 3, *size))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_model(torch.zeros(3, 64, 64))
