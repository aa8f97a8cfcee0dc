"""The detector's ROI heads: the IoU of each proposal with its assigned box."""

from __future__ import annotations

import pytest
import torch

from kdanomaly.models.detector.roi_heads import matched_iou


def test_matched_iou_is_the_iou_with_the_assigned_box() -> None:
    proposals = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 40, 30]])
    assert matched_iou(proposals, gt, torch.tensor([0, 0, 1])).tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert matched_iou(proposals, gt[:0], torch.tensor([0, 0, 0])).tolist() == [0.0, 0.0, 0.0]
