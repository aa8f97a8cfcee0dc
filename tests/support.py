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


def fake_review_run(out: Path, review: int = 4, passed: int = 1, defect_types: list[str] | None = None) -> list[dict]:
    """A run folder as ``kdanomaly inspect`` leaves it, made by hand (no model): ``review`` rows sent to review, then
    ``passed`` passed ones (highest score first), then one unreadable image; each scored row with a small JPEG
    overlay and thumbnail in its own colour; run.json with ``defect_types``. The rows of its results.jsonl."""
    import json

    import numpy as np
    from PIL import Image

    for folder in ("overlays", "thumbnails", "maps"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for index in range(review + passed):
        name = f"part_{index:02d}"
        sent = index < review
        regions = [{"box": [4, 4, 20, 16], "area": 192, "peak": 1.5 - 0.1 * index}] if sent else []
        if sent and index % 2 == 0:
            regions[0] |= {"type": "scratch", "similarity": 0.9}
        suffixes = {"overlay": "jpg", "thumbnail": "jpg", "map": "npy"}
        files = {kind: f"{kind}s/{name}_0123456789.{suffix}" for kind, suffix in suffixes.items()}
        rows.append({
            "rank": index + 1, "key": f"/station/images/{name}.png", "path": f"/station/images/{name}.png",
            "status": "ok", "score": 3.0 - 0.25 * index, "decision": "review" if sent else "pass", "width": 64,
            "height": 48, "regions": regions, **files,
        })  # fmt: skip
        colour = (40 * index % 256, 200 - 30 * index % 200, 100)
        Image.new("RGB", (64, 48), colour).save(out / files["overlay"], quality=90)
        Image.new("RGB", (32, 24), colour).save(out / files["thumbnail"], quality=85)
        np.save(out / files["map"], np.zeros((16, 16), np.float16))
    broken = "/station/images/broken.png"
    rows.append({"rank": len(rows) + 1, "key": broken, "path": broken, "status": "error", "error": "not an image"})
    (out / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    types = defect_types if defect_types is not None else ["dent"]
    settings = {"threshold": 1.0, "max_regions": 20, "defect_types": types}
    (out / "run.json").write_text(json.dumps(settings))
    return rows
