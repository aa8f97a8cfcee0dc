"""The detector network: timm backbone (deformable last blocks) + feature pyramid + torchvision's Faster R-CNN.

Everything torchvision has is torchvision's: anchors, RPN, RoIAlign, box coder, sampling, NMS, resizing. This
module adds the backbone, the pyramid choice, the contrastive box branch and k-shot matching in a PrototypeMemory.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal, TypedDict

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign, batched_nms

from kdanomaly.memory import PrototypeMemory
from kdanomaly.models.components.backbone import create_backbone
from kdanomaly.weights import input_statistics

from .deformable import make_last_blocks_deformable
from .ghost_fpn import ghost_fpn, standard_fpn
from .roi_heads import ContrastiveRoIHeads, CosineBoxPredictor, projection_head

PyramidKind = Literal["ghost", "standard"]
FEATURE_LEVELS = ("0", "1", "2")  # backbone strides 8, 16, 32; the pyramid adds a max-pooled "pool" level
ANCHOR_SIZES = ((16, 24), (32, 48), (64, 96), (128, 192))  # one tuple per pyramid level, in input pixels
ASPECT_RATIOS = (0.33, 1.0, 3.0)  # scratches are long and thin, in either direction


class RoIHeadSettings(TypedDict):
    """torchvision ``RoIHeads`` arguments of :data:`ROI_HEAD_SETTINGS`."""

    fg_iou_thresh: float
    bg_iou_thresh: float
    batch_size_per_image: int
    positive_fraction: float
    bbox_reg_weights: tuple[float, float, float, float] | None
    score_thresh: float
    nms_thresh: float
    detections_per_img: int


ROI_HEAD_SETTINGS: RoIHeadSettings = {
    "fg_iou_thresh": 0.5,
    "bg_iou_thresh": 0.5,
    "batch_size_per_image": 128,
    "positive_fraction": 0.25,
    "bbox_reg_weights": None,
    "score_thresh": 0.05,
    "nms_thresh": 0.5,
    "detections_per_img": 100,
}


class PyramidBackbone(nn.Module):
    """timm feature extractor (frozen batch norm; stem and the first three stages, up to stride 8, frozen) + pyramid.

    Args:
        name: timm model with an EfficientNet-style ``blocks`` attribute.
        pyramid: ``"ghost"`` (Ghost-conv FPN) or ``"standard"`` (torchvision's FPN).
        channels: pyramid width.
        deformable_blocks: how many of the last stride-1 blocks get a deformable depthwise conv.
    """

    def __init__(
        self, name: str, pyramid: PyramidKind, channels: int, deformable_blocks: int, pretrained: bool = True
    ) -> None:
        super().__init__()
        body = create_backbone(name, pretrained, features_only=True, out_indices=(2, 3, 4))
        self.body = freeze_batch_norm_2d(body)
        for module in (self.body.conv_stem, *self.body.blocks[:3]):
            module.requires_grad_(False)
        self.deformable_blocks = make_last_blocks_deformable(self.body.blocks, deformable_blocks)
        if pyramid not in ("ghost", "standard"):
            raise ValueError(f"pyramid must be 'ghost' or 'standard', got {pyramid!r}")
        build = ghost_fpn if pyramid == "ghost" else standard_fpn
        self.fpn = build(self.body.feature_info.channels(), channels)
        self.out_channels = channels

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        levels = self.body(images)
        return self.fpn(OrderedDict(zip(FEATURE_LEVELS, levels, strict=True)))


class DefectDetectorNet(FasterRCNN):
    """Faster R-CNN on a :class:`PyramidBackbone`, with an optional contrastive box branch and cosine classifier.

    Images are lists of ``(3, H, W)`` tensors in ``[0, 1]``; they are resized to ``image_size`` (shorter side,
    longer side capped at the same size) and normalised with the backbone's statistics by torchvision's transform.
    Trained classes are ``1..num_classes`` (0 is background). Defaults live in :class:`FewShotDetector`.

    Args:
        num_classes: trained defect types.
        backbone: timm model with EfficientNet-style ``blocks`` (ImageNet weights if ``pretrained``).
        image_size: side the images are resized to.
        pyramid, pyramid_channels: ``"ghost"`` or ``"standard"`` feature pyramid, and its width.
        deformable_blocks: last stride-1 backbone blocks whose depthwise conv becomes deformable.
        contrastive_weight: weight of the contrastive proposal encoding loss (0: no contrastive branch).
        cosine_classifier: cosine-similarity class logits instead of torchvision's linear predictor.
        representation_size: width of the box head (and of the embeddings matched in a memory).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str,
        image_size: int,
        pyramid: PyramidKind,
        pyramid_channels: int,
        deformable_blocks: int,
        contrastive_weight: float,
        cosine_classifier: bool,
        representation_size: int,
        pretrained: bool,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        body = PyramidBackbone(backbone, pyramid, pyramid_channels, deformable_blocks, pretrained)
        mean, std = input_statistics(backbone)
        box_roi_pool = MultiScaleRoIAlign(list(FEATURE_LEVELS), output_size=7, sampling_ratio=2)
        box_head = TwoMLPHead(pyramid_channels * 7 * 7, representation_size)
        predictor_type = CosineBoxPredictor if cosine_classifier else FastRCNNPredictor
        box_predictor = predictor_type(representation_size, num_classes + 1)
        super().__init__(
            body,
            min_size=image_size,
            max_size=image_size,
            image_mean=mean,
            image_std=std,
            rpn_anchor_generator=AnchorGenerator(ANCHOR_SIZES, (ASPECT_RATIOS,) * len(ANCHOR_SIZES)),
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=500,
            rpn_post_nms_top_n_test=300,
            box_roi_pool=box_roi_pool,
            box_head=box_head,
            box_predictor=box_predictor,
        )
        encoder = projection_head(representation_size) if contrastive_weight > 0 else None
        self.roi_heads = ContrastiveRoIHeads(
            encoder, contrastive_weight, box_roi_pool=box_roi_pool, box_head=box_head, box_predictor=box_predictor,
            **ROI_HEAD_SETTINGS,
        )  # fmt: skip

    def embed_boxes(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> torch.Tensor:
        """Unit box-head features ``(sum N_i, representation)`` of given boxes (``(N_i, 4)`` xyxy, image pixels)."""
        targets = [{"boxes": b.float(), "labels": torch.ones(len(b), dtype=torch.int64)} for b in boxes]
        image_list, resized = self.transform(images, targets)
        features = self.backbone(image_list.tensors)
        box_features = self.roi_heads.box_features(features, [t["boxes"] for t in resized], image_list.image_sizes)
        return F.normalize(box_features, dim=1)

    def detect_with_memory(
        self, images: list[torch.Tensor], memory: PrototypeMemory, min_score: float = 0.05
    ) -> list[dict[str, object]]:
        """Detections named by the memory: each RPN proposal takes the enrolled class with the highest mean
        similarity; its score is the box classifier's foreground probability times ``(1 + similarity) / 2``.

        Per-class NMS, at most ``detections_per_img`` per image; boxes in the input images' pixels and ``labels`` as
        class names. Proposals are the RPN's, not regressed by the (trained-class) box head.
        """
        original_sizes = [tuple(image.shape[-2:]) for image in images]
        image_list, _ = self.transform(images)
        features = self.backbone(image_list.tensors)
        proposals, _ = self.rpn(image_list, features)
        box_features = self.roi_heads.box_features(features, proposals, image_list.image_sizes)
        foreground = 1 - self.roi_heads.box_predictor(box_features)[0].softmax(dim=1)[:, 0]
        similarities, names = memory.class_scores(F.normalize(box_features, dim=1).cpu().numpy())
        best = torch.from_numpy(similarities).to(foreground).max(dim=1)
        scores = foreground * (1 + best.values) / 2
        detections: list[dict[str, torch.Tensor]] = []
        counts = [len(p) for p in proposals]
        per_image = zip(proposals, scores.split(counts), best.indices.split(counts), strict=True)
        for boxes, image_scores, classes in per_image:
            keep = image_scores >= min_score
            boxes, image_scores, classes = boxes[keep], image_scores[keep], classes[keep]
            keep = batched_nms(boxes, image_scores, classes, self.roi_heads.nms_thresh)
            keep = keep[: self.roi_heads.detections_per_img]
            detections.append({"boxes": boxes[keep], "scores": image_scores[keep], "labels": classes[keep]})
        detections = self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
        return [d | {"labels": [names[i] for i in d["labels"].tolist()]} for d in detections]
