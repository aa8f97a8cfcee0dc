"""KDAnomaly: student-teacher knowledge distillation with SimAM and SSPCAB, as an Anomalib model.

Example:
    >>> from anomalib.data import MVTecAD
    >>> from anomalib.engine import Engine
    >>> from kdanomaly import KDAnomaly
    >>> engine = Engine(max_epochs=20)
    >>> engine.fit(KDAnomaly(), datamodule=MVTecAD(root="datasets/MVTecAD", category="bottle"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, cast

import torch
from anomalib import LearningType
from anomalib.data import Batch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from anomalib.pre_processing import PreProcessor
from anomalib.utils.serialization import anomalib_safe_globals
from anomalib.visualization import Visualizer
from lightning.pytorch import Callback
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch.utils.data import DataLoader
from torchvision.transforms.v2 import Compose, Normalize, Resize, Transform

from kdanomaly.models.components.backbone import (
    DEFAULT_BACKBONE,
    feature_layers,
    resolve_layers,
    validate_backbone,
    validate_image_size,
)
from kdanomaly.models.components.distributed import UnrepeatedEvaluation, match_rank_zero
from kdanomaly.weights import input_statistics

from .anomaly_map import Fusion, Standardisation
from .kshot_memory import KShotMemory
from .loss import Distance, KDADLoss
from .positional_memory import DEFAULT_MEMORY_SIZE, DEFAULT_MEMORY_WINDOW
from .synthetic_anomalies import SyntheticAnomalies
from .torch_model import (
    DEFAULT_FUSION_STATISTICS,
    DEFAULT_MEMORY_WEIGHT,
    Distillation,
    KDADModel,
    MemoryKind,
    size_multiple,
)

DEFAULT_LAYERS = ("blocks.1", "blocks.2", "blocks.4")
# Chosen on validation sets, as the rest of the design (benchmarks/validation_choices.py).
DEFAULT_DISTILLATION: Distillation = "reverse"


class StudentRecipe(NamedTuple):
    """A student design with its optimiser, as it was trained when chosen."""

    distillation: Distillation
    pretrained: bool
    learning_rate: float
    betas: tuple[float, float]


def student_recipe(
    memory_kind: MemoryKind,
    distillation: Distillation | None = None,
    pretrained: bool | None = None,
    learning_rate: float | None = None,
    betas: tuple[float, float] | None = None,
) -> StudentRecipe:
    """Fill in what is ``None``. The reverse student (RD4AD's Adam: 5e-3, betas 0.5 / 0.999) for the positional
    memory; the k-shot memory keeps the forward student from the teacher's weights (lr 1e-3, betas 0.9 / 0.999), as
    a decoder cannot learn what is normal from one image: trained on a single synthetic image the reverse design
    scores image AUROC 0.50, the forward one 0.97 (the set-up of tests/integration/test_kshot_memory.py). A forward
    student from scratch wants lr 1e-2."""
    if distillation is None:
        distillation = "forward" if memory_kind == "prototype" else DEFAULT_DISTILLATION
    if pretrained is None:
        pretrained = distillation == "forward"
    if learning_rate is None:
        learning_rate = 5e-3 if distillation == "reverse" else 1e-3 if pretrained else 1e-2
    if betas is None:
        betas = (0.5, 0.999) if distillation == "reverse" else (0.9, 0.999)
    return StudentRecipe(distillation, pretrained, learning_rate, betas)


DEFAULT_IMAGE_SIZE = (256, 256)


class KDAnomaly(AnomalibModule):
    """Unsupervised defect detection by distilling a frozen pretrained teacher into a student.

    Args:
        backbone: timm model for teacher and student. Default ``tf_efficientnet_lite0``, whose ImageNet
            weights are packaged for offline use; ``resnet18`` or ``wide_resnet50_2`` need the hub once.
        layers: feature stages to distil (names as timm's ``feature_info.module_name()``).
        distillation: ``"forward"`` (a student backbone on the image) or ``"reverse"`` (RD4AD: a decoder rebuilds
            the teacher's features from a one-class bottleneck), see KDADModel. Default (``None``): reverse, but
            forward with the k-shot memory (see :func:`student_recipe`).
        use_simam, use_sspcab: ablation switches for the student's attention and its SSPCAB block.
        sspcab_kernel_size, sspcab_dilation, sspcab_weight: SSPCAB sub-kernel size, dilation d and the
            weight of its self-supervised reconstruction loss.
        distance: ``"cosine"`` or ``"l2"`` discrepancy between channel-normalised features.
        denoising: train the student on images with synthetic (Perlin) anomalies, still matched to the teacher's
            features of the clean image (DeSTSeg's denoising student), with chance ``anomaly_probability`` each.
        student_pretrained: start a forward student from the teacher's ImageNet weights (see KDADModel); default
            (``None``): yes for a forward student, no for a reverse one (it has no backbone).
        segmentation: also train DeSTSeg's segmentation head on those anomalies (needs ``denoising``); its anomaly
            probability becomes the distillation map.
        fusion: ``"mean"`` or ``"product"`` of the per-scale maps.
        sigma: Gaussian smoothing of the anomaly map (pixels).
        memory_weight, memory_layers, memory_kind, memory_window, memory_size, coreset_ratio: the memory of normal
            teacher patches, built from the training images before validation/testing and fused with the
            distillation map (``memory_weight=0`` turns it off: pure distillation). ``memory_kind="positional"``
            (default) compares each patch with normal patches at the same place; ``"prototype"`` is the k-shot mode
            (from a single normal image): a coreset of all normal patches in a VectorStore (see KDADModel).
        fusion_statistics: ``"pixels"`` or ``"image_max"``: the normal-image statistics that put the two maps on one
            scale before fusion (see ``MapStatistics``).
        learning_rate, weight_decay, betas: Adam settings of the student (and SSPCAB, and segmentation head);
            ``None``: the student's own recipe (:func:`student_recipe`).
        pre_processor, post_processor, evaluator, visualizer: Anomalib components; ``True`` builds the
            defaults (the pre-processor normalises with the backbone's own mean/std).
    """

    model: KDADModel

    def __init__(
        self,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = DEFAULT_LAYERS,
        distillation: Distillation | None = None,
        use_simam: bool = True,
        use_sspcab: bool = True,
        sspcab_kernel_size: int = 1,
        sspcab_dilation: int = 1,
        sspcab_weight: float = 0.1,
        distance: Distance = "cosine",
        denoising: bool = True,
        student_pretrained: bool | None = None,
        segmentation: bool = True,
        anomaly_probability: float = 0.5,
        fusion: Fusion = "mean",
        sigma: float = 4.0,
        memory_weight: float = DEFAULT_MEMORY_WEIGHT,
        fusion_statistics: Standardisation = DEFAULT_FUSION_STATISTICS,
        memory_layers: Sequence[str] | None = None,
        memory_kind: MemoryKind = "positional",
        memory_window: int = DEFAULT_MEMORY_WINDOW,
        memory_size: int = DEFAULT_MEMORY_SIZE,
        coreset_ratio: float = 0.1,
        learning_rate: float | None = None,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] | None = None,
        pre_processor: PreProcessor | bool = True,
        post_processor: PostProcessor | bool = True,
        evaluator: Evaluator | bool = True,
        visualizer: Visualizer | bool = True,
    ) -> None:
        validate_backbone(backbone)
        recipe = student_recipe(memory_kind, distillation, student_pretrained, learning_rate, betas)
        if segmentation and not denoising:
            raise ValueError(
                "the segmentation head learns from the denoising student's synthetic anomalies: set denoising=True"
            )
        if pre_processor is True:
            pre_processor = self.configure_pre_processor(
                backbone=backbone, layers=layers, distillation=recipe.distillation
            )
        super().__init__(
            pre_processor=pre_processor,
            post_processor=post_processor,
            evaluator=evaluator,
            visualizer=visualizer,
        )
        self.model = KDADModel(
            backbone=backbone,
            layers=layers,
            distillation=recipe.distillation,
            student_pretrained=recipe.pretrained,
            use_simam=use_simam,
            use_sspcab=use_sspcab,
            sspcab_kernel_size=sspcab_kernel_size,
            sspcab_dilation=sspcab_dilation,
            distance=distance,
            segmentation=segmentation,
            fusion=fusion,
            sigma=sigma,
            memory_weight=memory_weight,
            fusion_statistics=fusion_statistics,
            memory_layers=memory_layers,
            memory_kind=memory_kind,
            memory_window=memory_window,
            memory_size=memory_size,
            coreset_ratio=coreset_ratio,
        )
        # Set when a fit starts (its training images may be new): the teacher patches are stored again.
        self._memory_stale = False
        # Set by training steps: the distillation statistics follow the student before the next evaluation.
        self._statistics_stale = False
        self.synthetic_anomalies = (
            SyntheticAnomalies(*input_statistics(backbone), probability=anomaly_probability) if denoising else None
        )
        self.loss = KDADLoss(distance=distance, sspcab_weight=sspcab_weight if use_sspcab else 0.0)
        self.learning_rate = recipe.learning_rate
        self.weight_decay = weight_decay
        self.betas = recipe.betas
        # Checkpoints record the resolved student, so they load as trained whatever later defaults become.
        self.hparams.update(
            distillation=recipe.distillation, student_pretrained=recipe.pretrained,
            learning_rate=recipe.learning_rate, betas=recipe.betas,
        )  # fmt: skip

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, *args: Any, **kwargs: Any
    ) -> KDAnomaly:
        """Anomalib's loading; a checkpoint written before ``distillation`` was a switch holds a forward student."""
        if "distillation" not in kwargs:
            with anomalib_safe_globals(extra=cls.checkpoint_safe_globals()):
                saved = torch.load(checkpoint_path, map_location="cpu", mmap=True, weights_only=True)
            if "distillation" not in saved.get("hyper_parameters", {}):
                kwargs["distillation"] = "forward"
        return cast(KDAnomaly, super().load_from_checkpoint(checkpoint_path, *args, **kwargs))

    @classmethod
    def configure_pre_processor(
        cls,
        image_size: tuple[int, int] | None = None,
        backbone: str = DEFAULT_BACKBONE,
        layers: Sequence[str] = DEFAULT_LAYERS,
        distillation: Distillation = DEFAULT_DISTILLATION,
    ) -> PreProcessor:
        """Resize to ``image_size`` (default 256x256) and normalise with the backbone's own mean/std; sides the
        networks of ``distillation`` cannot take are refused."""
        size = tuple(image_size or DEFAULT_IMAGE_SIZE)
        strides = feature_layers(backbone)[2]
        deepest = max(strides[index] for index, _ in resolve_layers(backbone, layers))
        validate_image_size(size, deepest, size_multiple(deepest, distillation))
        mean, std = input_statistics(backbone)
        return PreProcessor(
            transform=Compose([Resize(size, antialias=True), Normalize(mean=mean, std=std)]),
        )

    def training_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Distil the teacher's features into the student on a batch of normal images (with synthetic anomalies
        for the denoising student and the segmentation head)."""
        del args, kwargs
        self._statistics_stale = True
        images = cast(torch.Tensor, batch.image)
        anomalous, masks = self.synthetic_anomalies(images) if self.synthetic_anomalies else (None, None)
        features = self.model.training_features(images, anomalous)
        losses = self.loss(
            features.teacher, features.student, features.sspcab_pairs, features.segmentation_logits, masks
        )
        self.log_dict(
            {f"train_{name}": value.detach() for name, value in losses.items()},
            on_epoch=True,
            on_step=False,
            prog_bar=True,
            # Anomalib's FieldDescriptor.__get__ types every field Optional; a training batch has its images.
            batch_size=images.shape[0],
            sync_dist=True,
        )
        return {"loss": losses["loss"]}

    def on_fit_start(self) -> None:
        """A fit may bring new training images: store the teacher's normal patches again before evaluating."""
        self._memory_stale = True

    def validation_step(self, batch: Batch, *args: Any, **kwargs: Any) -> STEP_OUTPUT:
        """Anomaly maps and scores for evaluation."""
        del args, kwargs
        predictions = self.model(batch.image)
        return batch.update(**predictions._asdict())

    def on_validation_start(self) -> None:
        """Build the normal memory (and map statistics) for the current student before validating."""
        self._evaluate_rank_zero_student()
        self._refresh_memory()

    def on_test_start(self) -> None:
        """Build the normal memory if training happened since it was built (or it never was)."""
        self._evaluate_rank_zero_student()
        self._refresh_memory()

    def on_predict_start(self) -> None:
        """Build the normal memory if needed and training images are at hand; a loaded checkpoint has it."""
        self._refresh_memory()

    def _evaluate_rank_zero_student(self) -> None:
        """Under DDP, give every process rank 0's student buffers (BatchNorm statistics), the checkpoint's."""
        match_rank_zero(self.model.student.buffers())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint always carries a normal memory built with its own student (and Anomalib's components)."""
        super().on_save_checkpoint(checkpoint)
        if self._refresh_memory(required=False):
            memory_state = {
                key: value
                for key, value in self.state_dict().items()
                if key.startswith(("model.memory.", "model.map_statistics."))
            }
            checkpoint["state_dict"].update(memory_state)

    def _refresh_memory(self, required: bool = True) -> bool:
        """Bring the memory up to date with the training images and the student; True if it was refreshed.

        The teacher's patches are stored when the memory is empty or a fit started since; otherwise, after
        training steps, only the distillation statistics are recomputed (the teacher is frozen).
        """
        rebuild = self._memory_stale or self.model.memory.is_empty
        if self.model.memory_weight == 0 or not (rebuild or self._statistics_stale):
            return False
        datamodule = getattr(self.trainer, "datamodule", None)
        train_data = getattr(datamodule, "train_data", None)
        if train_data is None:
            if required and self.model.memory.is_empty:
                msg = (
                    "KDAnomaly builds its normal memory from the datamodule's training images, and none are available"
                    ": train with a datamodule, load a trained checkpoint, or set memory_weight=0"
                )
                raise RuntimeError(msg)
            return False
        loader = DataLoader(train_data, batch_size=16, collate_fn=train_data.collate_fn)
        # Anomalib types ``pre_processor`` as ``nn.Module | None`` and its ``transform`` as optional; ours has both.
        pre_processor = cast(PreProcessor, self.pre_processor)
        batches = (cast(Transform, pre_processor.transform)(batch.image.to(self.device)) for batch in loader)
        self.model.build_memory(batches, teacher_bank=rebuild)
        self._memory_stale = self._statistics_stale = False
        return True

    # Anomalib's own ExportMixin.to_onnx (which this mirrors) already overrides LightningModule.to_onnx incompatibly.
    def to_onnx(self, export_root: Path | str, *args: Any, **kwargs: Any) -> Path:  # type: ignore[override]
        """Anomalib's ONNX export (also the first step of OpenVINO's); the k-shot memory cannot be traced."""
        if isinstance(self.model.memory, KShotMemory) and self.model.memory_weight > 0:
            msg = "the k-shot memory (memory_kind='prototype') searches faiss inside forward and cannot be exported"
            raise ValueError(msg + " to ONNX/OpenVINO; export with --export_type torch or use the positional memory")
        return super().to_onnx(export_root, *args, **kwargs)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over the student, SSPCAB and segmentation head; the teacher has none that require grad."""
        trainable = [parameter for parameter in self.model.parameters() if parameter.requires_grad]
        return torch.optim.Adam(trainable, lr=self.learning_rate, betas=self.betas, weight_decay=self.weight_decay)

    def configure_callbacks(self) -> list[Callback]:
        """Anomalib's component callbacks, and exact evaluation under DDP (no image scored twice)."""
        # Anomalib's configure_callbacks always returns a list, though typed ``Sequence[Callback] | Callback``.
        return [*cast(Sequence[Callback], super().configure_callbacks()), UnrepeatedEvaluation()]

    @property
    def trainer_arguments(self) -> dict[str, Any]:
        """No gradient clipping and no sanity validation (as Anomalib's STFPM)."""
        return {"gradient_clip_val": 0, "num_sanity_val_steps": 0}

    @property
    def learning_type(self) -> LearningType:
        """Trained on normal images only."""
        return LearningType.ONE_CLASS
