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


def _weights_in(model: KDADModel, layout: torch.memory_format) -> bool:
    """Whether every 4-D weight of ``model`` is laid out as ``layout`` (1x1 and depthwise kernels are both)."""
    return all(p.is_contiguous(memory_format=layout) for p in model.parameters() if p.ndim == 4)


def test_evaluation_runs_channels_last_with_the_map_of_the_default_layout(small_model: KDADModel) -> None:
    images = torch.rand(2, 3, 64, 64)
    small_model.eval()
    assert _weights_in(small_model, torch.channels_last)
    with torch.no_grad():
        fast = small_model(images).anomaly_map
        small_model.to(memory_format=torch.contiguous_format)  # the layout training uses
        default = small_model(images).anomaly_map
    torch.testing.assert_close(fast, default, rtol=1e-4, atol=1e-5)
    small_model.train()
    assert _weights_in(small_model, torch.contiguous_format), "training must keep PyTorch's default layout"


def test_evaluation_runs_folded_networks_that_follow_training() -> None:
    """Out of training no BatchNorm runs, the map is the unfolded networks' map, the state dict is untouched, and
    a training step reaches the next evaluation."""
    torch.manual_seed(0)
    model = KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2"], memory_weight=0.0, segmentation=True)
    keys = set(model.state_dict())
    images = torch.rand(2, 3, 64, 64)

    def maps() -> tuple[torch.Tensor, torch.Tensor]:
        model.eval()
        with torch.no_grad():
            folded = model(images).anomaly_map
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(KDADModel, "network", lambda self, name: getattr(self, name))
                unfolded = model(images).anomaly_map
        return folded, unfolded

    folded, unfolded = maps()
    torch.testing.assert_close(folded, unfolded, rtol=1e-4, atol=1e-5)
    for name in ("teacher", "student", "segmentation_head"):
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.network(name).modules()), name
    assert set(model.state_dict()) == keys
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    features = model(images)
    (features.segmentation_logits.mean() + sum(s.mean() for s in features.student.values())).backward()
    optimiser.step()
    after_step, unfolded_after_step = maps()
    torch.testing.assert_close(after_step, unfolded_after_step, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(after_step, folded, atol=1e-4), "the step must change the map"


@pytest.mark.parametrize("size", [(100, 100), (32, 32), (256, 250)])
def test_image_sizes_the_model_cannot_take_are_rejected(size: tuple[int, int], small_model: KDADModel) -> None:
    with pytest.raises(ValueError, match="cannot be taken"):
        KDAnomaly.configure_pre_processor(image_size=size)
    with pytest.raises(ValueError, match="cannot be taken"):
        small_model(torch.zeros(1, 3, *size))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_model(torch.zeros(3, 64, 64))


@pytest.mark.parametrize("size", [(64, 48), (256, 256), (40, 37)])
def test_matrix_blur_equals_anomalibs_convolution(size: tuple[int, int]) -> None:
    from anomalib.models.components import GaussianBlur2d

    from kdanomaly.models.kdad.anomaly_map import GaussianBlur

    maps = torch.rand(3, 1, *size) * 10
    expected = GaussianBlur2d(sigma=4.0, channels=1, kernel_size=33)(maps)
    blurred = GaussianBlur(sigma=4.0, kernel_size=33)(maps)
    assert torch.allclose(blurred, expected, atol=1e-5 * float(expected.abs().max()))


def test_reflect_blur_matrix_keeps_constants_and_rejects_too_small_maps() -> None:
    from kdanomaly.models.kdad.anomaly_map import reflect_blur_matrix

    weights = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)
    matrix = reflect_blur_matrix(weights, 5)
    assert torch.allclose(matrix.sum(dim=1), torch.ones(5, dtype=torch.float64))
    assert matrix[0].tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]  # reflect: x[-1] is x[1]
    with pytest.raises(ValueError, match="larger than"):
        reflect_blur_matrix(torch.ones(9, dtype=torch.float64), 4)
