"""One leaderboard cell: train and test one model on one dataset, in its own process (for a clean peak RSS).

    python -m benchmarks.cell --model KDAnomaly --dataset mvtec:../shared/datasets/mvtec_ad:bottle \
        --profile cpu --json cell.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from anomalib.engine import Engine
from lightning.pytorch import seed_everything

from benchmarks.contenders import BACKBONE, IMAGE_SIZE, MODELS, TRAINABLE, DatasetSpec
from benchmarks.timing import inference_ms_per_image


@dataclass(frozen=True)
class Profile:
    """Training budget: ``cpu`` gives every trainable model the same number of optimiser steps."""

    name: str
    trainable_steps: int | None
    trainable_epochs: int

    def trainer_arguments(self, model: str) -> dict[str, int]:
        """Lightning Trainer arguments for ``model`` under this profile."""
        if model not in TRAINABLE:
            return {"max_epochs": 1}  # memory-bank models: one pass over the training set, as published
        if self.trainable_steps is not None:
            return {"max_steps": self.trainable_steps, "max_epochs": -1}
        return {"max_epochs": self.trainable_epochs}


PROFILES = {
    "cpu": Profile("cpu", trainable_steps=200, trainable_epochs=-1),
    "full": Profile("full", trainable_steps=None, trainable_epochs=100),
    "smoke": Profile("smoke", trainable_steps=2, trainable_epochs=-1),
}


def run_cell(model_name: str, dataset: DatasetSpec, profile: Profile, seed: int, work_dir: Path) -> dict[str, object]:
    """Train, test and time one model on one dataset; return the leaderboard row."""
    seed_everything(seed, workers=True)
    model = MODELS[model_name]()
    datamodule = dataset.datamodule(seed)
    engine = Engine(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=work_dir,
        **profile.trainer_arguments(model_name),
    )
    started = time.perf_counter()
    engine.fit(model, datamodule=datamodule)
    train_seconds = time.perf_counter() - started
    metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
    test_data = datamodule.test_data
    images = torch.stack([test_data[i].image for i in range(0, len(test_data), max(1, len(test_data) // 16))][:16])
    images = torch.nn.functional.interpolate(images, size=IMAGE_SIZE, mode="bilinear")  # one batch, any source size
    return {
        "model": model_name,
        "dataset": dataset.name,
        "profile": profile.name,
        "seed": seed,
        "backbone": BACKBONE,
        "image_AUROC": metrics["image_AUROC"],
        "pixel_AUROC": metrics["pixel_AUROC"],
        "pixel_AUPRO": metrics["pixel_AUPRO"],
        "image_F1": metrics["image_F1Score"],
        "train_seconds": round(train_seconds, 1),
        "ms_per_image_batch1": round(inference_ms_per_image(model, images, batch_size=1), 2),
        "ms_per_image_batch16": round(inference_ms_per_image(model, images, batch_size=16), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": sum(parameter.numel() for parameter in model.model.parameters()),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--dataset", required=True, type=DatasetSpec.parse)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, default=Path("benchmarks/runs"))
    parser.add_argument("--json", type=Path, required=True, help="where to write the row")
    args = parser.parse_args()
    row = run_cell(args.model, args.dataset, PROFILES[args.profile], args.seed, args.work_dir)
    args.json.write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
