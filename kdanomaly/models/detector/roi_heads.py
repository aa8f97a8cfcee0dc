"""Box heads of the detector: torchvision's RoIHeads plus a contrastive proposal encoder, and a cosine classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.ops import box_iou

from .loss import proposal_contrastive_loss


class CosineBoxPredictor(nn.Module):
    """Class logits as scaled cosine similarities to one weight vector per class (background included), and
    class-specific box deltas like torchvision's ``FastRCNNPredictor``."""

    def __init__(self, in_channels: int, num_classes: int, scale: float = 20.0) -> None:
        super().__init__()
        self.class_weight = nn.Parameter(torch.empty(num_classes, in_channels))
        nn.init.normal_(self.class_weight, std=0.01)
        self.bbox_pred = nn.Linear(in_channels, num_classes * 4)
        self.scale = scale

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = features.flatten(1)
        logits = self.scale * F.normalize(features, dim=1) @ F.normalize(self.class_weight, dim=1).T
        return logits, self.bbox_pred(features)


class ContrastiveRoIHeads(RoIHeads):
    """torchvision's box branch; in training, with an ``encoder``, adds FSCE's contrastive proposal encoding loss.

    The encoder projects the box head's features of the sampled proposals; the loss pulls proposals of one class
    together and pushes other classes away (:func:`proposal_contrastive_loss`), weighted by ``contrastive_weight``.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        contrastive_weight: float = 0.1,
        temperature: float = 0.2,
        iou_threshold: float = 0.7,
        **roi_heads: object,
    ) -> None:
        super().__init__(**roi_heads)
        self.encoder = encoder
        self.contrastive_weight, self.temperature, self.iou_threshold = contrastive_weight, temperature, iou_threshold

    def box_features(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Box-head features ``(sum N_i, representation)`` of ``boxes`` (one tensor per image)."""
        return self.box_head(self.box_roi_pool(features, boxes, image_shapes))

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        if not self.training:
            box_features = self.box_features(features, proposals, image_shapes)
            class_logits, box_regression = self.box_predictor(box_features)
            boxes, scores, labels = self.postprocess_detections(class_logits, box_regression, proposals, image_shapes)
            return [{"boxes": b, "labels": c, "scores": s} for b, s, c in zip(boxes, scores, labels, strict=True)], {}
        if targets is None:
            raise ValueError("targets are required in training mode")
        proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_features(features, proposals, image_shapes)
        class_logits, box_regression = self.box_predictor(box_features)
        loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
        if self.encoder is not None and self.contrastive_weight > 0:
            ious = torch.cat(
                [matched_iou(p, t["boxes"], m) for p, t, m in zip(proposals, targets, matched_idxs, strict=True)]
            )
            losses["loss_contrastive"] = self.contrastive_weight * proposal_contrastive_loss(
                self.encoder(box_features), torch.cat(labels), ious, self.temperature, self.iou_threshold
            )
        return [], losses


def matched_iou(proposals: torch.Tensor, gt_boxes: torch.Tensor, matched: torch.Tensor) -> torch.Tensor:
    """IoU of every proposal with the ground-truth box it was matched to (zero for an image without boxes)."""
    if len(gt_boxes) == 0:
        return proposals.new_zeros(len(proposals))
    return box_iou(proposals, gt_boxes).gather(1, matched.clamp(min=0)[:, None]).squeeze(1)


def projection_head(in_channels: int, embedding_size: int = 128) -> nn.Sequential:
    """The contrastive encoder: a two-layer MLP on box-head features (FSCE)."""
    return nn.Sequential(
        nn.Linear(in_channels, in_channels), nn.ReLU(inplace=True), nn.Linear(in_channels, embedding_size)
    )
