"""PyTorch model of KDAnomaly: frozen pretrained teacher, a SimAM student with SSPCAB (a forward student on the
image, or a reverse one rebuilding the teacher's features through a one-class bottleneck), an optional segmentation
head on their discrepancy (DeSTSeg), and a memory of normal teacher patches (positional, or a k-shot VectorStore)
fused with the distillation map."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple, get_args

import torch
from anomalib.data import InferenceBatch
from anomalib.models.components.layers import SSPCAB
from torch import nn
from torch.nn import functional as F

from kdanomaly.models.components import TimmFeatures, insert_simam, validate_image_size
from kdanomaly.models.components.backbone import resolve_layers
from kdanomaly.models.components.batchnorm_folding import FoldedCopy

from .anomaly_map import AnomalyMapGenerator, Fusion, MapStatistics, Standardisation
from .kshot_memory import KShotMemory
from .loss import Distance
from .positional_memory import DEFAULT_MEMORY_SIZE, DEFAULT_MEMORY_WINDOW, PositionalMemory, memory_features
from .reverse_student import ReverseStudent
from .segmentation import SegmentationHead

MemoryKind = Literal["positional", "prototype"]
Distillation = Literal["forward", "reverse"]
Network = Literal["teacher", "student", "segmentation_head"]
DEFAULT_MEMORY_WEIGHT = 0.5  # chosen on validation sets with the statistics: benchmarks/validation_choices.py
DEFAULT_FUSION_STATISTICS: Standardisation = "image_max"


def size_multiple(deepest_stride: int, distillation: Distillation) -> int:
    """What image sides must be multiples of: the deepest stride, twice it for a reverse student's bottleneck."""
    return deepest_stride * (2 if distillation == "reverse" else 1)


class TrainingFeatures(NamedTuple):
    """What a training forward pass returns to the loss."""

    teacher: dict[str, torch.Tensor]
    student: dict[str, torch.Tensor]
    sspcab_pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]
    segmentation_logits: torch.Tensor | None


def _module_key(layer: str) -> str:
    """ModuleDict keys cannot contain dots ("blocks.1" -> "blocks_1")."""
    return layer.replace(".", "_")


