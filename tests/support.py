"""Helpers the tests share: the synthetic data set's settings, training on CPU, the `kdanomaly` command.

Import them as ``from tests.support import ...``; the fixtures stay in the conftest.py files.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

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
    from kdanomaly.benchmark.evaluation import cpu_engine

    engine = cpu_engine(run_dir, limit_val_batches=0, **budget)
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
