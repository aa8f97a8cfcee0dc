"""The reverse student: the teacher's stages rebuilt, at their shapes, from a one-class code; bad set-ups refused."""

from __future__ import annotations

import pytest
import torch

from kdanomaly import KDAnomaly
from kdanomaly.models.kdad import KDADModel
from kdanomaly.models.kdad.reverse_student import ReverseStudent

LAYERS = ["blocks.1", "blocks.2", "blocks.4"]


@pytest.fixture(scope="module")
def reverse_model() -> KDADModel:
    torch.manual_seed(0)
    return KDADModel("tf_efficientnet_lite0", LAYERS, distillation="reverse", memory_weight=0.0)


def test_every_stage_is_rebuilt_at_the_teachers_shape_from_a_code_at_twice_the_deepest_stride(
    reverse_model: KDADModel,
) -> None:
    reverse_model.train()
    out = reverse_model(torch.randn(2, 3, 128, 128))
    assert [f.shape for f in out.student.values()] == [f.shape for f in out.teacher.values()]
    assert list(out.student) == LAYERS
    code, after_sspcab = out.sspcab_pairs["bottleneck"]
    assert tuple(code.shape) == (2, 512, 4, 4) and after_sspcab.shape == code.shape
    assert reverse_model.sspcab is None, "a reverse student's SSPCAB sits on its bottleneck, not on its outputs"


def test_the_student_sees_the_image_only_through_the_teachers_features(reverse_model: KDADModel) -> None:
    """Two images the teacher cannot tell apart give the same rebuilt features: the student has no path around
    the bottleneck to the pixels (what makes an anomaly come back rebuilt as normal)."""
    reverse_model.eval()
    images = torch.rand(1, 3, 128, 128)
    teacher = reverse_model.network("teacher")(images)
    with torch.no_grad():
        rebuilt, _ = reverse_model.student_features(images, teacher)
        from_other_pixels, _ = reverse_model.student_features(torch.zeros_like(images), teacher)
    for layer in LAYERS:
        torch.testing.assert_close(rebuilt[layer], from_other_pixels[layer])


def test_the_decoder_reaches_every_stage_through_the_code_alone() -> None:
    """A gradient from the shallowest rebuilt stage reaches every teacher stage's input through the bottleneck."""
    torch.manual_seed(0)
    student = ReverseStudent(["a", "b", "c"], [8, 16, 32], [4, 8, 16], bottleneck_width=32)
    teacher = {
        "a": torch.randn(1, 8, 32, 32, requires_grad=True),
        "b": torch.randn(1, 16, 16, 16, requires_grad=True),
        "c": torch.randn(1, 32, 8, 8, requires_grad=True),
    }
    rebuilt, pairs = student(teacher)
    rebuilt["a"].sum().backward()
    assert all(value.grad is not None and value.grad.abs().sum() > 0 for value in teacher.values())
    assert pairs["bottleneck"][0].shape == (1, 32, 4, 4)


@pytest.mark.parametrize("use_simam", [True, False])
def test_simam_follows_every_decoder_block_when_switched_on(use_simam: bool) -> None:
    model = KDADModel("tf_efficientnet_lite0", LAYERS, distillation="reverse", use_simam=use_simam, memory_weight=0)
    simams = sum(type(m).__name__ == "SimAM" for m in model.student.modules())
    assert simams == (len(LAYERS) if use_simam else 0)


def test_bad_reverse_set_ups_are_refused() -> None:
    with pytest.raises(ValueError, match="student_pretrained=False"):
        KDADModel("tf_efficientnet_lite0", LAYERS, distillation="reverse", student_pretrained=True)
    with pytest.raises(ValueError, match="unknown distillation"):
        KDADModel("tf_efficientnet_lite0", LAYERS, distillation="sideways")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="powers of two"):
        ReverseStudent(["a", "b"], [8, 16], [4, 12])
    # The code is at stride 32: 80 px suit the teacher (stride 16) but not the bottleneck.
    with pytest.raises(ValueError, match="multiples of 32"):
        KDAnomaly.configure_pre_processor((80, 80), distillation="reverse")
    with pytest.raises(ValueError, match="multiples of 32"):
        KDAnomaly(distillation="reverse", visualizer=False).model(torch.zeros(1, 3, 80, 80))


def test_the_smallest_image_is_four_positions_of_the_deepest_teacher_stage(reverse_model: KDADModel) -> None:
    reverse_model.eval()
    with torch.no_grad():
        assert reverse_model(torch.rand(1, 3, 64, 96)).anomaly_map.shape == (1, 1, 64, 96)
    KDAnomaly.configure_pre_processor((64, 96), distillation="reverse")


def test_a_reverse_student_needs_no_imagenet_weights_of_its_own() -> None:
    model = KDAnomaly(distillation="reverse", visualizer=False)
    assert isinstance(model.model.student, ReverseStudent)
    assert not any(parameter.requires_grad for parameter in model.model.teacher.parameters())
