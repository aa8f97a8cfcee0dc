"""Few-shot defect detector: Faster R-CNN with deformable backbone blocks, Ghost-conv FPN, contrastive proposal
encoding; new defect types enrolled as k-shot box embeddings in a PrototypeMemory.

Example:
    >>> detector = FewShotDetector(class_names=["crazing", "inclusion", "patches"])  # doctest: +SKIP
    >>> lightning.Trainer(max_epochs=20).fit(detector, train_loader, val_loader)  # doctest: +SKIP
    >>> memory = detector.enroll(images, boxes, labels)  # k boxed examples of new types  # doctest: +SKIP
    >>> detector.detect(test_images, memory)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torchmetrics.detection import MeanAveragePrecision

from kdanomaly.memory import PrototypeMemory
from kdanomaly.models.components.backbone import DEFAULT_BACKBONE
from kdanomaly.models.components.distributed import objects_of_every_process

from .torch_model import DefectDetectorNet, PyramidKind

Batch = tuple[torch.Tensor, list[dict[str, torch.Tensor]]]
Detection = dict[str, Any]


class FewShotDetector(LightningModule):
    """Trains on boxed images (``(images, targets)`` batches, torchvision targets, labels ``1..len(class_names)``).

    Validation logs ``map_50`` (COCO-style mAP at IoU 0.5, torchmetrics). The plain baseline of the ablation in
    benchmarks/README.md is ``pyramid="standard", deformable_blocks=0, contrastive_weight=0``.

    Args:
        class_names: trained defect types.
        backbone, image_size, pyramid, pyramid_channels, deformable_blocks, contrastive_weight, cosine_classifier,
            representation_size, pretrained: see :class:`DefectDetectorNet`.
        learning_rate, weight_decay: AdamW's (peak learning rate of the warm-up + cosine schedule).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        backbone: str = DEFAULT_BACKBONE,
        image_size: int = 224,
        pyramid: PyramidKind = "ghost",
        pyramid_channels: int = 128,
        deformable_blocks: int = 1,
        contrastive_weight: float = 0.1,
        cosine_classifier: bool = False,
        representation_size: int = 256,
        learning_rate: float = 2e-4,
        weight_decay: float = 1e-4,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        if len(class_names) == 0 or len(set(class_names)) != len(class_names):
            raise ValueError(f"class_names must be non-empty and distinct, got {list(class_names)}")
        self.save_hyperparameters()
        self.class_names = list(class_names)
        self.model = DefectDetectorNet(
            len(self.class_names), backbone, image_size, pyramid, pyramid_channels, deformable_blocks,
            contrastive_weight, cosine_classifier, representation_size, pretrained,
        )  # fmt: skip
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        # Synchronised by hand: torchmetrics' own sync needs as many images on every process (no exact sharding).
        self.map = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True, sync_on_compute=False)
        self._held_out: list[tuple[list[Detection], list[dict[str, torch.Tensor]]]] = []

    def training_step(self, batch: Batch, *args: Any) -> torch.Tensor:
        images, targets = batch
        losses = self.model(list(images), targets)
        loss = torch.stack(list(losses.values())).sum()
        self.log_dict({"train_loss": loss.detach(), **{k: v.detach() for k, v in losses.items()}}, prog_bar=True)
        return loss

    def validation_step(self, batch: Batch, *args: Any) -> None:
        images, targets = batch
        self._held_out.append(move_data_to_device((self.model(list(images)), targets), "cpu"))

    def on_validation_epoch_end(self) -> None:
        """mAP@0.5 over every process's held-out images (each scored once under DDP, see ``evaluation_sampler``)."""
        for detections, targets in objects_of_every_process(self._held_out):
            self.map.update(detections, targets)
        self.log("map_50", self.map.compute()["map_50"], prog_bar=True, sync_dist=True)  # the same on every process
        self.map.reset()
        self._held_out.clear()

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        """AdamW over the trainable parameters; linear warm-up over the first 5 % of the steps, then cosine decay."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.learning_rate, weight_decay=self.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = max(total // 20, 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    @torch.no_grad()
    def detect(
        self, images: Sequence[torch.Tensor], memory: PrototypeMemory | None = None, min_score: float = 0.05
    ) -> list[Detection]:
        """Boxes (input pixels), scores and class-name labels per image: by the trained classifier, or — with a
        ``memory`` — by the enrolled classes (:meth:`DefectDetectorNet.detect_with_memory`); scores below
        ``min_score`` are dropped."""
        self.eval()
        images = [image.to(self.device) for image in images]
        if memory is not None:
            return self.model.detect_with_memory(images, memory, min_score)
        heads = self.model.roi_heads
        trained_threshold, heads.score_thresh = heads.score_thresh, min_score
        try:
            found = self.model(images)
        finally:
            heads.score_thresh = trained_threshold
        return [d | {"labels": [self.class_names[i - 1] for i in d["labels"].tolist()]} for d in found]

    @torch.no_grad()
    def enroll(
        self,
        images: Sequence[torch.Tensor],
        boxes: Sequence[torch.Tensor],
        labels: Sequence[Sequence[str]],
        memory: PrototypeMemory | None = None,
    ) -> PrototypeMemory:
        """Add the box embeddings of labelled boxes (``boxes[i]`` ``(N_i, 4)`` xyxy in ``images[i]``'s pixels,
        ``labels[i]`` their N_i class names) to ``memory`` (a new flat one if None). No weight changes."""
        if not len(images) == len(boxes) == len(labels):
            raise ValueError(f"{len(images)} images, {len(boxes)} box sets and {len(labels)} label sets")
        for image_boxes, image_labels in zip(boxes, labels, strict=True):
            if image_boxes.ndim != 2 or image_boxes.shape[1] != 4 or len(image_boxes) != len(image_labels):
                raise ValueError(f"boxes must be (N, 4) with N labels, got {tuple(image_boxes.shape)}")
        self.eval()
        embeddings = self.model.embed_boxes([i.to(self.device) for i in images], [b.to(self.device) for b in boxes])
        memory = memory if memory is not None else PrototypeMemory(embeddings.shape[1])
        memory.add(embeddings.cpu(), [name for image_labels in labels for name in image_labels])
        return memory
