"""Shared fixtures: a small synthetic data set and one KDAnomaly trained on it (reused by several tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

IMAGE_SIZE = 128
CATEGORY = "weave"


@dataclass
class TrainedRun:
    """A KDAnomaly trained on the synthetic set, with what the tests need to check it."""

    model: torch.nn.Module
    metrics: dict[str, float]
    checkpoint: Path
    teacher_before: dict[str, torch.Tensor]
    test_images: torch.Tensor
    n_train: int


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdanomaly.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, CATEGORY, image_size=IMAGE_SIZE, n_train=40, n_test_good=10, n_test_per_defect=5)
    return root


@pytest.fixture(scope="session")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    from kdanomaly import KDAnomaly

    seed_everything(0)
    datamodule = MVTecAD(root=synthetic_root, category=CATEGORY, train_batch_size=8, eval_batch_size=32, num_workers=0)
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor((IMAGE_SIZE, IMAGE_SIZE)), visualizer=False)
    teacher_before = {k: v.clone() for k, v in model.model.teacher.state_dict().items()}
    engine = Engine(
        max_epochs=8,
        accelerator="cpu",
        devices=1,
        default_root_dir=tmp_path_factory.mktemp("run"),
        logger=False,
        enable_progress_bar=False,
        limit_val_batches=0,
    )
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    images = torch.stack([datamodule.test_data[i].image for i in range(0, len(datamodule.test_data), 6)])
    checkpoint = Path(engine.trainer.checkpoint_callback.best_model_path)
    return TrainedRun(model.eval(), metrics, checkpoint, teacher_before, images, len(datamodule.train_data))