class KDADModel(nn.Module):
    """Student-teacher distillation network.

    Args:
        backbone: timm model name of the teacher (pretrained, frozen) and of a forward student.
        layers: feature stages to distil, e.g. ``("blocks.1", "blocks.2", "blocks.4")``.
        distillation: ``"forward"`` (the student is the backbone again, on the image) or ``"reverse"`` (the
            student rebuilds the teacher's features from a one-class bottleneck; see :class:`ReverseStudent`).
        student_pretrained: start a forward student from the teacher's ImageNet weights instead of random ones (for
            the denoising student, which then only has to learn to undo anomalies).
        use_simam: put a SimAM after every block of the student's stages (a reverse student: its decoder's).
        use_sspcab: pass each student feature map through an SSPCAB block before matching the teacher (a reverse
            student: its bottleneck's code).
        sspcab_kernel_size, sspcab_dilation: size of the SSPCAB's corner sub-kernels and their distance
            from the masked centre.
        distance: ``"cosine"`` or ``"l2"`` (between channel-normalised features), for loss and map alike.
        segmentation: add DeSTSeg's segmentation head; its anomaly probability, not the feature distance, is then
            the distillation map. It learns from synthetic anomalies (see ``training_features``).
        fusion: how per-scale maps are combined, ``"mean"`` or ``"product"``.
        sigma: Gaussian smoothing of the fused map, in pixels.
        memory_weight: weight of the normal-memory map in the final map (0 = distillation only). Both maps are
            standardised by their mean and standard deviation on the training images first.
        fusion_statistics: which statistics standardise them: ``"pixels"`` (every pixel) or ``"image_max"`` (each
            normal map's maximum); see :class:`MapStatistics`.
        memory_layers: teacher stages whose (3x3-aggregated) features the memory stores, a subset of ``layers``;
            default: all distilled stages but the shallowest (``blocks.2``, ``blocks.4`` for the default layers).
        memory_kind: ``"positional"`` (each patch against normal patches at the same place; needs 2+ images) or
            ``"prototype"`` (k-shot: against a coreset of all normal patches in a VectorStore; from 1 image).
        memory_window: positional: positions around the query position searched (``window x window``).
        memory_size: positional: normal patches kept per position (greedy k-center coreset).
        coreset_ratio: prototype: fraction of the normal patches kept (greedy k-center coreset).
    """

    def __init__(
        self,
        backbone: str,
        layers: Sequence[str],
        distillation: Distillation = "forward",
        student_pretrained: bool = False,
        use_simam: bool = True,
        use_sspcab: bool = True,
        sspcab_kernel_size: int = 1,
        sspcab_dilation: int = 1,
        distance: Distance = "cosine",
        segmentation: bool = False,
        fusion: Fusion = "mean",
        sigma: float = 4.0,
        memory_weight: float = DEFAULT_MEMORY_WEIGHT,
        fusion_statistics: Standardisation = DEFAULT_FUSION_STATISTICS,
        memory_layers: Sequence[str] | None = None,
        memory_kind: MemoryKind = "positional",
        memory_window: int = DEFAULT_MEMORY_WINDOW,
        memory_size: int = DEFAULT_MEMORY_SIZE,
        coreset_ratio: float = 0.1,
    ) -> None:
        super().__init__()
        if not 0 <= memory_weight <= 1:
            raise ValueError(f"memory_weight must be in [0, 1], got {memory_weight}")
        if memory_layers is None:
            memory_layers = [name for _, name in resolve_layers(backbone, layers)][1:] or list(layers)
        missing = [layer for layer in memory_layers if layer not in layers]
        if memory_weight > 0 and (missing or not memory_layers):
            raise ValueError(f"memory_layers {list(memory_layers)} must be a non-empty subset of layers {list(layers)}")
        self.teacher = TimmFeatures(backbone, layers, pretrained=True).eval()
        self.teacher.requires_grad_(False)
        self.distillation = distillation
        self.student: TimmFeatures | ReverseStudent
        self.sspcab: nn.ModuleDict | None = None
        if distillation == "reverse":
            if student_pretrained:
                msg = "a reverse student is a decoder with no ImageNet weights: set student_pretrained=False"
                raise ValueError(msg)
            self.student = ReverseStudent(
                self.teacher.layers, self.teacher.channels, self.teacher.strides, use_simam, use_sspcab,
                sspcab_kernel_size, sspcab_dilation,
            )  # fmt: skip
        elif distillation == "forward":
            self.student = TimmFeatures(backbone, layers, pretrained=student_pretrained)
            if use_simam:
                insert_simam(self.student.model)
            if use_sspcab:
                self.sspcab = nn.ModuleDict(
                    {
                        _module_key(layer): SSPCAB(channels, kernel_size=sspcab_kernel_size, dilation=sspcab_dilation)
                        for layer, channels in zip(self.student.layers, self.student.channels, strict=True)
                    }
                )
        else:
            raise ValueError(f"unknown distillation {distillation!r}; use 'forward' or 'reverse'")
        self.segmentation_head = SegmentationHead(self.teacher.channels) if segmentation else None
        self.anomaly_map_generator = AnomalyMapGenerator(distance=distance, fusion=fusion, sigma=sigma)
        self.max_stride = max(self.teacher.strides)
        self.memory_weight = memory_weight
        self.memory_layers = list(memory_layers)
        if memory_kind not in ("positional", "prototype"):
            raise ValueError(f"unknown memory_kind {memory_kind!r}; use 'positional' or 'prototype'")
        self.memory = (
            PositionalMemory(memory_window, memory_size) if memory_kind == "positional" else KShotMemory(coreset_ratio)
        )
        self.map_statistics = MapStatistics(fusion_statistics)
        self._folded_copies = {name: FoldedCopy() for name in get_args(Network)}

    def train(self, mode: bool = True) -> KDADModel:
        """Switch the student to ``mode``; the teacher always stays in eval mode (frozen BatchNorm).

        Out of training the convolution weights are held channels-last, oneDNN's fast layout for the backbone's
        depthwise convolutions on CPU; training keeps PyTorch's default layout, so trained weights do not depend
        on the switch. Out of training the networks also run as copies with their BatchNorm folded into the
        convolutions (see :func:`network`)."""
        super().train(mode)
        self.teacher.eval()
        return self.to(memory_format=torch.contiguous_format if mode else torch.channels_last)

    def network(self, name: Network) -> nn.Module:
        """The teacher, student or segmentation head as it runs now: itself in training, else a copy with every
        BatchNorm folded into its convolution (the same outputs to float rounding, one pass over each feature
        map fewer), remade whenever the network's weights change. Exporters trace the network itself (ONNX
        Runtime and OpenVINO fold BatchNorm on their own)."""
        network = getattr(self, name)
        if self.training or torch.compiler.is_compiling() or torch.jit.is_tracing():
            return network
        return self._folded_copies[name](network)

    def check_input(self, images: torch.Tensor) -> None:
        """Raise ValueError for tensors the networks cannot take."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        validate_image_size(images.shape[-2:], self.max_stride, size_multiple(self.max_stride, self.distillation))

    def student_features(
        self, images: torch.Tensor, teacher: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Student features after SSPCAB, and each SSPCAB's (input, output) pair. A forward student sees
        ``images``, a reverse one the ``teacher``'s features of them."""
        if self.distillation == "reverse":
            return self.network("student")(teacher)
        features = self.network("student")(images)
        if self.sspcab is None:
            return features, {}
        pairs = {layer: (value, self.sspcab[_module_key(layer)](value)) for layer, value in features.items()}
        return {layer: output for layer, (_, output) in pairs.items()}, pairs

    def training_features(self, images: torch.Tensor, anomalous: torch.Tensor | None = None) -> TrainingFeatures:
        """What the loss needs. With ``anomalous`` (``images`` with synthetic anomalies) the student sees those and
        is still matched to the teacher's features of the clean ``images`` (DeSTSeg's denoising student); the
        segmentation head sees teacher and student on the same anomalous input, detached from both."""
        self.check_input(images)
        if anomalous is not None and anomalous.shape != images.shape:
            raise ValueError(f"anomalous images {tuple(anomalous.shape)} differ in shape from {tuple(images.shape)}")
        with torch.no_grad():
            target = self.teacher(images)
            seen = target if anomalous is None else self.teacher(anomalous)
        student, pairs = self.student_features(images if anomalous is None else anomalous, seen)
        logits = None
        if self.segmentation_head is not None:
            logits = self.segmentation_head(seen, {layer: value.detach() for layer, value in student.items()})
        return TrainingFeatures(target, student, pairs, logits)

    def forward(self, images: torch.Tensor) -> TrainingFeatures | InferenceBatch:
        """Training: teacher/student features. Eval: anomaly map ``(B, 1, H, W)`` and image score (its max)."""
        if self.training:
            return self.training_features(images)
        self.check_input(images)
        with torch.no_grad():
            teacher = self.network("teacher")(images)
        student, _ = self.student_features(images, teacher)
        distillation_map = self.distillation_map(teacher, student, images.shape[-2:])
        if self.memory_weight == 0:
            anomaly_map = self.anomaly_map_generator.blur(distillation_map)
        else:  # fuse the raw maps, smooth once (the Gaussian is linear)
            memory_map = self.memory_map(memory_features(teacher, self.memory_layers), images.shape[-2:])
            fused = self.map_statistics.fuse(distillation_map, memory_map, self.memory_weight)
            anomaly_map = self.anomaly_map_generator.blur(fused)
        return InferenceBatch(pred_score=torch.amax(anomaly_map, dim=(-2, -1)), anomaly_map=anomaly_map)

    def distillation_map(
        self,
        teacher: dict[str, torch.Tensor],
        student: dict[str, torch.Tensor],
        image_size: tuple[int, int] | torch.Size,
    ) -> torch.Tensor:
        """The student-teacher map ``(B, 1, H, W)``, not smoothed: the segmentation head's anomaly probability
        when there is one, else the feature distance fused over scales."""
        if self.segmentation_head is None:
            return self.anomaly_map_generator(teacher, student, image_size, smooth=False)
        probability = torch.sigmoid(self.network("segmentation_head")(teacher, student))
        return F.interpolate(probability, size=image_size, mode="bilinear", align_corners=False)

    def memory_map(self, features: torch.Tensor, image_size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """Memory distance map at ``image_size`` (not smoothed) for memory features ``(B, C, h, w)``."""
        return F.interpolate(self.memory(features), size=image_size, mode="bilinear")

    @torch.no_grad()
    def build_memory(self, batches: Iterable[torch.Tensor], teacher_bank: bool = True) -> None:
        """Store the normal images' teacher patches and the statistics that put both maps on one scale.

        ``batches`` yields pre-processed normal images. The memory map's statistics are held out (each training
        image against the others; see the memory's ``held_out_distances``), so they describe unseen normal images;
        the memory is then reduced to its coreset. ``teacher_bank=False`` keeps the stored patches (the
        teacher is frozen) and refreshes only the distillation map's statistics for the current student.
        """
        was_training = self.training
        self.eval()
        stored, distillation_maps = [], []
        for images in batches:
            self.check_input(images)
            teacher = self.network("teacher")(images)
            student, _ = self.student_features(images, teacher)
            if teacher_bank:
                stored.append(memory_features(teacher, self.memory_layers))
            distillation_maps.append(self.distillation_map(teacher, student, images.shape[-2:]))
        self.train(was_training)
        if not teacher_bank:
            if self.memory.is_empty:
                raise RuntimeError("the normal memory is empty: build it with teacher_bank=True first")
            self.map_statistics.fit(torch.cat(distillation_maps))
            return
        bank = torch.cat(stored)
        self.memory.fit(bank)
        held_out = self.memory.held_out_distances(bank)
        memory_maps = F.interpolate(held_out, size=distillation_maps[0].shape[-2:], mode="bilinear")
        self.map_statistics.fit(torch.cat(distillation_maps), memory_maps)
        self.memory.reduce()
