"""Shared fixtures: a small synthetic data set and one KDAnomaly trained on it (reused by several tests)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from anomalib.data import MVTecAD
    from anomalib.engine import Engine

IMAGE_SIZE = 128
CATEGORY = "weave"
# Real DDP on this CPU: two processes that Lightning launches itself, talking over gloo.
DDP_ON_TWO_CPU_PROCESSES = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]


@dataclass
class TrainedRun:
    """A KDAnomaly trained on the synthetic set, with what the tests need to check it."""

    model: torch.nn.Module
    metrics: dict[str, float]
    checkpoint: Path
    teacher_before: dict[str, torch.Tensor]
    test_images: torch.Tensor
    n_train: int


def synthetic_datamodule(root: Path, eval_batch_size: int = 32) -> MVTecAD:
    """An MVTecAD datamodule over the synthetic set under ``root`` (training batch 8, no workers)."""
    from anomalib.data import MVTecAD

    return MVTecAD(root=root, category=CATEGORY, train_batch_size=8, eval_batch_size=eval_batch_size, num_workers=0)


def train_and_test(
    model: torch.nn.Module, datamodule: MVTecAD, run_dir: Path, **budget: int
) -> tuple[Engine, dict[str, float]]:
    """Fit ``model`` on CPU without validation, then test it: the engine and the test metrics."""
    from anomalib.engine import Engine

    engine = Engine(
        accelerator="cpu",
        devices=1,
        default_root_dir=run_dir,
        logger=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        **budget,
    )
    engine.fit(model, datamodule=datamodule)
    return engine, engine.test(model, datamodule=datamodule, verbose=False)[0]


def run_command(*arguments: object) -> str:
    """``kdanomaly <arguments>`` in a new Python process (Lightning's DDP launcher re-runs the command line, so not
    inside pytest); its stdout and stderr together, after checking it succeeded."""
    command = [sys.executable, "-m", "kdanomaly.cli", *map(str, arguments)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = finished.stdout + finished.stderr
    assert finished.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kdanomaly.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(root, CATEGORY, image_size=IMAGE_SIZE, n_train=40, n_test_good=10, n_test_per_defect=5)
    return root


@pytest.fixture(scope="session")
def trained(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    from lightning.pytorch import seed_everything

    from kdanomaly import KDAnomaly

    seed_everything(0)
    datamodule = synthetic_datamodule(synthetic_root)
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor((IMAGE_SIZE, IMAGE_SIZE)), visualizer=False)
    teacher_before = {k: v.clone() for k, v in model.model.teacher.state_dict().items()}
    engine, metrics = train_and_test(model, datamodule, tmp_path_factory.mktemp("run"), max_epochs=8)
    images = torch.stack([datamodule.test_data[i].image for i in range(0, len(datamodule.test_data), 6)])
    checkpoint = Path(engine.trainer.checkpoint_callback.best_model_path)
    return TrainedRun(model.eval(), metrics, checkpoint, teacher_before, images, len(datamodule.train_data))
