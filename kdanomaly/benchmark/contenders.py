"""Models and datasets of the leaderboard, built the same way for every model.

Every model gets the same backbone weights (``tf_efficientnet_lite0``, offline), the same pre-processor
(resize to 256x256, the backbone's own 0.5/0.5 normalisation), the same seed and the same split, and the same
evaluator (image AUROC, pixel AUROC, pixel AUPRO, image F1 at Anomalib's adaptive threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from anomalib.data import AnomalibDataModule, Folder, MVTecAD
from anomalib.metrics import AUPRO, AUROC, Evaluator, F1Score
from anomalib.models import Padim, Stfpm
from anomalib.models.components import AnomalibModule
from anomalib.pre_processing import PreProcessor

from kdanomaly import KDAnomaly
from kdanomaly.benchmark.patchcore import KCenterPatchcore
from kdanomaly.data.magnetic_tile import MagneticTile
from kdanomaly.models.kdad.torch_model import DEFAULT_MEMORY_WEIGHT

BACKBONE = "tf_efficientnet_lite0"
DISTILLED_LAYERS = ["blocks.1", "blocks.2", "blocks.4"]
MEMORY_LAYERS = ["blocks.2", "blocks.4"]
IMAGE_SIZE = (256, 256)

# Models Anomalib has that cannot run here, and why (reported in the table, never faked).
UNAVAILABLE = {
    "ReverseDistillation": "decoder exists only for ResNet backbones, whose ImageNet weights are not available offline",
    "EfficientAd": "needs its pretrained PDN teacher and ImageNette from the hub, not available offline",
}


def evaluator() -> Evaluator:
    """The metrics every cell reports."""
    return Evaluator(
        test_metrics=[
            AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
            F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
            AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_"),
            AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", fpr_limit=0.3),
        ]
    )


class CommonComponents(TypedDict):
    """Keyword arguments of :func:`common_components`."""

    pre_processor: PreProcessor
    evaluator: Evaluator
    visualizer: bool


def common_components() -> CommonComponents:
    """Pre-processor, evaluator and visualizer every model of the leaderboard gets."""
    return {
        "pre_processor": KDAnomaly.configure_pre_processor(image_size=IMAGE_SIZE, backbone=BACKBONE),
        "evaluator": evaluator(),
        "visualizer": False,
    }


# Trainer arguments of every benchmark fit: validation (thresholds, metrics) runs once, after training.
NO_VALIDATION_DURING_FIT = {"check_val_every_n_epoch": 1_000_000, "num_sanity_val_steps": 0}


@dataclass(frozen=True)
class Profile:
    """Compute budget of a run.

    ``cpu``: every trainable model gets the same 300 optimiser steps (batch 8; the budget KDAnomaly's defaults
    were chosen at on validation sets) and Patchcore its published 10 % coreset (through the project's
    k-center sampler, see :mod:`kdanomaly.benchmark.patchcore`). ``steps100`` ... ``steps3000``: the same with
    other step budgets, for the training-steps curve. ``full``: the published recipes (100 epochs for the
    distillation models as in Anomalib's STFPM config), for a GPU. ``smoke``: a 2-step check. Memory-bank models
    (Padim, Patchcore) always make one pass over the training set, as published.
    """

    name: str
    trainable_steps: int | None
    trainable_epochs: int
    coreset_sampling_ratio: float

    def trainer_arguments(self, model: str) -> dict[str, int]:
        """Lightning Trainer arguments for ``model``; validation runs once, after training."""
        if model not in TRAINABLE:
            return {"max_epochs": 1, **NO_VALIDATION_DURING_FIT}
        if self.trainable_steps is not None:
            return {"max_steps": self.trainable_steps, "max_epochs": -1, **NO_VALIDATION_DURING_FIT}
        return {"max_epochs": self.trainable_epochs, **NO_VALIDATION_DURING_FIT}


STEPS_CURVE = (100, 300, 1000, 3000)  # budgets of the training-steps curve (profiles ``steps100`` ...)
PROFILES = {
    "cpu": Profile("cpu", trainable_steps=300, trainable_epochs=-1, coreset_sampling_ratio=0.1),
    **{
        f"steps{n}": Profile(f"steps{n}", trainable_steps=n, trainable_epochs=-1, coreset_sampling_ratio=0.1)
        for n in STEPS_CURVE
    },
    "full": Profile("full", trainable_steps=None, trainable_epochs=100, coreset_sampling_ratio=0.1),
    "smoke": Profile("smoke", trainable_steps=2, trainable_epochs=-1, coreset_sampling_ratio=0.1),
}


def _kdanomaly(simam: bool, sspcab: bool, memory: bool) -> Callable[[Profile], AnomalibModule]:
    """KDAnomaly with its defaults but the ablation switches (``memory=False``: distillation only)."""
    memory_weight = DEFAULT_MEMORY_WEIGHT if memory else 0.0
    return lambda _: KDAnomaly(
        BACKBONE, DISTILLED_LAYERS, use_simam=simam, use_sspcab=sspcab, memory_weight=memory_weight,
        **common_components(),
    )  # fmt: skip


MODELS: dict[str, Callable[[Profile], AnomalibModule]] = {
    "KDAnomaly": _kdanomaly(simam=True, sspcab=True, memory=True),
    "KDAnomaly-plain": _kdanomaly(simam=False, sspcab=False, memory=False),
    "KDAnomaly+SimAM": _kdanomaly(simam=True, sspcab=False, memory=False),
    "KDAnomaly+SSPCAB": _kdanomaly(simam=False, sspcab=True, memory=False),
    "Stfpm": lambda _: Stfpm(backbone=BACKBONE, layers=DISTILLED_LAYERS, **common_components()),
    "Patchcore": lambda profile: KCenterPatchcore(
        backbone=BACKBONE,
        layers=MEMORY_LAYERS,
        coreset_sampling_ratio=profile.coreset_sampling_ratio,
        **common_components(),
    ),
    "Padim": lambda _: Padim(backbone=BACKBONE, layers=DISTILLED_LAYERS, n_features=100, **common_components()),
}
TRAINABLE = {"KDAnomaly", "KDAnomaly-plain", "KDAnomaly+SimAM", "KDAnomaly+SSPCAB", "Stfpm"}
# The KDAnomaly cell also evaluates its trained model without the normal memory, under this name.
DISTILLATION_ONLY = {"KDAnomaly": "KDAnomaly+SimAM+SSPCAB"}
# KDAnomaly's ablation, from plain distillation to the full model (all rows of the same run).
ABLATION = ["KDAnomaly-plain", "KDAnomaly+SimAM", "KDAnomaly+SSPCAB", "KDAnomaly+SimAM+SSPCAB", "KDAnomaly"]


MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip


class _LoaderArguments(TypedDict):
    train_batch_size: int
    eval_batch_size: int
    num_workers: int


@dataclass(frozen=True)
class DatasetSpec:
    """``mvtec:ROOT:CATEGORY``, ``magnetic_tile:ROOT`` or ``folder:ROOT`` (good/ and defect/ [masks/]).

    A folder with a ``train/`` subfolder (a validation set of :mod:`kdanomaly.data.validation_split`) trains on
    ``train/`` and tests on all of ``good/`` and ``defect/``; otherwise Anomalib's ``Folder`` splits ``good/``.

    ``mvtec:ROOT:all`` stands for the 15 MVTec AD categories (see :func:`expand_datasets`).
    """

    kind: str
    root: Path
    category: str

    @classmethod
    def parse(cls, text: str) -> DatasetSpec:
        """Parse the command-line form; ValueError naming the accepted forms otherwise."""
        kind, _, rest = text.partition(":")
        root, _, category = rest.partition(":")
        if kind not in ("mvtec", "magnetic_tile", "folder") or not root or (kind == "mvtec") != bool(category):
            raise ValueError(f"bad dataset {text!r}; use mvtec:ROOT:CATEGORY, magnetic_tile:ROOT or folder:ROOT")
        return cls(kind, Path(root), category or Path(root).name)

    @property
    def spec(self) -> str:
        """The command-line form :meth:`parse` reads."""
        return f"{self.kind}:{self.root}:{self.category}" if self.kind == "mvtec" else f"{self.kind}:{self.root}"

    @property
    def name(self) -> str:
        """Short name for tables: the category (MVTec), ``magnetic_tile`` or the folder's name."""
        return "magnetic_tile" if self.kind == "magnetic_tile" else self.category

    def datamodule(self, seed: int) -> AnomalibDataModule:
        """The Anomalib datamodule, batch 8 for training, 16 for evaluation."""
        loader: _LoaderArguments = {"train_batch_size": 8, "eval_batch_size": 16, "num_workers": 2}
        if self.kind == "mvtec":
            return MVTecAD(root=self.root, category=self.category, seed=seed, **loader)
        if self.kind == "magnetic_tile":
            return MagneticTile(root=self.root, split_seed=seed, seed=seed, **loader)
        masks = self.root / "masks"
        validation_set = (self.root / "train").is_dir()
        return Folder(
            name=self.name,
            root=self.root,
            normal_dir="train" if validation_set else "good",
            normal_test_dir="good" if validation_set else None,
            abnormal_dir="defect",
            mask_dir="masks" if masks.is_dir() else None,
            val_split_mode="same_as_test" if validation_set else "from_test",
            seed=seed,
            **loader,
        )

    def training_images(self, seed: int) -> list[Path]:
        """Paths of the images the datamodule of ``seed`` trains on (the seed matters for the magnetic tiles)."""
        datamodule = self.datamodule(seed)
        datamodule.setup()
        return [Path(path) for path in datamodule.train_data.samples.image_path]


def expand_datasets(specs: list[DatasetSpec]) -> list[DatasetSpec]:
    """Replace each ``mvtec:ROOT:all`` by the 15 MVTec AD categories under ROOT."""
    expanded = []
    for spec in specs:
        if spec.kind == "mvtec" and spec.category == "all":
            expanded += [DatasetSpec("mvtec", spec.root, category) for category in MVTEC_CATEGORIES]
        else:
            expanded.append(spec)
    return expanded
