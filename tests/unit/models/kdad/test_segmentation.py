"""DeSTSeg's pieces in KDAnomaly: the synthetic anomalies, the segmentation head and its loss, the denoising
student's training features."""

from __future__ import annotations

import pytest
import torch

from kdanomaly import KDAnomaly
from kdanomaly.models.kdad import KDADModel
from kdanomaly.models.kdad.segmentation import SegmentationHead, segmentation_loss
from kdanomaly.models.kdad.synthetic_anomalies import SyntheticAnomalies
from kdanomaly.models.kdad.torch_model import Distillation


def test_synthetic_anomalies_change_pixels_only_inside_their_masks_and_repeat_with_the_seed() -> None:
    generator = SyntheticAnomalies(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), probability=1.0)
    images = torch.rand(4, 3, 64, 64) * 2 - 1  # normalised: [0, 1] mapped to [-1, 1]
    torch.manual_seed(3)
    anomalous, masks = generator(images)
    assert masks.shape == (4, 1, 64, 64)
    assert bool(((masks >= 0) & (masks <= 1)).all()) and bool((masks.flatten(1).amax(1) > 0).all())
    outside = (masks == 0).expand_as(images)
    torch.testing.assert_close(anomalous[outside], images[outside], atol=1e-5, rtol=0)
    inside = (masks == 1).expand_as(images)
    assert float((anomalous[inside] - images[inside]).abs().mean()) > 0.05
    torch.manual_seed(3)
    again, again_masks = generator(images)
    torch.testing.assert_close(again, anomalous)
    torch.testing.assert_close(again_masks, masks)


def test_synthetic_anomalies_reject_a_probability_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="probability"):
        SyntheticAnomalies((0.5,) * 3, (0.5,) * 3, probability=0.0)


def test_segmentation_head_gives_logits_at_the_finest_scale_that_follow_the_inputs() -> None:
    torch.manual_seed(0)
    head = SegmentationHead([8, 16]).eval()
    teacher = {"a": torch.randn(2, 8, 16, 16), "b": torch.randn(2, 16, 8, 8)}
    logits = head(teacher, {key: -value for key, value in teacher.items()})
    assert logits.shape == (2, 1, 16, 16)
    same = head(teacher, teacher)
    assert not torch.allclose(same, logits), "the head must see whether the student agrees with the teacher"
    scaled = head(teacher, {key: 5 * value for key, value in teacher.items()})
    torch.testing.assert_close(scaled, same, atol=1e-5, rtol=0)  # normalised features: the scale is ignored


def test_segmentation_loss_is_near_zero_for_confident_right_logits_and_large_for_wrong_ones() -> None:
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 8:24] = 1
    right = (masks[:, :, ::2, ::2] * 2 - 1) * 20  # 16 x 16 logits: the masks are area-averaged down
    assert float(segmentation_loss(right, masks)) < 1e-6
    assert float(segmentation_loss(-right, masks)) > 1
    assert float(segmentation_loss(torch.zeros_like(right), masks)) > float(segmentation_loss(right, masks))


@pytest.mark.parametrize("distillation", ["forward", "reverse"])
def test_denoising_student_sees_the_anomalies_and_is_matched_to_the_clean_teacher(distillation: Distillation) -> None:
    """A reverse student sees them as the teacher's features of the anomalous images."""
    torch.manual_seed(0)
    model = KDADModel(
        "tf_efficientnet_lite0", ["blocks.1", "blocks.2"], distillation, segmentation=True, memory_weight=0.0
    ).train()
    images, anomalous = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    features = model.training_features(images, anomalous)
    with torch.no_grad():
        clean_teacher = model.teacher(images)
    for layer, value in clean_teacher.items():
        torch.testing.assert_close(features.teacher[layer], value)
    with torch.no_grad():
        student_now = model.student_features(anomalous, model.teacher(anomalous))[0]
    for layer, value in student_now.items():
        torch.testing.assert_close(features.student[layer], value)
    assert features.segmentation_logits is not None and features.segmentation_logits.shape == (2, 1, 16, 16)
    features.segmentation_logits.sum().backward()
    assert all(p.grad is None for p in model.student.parameters()), "the head must not train the student"
    assert all(p.grad is not None for p in model.segmentation_head.parameters())  # type: ignore[union-attr]


def test_segmentation_without_the_denoising_student_is_refused() -> None:
    with pytest.raises(ValueError, match="denoising=True"):
        KDAnomaly(segmentation=True, denoising=False)
