"""KDAnomaly k-shot (``memory_kind="prototype"``) against Anomalib's Patchcore given the same k normal images.

    python -m benchmarks.kshot_normal --out benchmarks/results/kshot_normal.json \
        --datasets mvtec:../shared/datasets/mvtec_ad:bottle magnetic_tile:../shared/datasets/magnetic_tile

For each dataset and k (default 1, 2, 4), ``k`` training images are drawn at random (seeded; the same images for
both models) and the whole test set is scored. Backbone, pre-processing, evaluator and Patchcore's layers are the
leaderboard's (:mod:`kdanomaly.benchmark.contenders`); Patchcore keeps its published 10 % coreset, KDAnomaly trains its
student for ``--steps`` steps on the k images and keeps 10 % of their patches in its PrototypeMemory. The trained
KDAnomaly is scored twice: fused, and on its memory map alone (``memory_weight=1``, row "..., memory only").
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from anomalib.data import AnomalibDataModule
from anomalib.models import Patchcore
from anomalib.models.components import AnomalibModule
from lightning.pytorch import seed_everything
from lightning.pytorch.trainer.states import TrainerFn

from benchmarks.report import run_header
from kdanomaly import KDAnomaly
from kdanomaly.benchmark.contenders import (
    BACKBONE,
    DISTILLED_LAYERS,
    MEMORY_LAYERS,
    NO_VALIDATION_DURING_FIT,
    DatasetSpec,
    common_components,
)
from kdanomaly.benchmark.evaluation import evaluate, fit_and_evaluate


def keep_training_images(datamodule: AnomalibDataModule, count: int, seed: int) -> list[str]:
    """Set the datamodule up and keep ``count`` random training images; their file names."""
    datamodule.setup(TrainerFn.FITTING)
    samples = datamodule.train_data.samples
    if count > len(samples):
        raise ValueError(f"k = {count} but the training set has {len(samples)} images")
    chosen = np.sort(np.random.default_rng(seed).choice(len(samples), count, replace=False))
    datamodule.train_data.samples = samples.iloc[chosen].reset_index(drop=True)
    return [Path(path).name for path in datamodule.train_data.samples.image_path]


CONTENDERS: dict[str, Callable[[], AnomalibModule]] = {
    "KDAnomaly (k-shot)": lambda: KDAnomaly(BACKBONE, DISTILLED_LAYERS, memory_kind="prototype", **common_components()),
    "Patchcore": lambda: Patchcore(
        backbone=BACKBONE, layers=MEMORY_LAYERS, coreset_sampling_ratio=0.1, **common_components()
    ),
}


def run(dataset: DatasetSpec, shots: int, name: str, steps: int, seed: int, work_dir: Path) -> list[dict[str, object]]:
    """Train ``name`` on ``shots`` images of ``dataset`` and score the test set; KDAnomaly also memory-only."""
    seed_everything(seed, workers=True)
    datamodule = dataset.datamodule(seed)
    images = keep_training_images(datamodule, shots, seed)
    model = CONTENDERS[name]()
    budget = {"max_steps": steps, "max_epochs": -1} if isinstance(model, KDAnomaly) else {"max_epochs": 1}
    run = fit_and_evaluate(model, datamodule, work_dir, **budget, **NO_VALIDATION_DURING_FIT)
    common = {
        "dataset": dataset.name,
        "k": shots,
        "train_seconds": round(run.train_seconds, 1),
        "training_images": images,
    }
    rows = [{"model": name, **_aurocs(run.metrics), **common}]
    if isinstance(model, KDAnomaly):  # the same trained model scored on its memory map alone
        model.model.memory_weight = 1.0
        rows.append(
            {"model": f"{name}, memory only", **_aurocs(evaluate(run.engine, model, datamodule, run.outputs)), **common}
        )
    return rows


def _aurocs(metrics: dict[str, float]) -> dict[str, float]:
    return {"image_AUROC": round(metrics["image_AUROC"], 4), "pixel_AUROC": round(metrics["pixel_AUROC"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", type=DatasetSpec.parse, required=True)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=100, help="KDAnomaly's student training steps")
    parser.add_argument("--models", nargs="+", default=list(CONTENDERS), choices=list(CONTENDERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows: list[dict[str, object]] = []
    report = run_header(args, datasets=[dataset.spec for dataset in args.datasets]) | {"rows": rows}
    with tempfile.TemporaryDirectory() as work_dir:
        for dataset in args.datasets:
            for shots in args.shots:
                for name in args.models:
                    new_rows = run(dataset, shots, name, args.steps, args.seed, Path(work_dir))
                    rows.extend(new_rows)
                    args.out.write_text(json.dumps(report, indent=2))  # after every model: a partial run is kept
                    print("\n".join(json.dumps(row) for row in new_rows))


if __name__ == "__main__":
    main()
