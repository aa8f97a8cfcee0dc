"""One leaderboard cell: train and test one model on one dataset, in its own process (for a clean peak RSS).

Each row costs one evaluation pass over the test images (see :mod:`kdanomaly.benchmark.evaluation`).

    python -m kdanomaly.benchmark.cell --model KDAnomaly --dataset mvtec:../shared/datasets/mvtec_ad:bottle \
        --profile cpu --work-dir scratch --checkpoints checkpoints --json cell.json
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from anomalib.data import AnomalibDataModule
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.pytorch import seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint

from kdanomaly.benchmark.contenders import (
    BACKBONE,
    DISTILLATION_ONLY,
    IMAGE_SIZE,
    MODELS,
    PROFILES,
    DatasetSpec,
    Profile,
)
from kdanomaly.benchmark.evaluation import evaluate, fit_and_evaluate
from kdanomaly.benchmark.timing import inference_ms_per_image, timing_images

if TYPE_CHECKING:
    from kdanomaly import KDAnomaly


def run_cell(
    model_name: str,
    dataset: DatasetSpec,
    profile: Profile,
    seed: int,
    work_dir: Path,
    checkpoints: Path,
    resume_from: Path | None = None,
) -> list[dict[str, object]]:
    """Train, test and time one model on one dataset; return its leaderboard row(s). The trained model is kept as
    ``checkpoints/<profile>/<model>_<dataset>.ckpt`` (for side-by-side timing afterwards).

    The KDAnomaly cell returns a second row: the same trained model evaluated without its normal memory.
    ``resume_from``: a kept checkpoint of a smaller step budget that training continues (its seconds are then
    the continuation's).
    """
    seed_everything(seed, workers=True)
    model = MODELS[model_name](profile)
    datamodule = dataset.datamodule(seed)
    run = fit_and_evaluate(model, datamodule, work_dir, resume_from, **profile.trainer_arguments(model_name))
    common = {"dataset": dataset.name, "profile": profile.name, "seed": seed, "backbone": BACKBONE}
    common |= {
        "train_seconds": round(run.train_seconds, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    _keep_checkpoint(run.engine, checkpoints / profile.name / f"{model_name}_{dataset.name}.ckpt")
    rows = [{"model": model_name, **common, **_measure(model, datamodule, run.metrics)}]
    if model_name in DISTILLATION_ONLY:
        cast("KDAnomaly", model).model.memory_weight = 0.0  # DISTILLATION_ONLY names KDAnomaly cells only
        metrics = evaluate(run.engine, model, datamodule, run.outputs)  # thresholds of the distillation map
        rows.append({"model": DISTILLATION_ONLY[model_name], **common, **_measure(model, datamodule, metrics)})
    return rows


def _keep_checkpoint(engine: Engine, target: Path) -> None:
    """Copy the cell's checkpoint out of its scratch folder (for side-by-side timing of trained models)."""
    # Lightning types checkpoint_callback as the Checkpoint base class; it is the first ModelCheckpoint.
    checkpoint_callback = cast(ModelCheckpoint | None, engine.trainer.checkpoint_callback)
    source = checkpoint_callback.best_model_path if checkpoint_callback else ""
    if source:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def _measure(model: AnomalibModule, datamodule: AnomalibDataModule, metrics: Mapping[str, float]) -> dict[str, object]:
    """Test metrics, inference time per image (batch 1 and 16), peak RSS so far and parameter count."""
    images = timing_images(datamodule.test_data, IMAGE_SIZE)
    return {
        "image_AUROC": metrics["image_AUROC"],
        "pixel_AUROC": metrics["pixel_AUROC"],
        "pixel_AUPRO": metrics["pixel_AUPRO"],
        "image_F1": metrics["image_F1Score"],
        "ms_per_image_batch1": round(inference_ms_per_image(model, images, batch_size=1), 2),
        "ms_per_image_batch16": round(inference_ms_per_image(model, images, batch_size=16), 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "parameters": sum(parameter.numel() for parameter in model.model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=sorted(MODELS))
    parser.add_argument("--dataset", required=True, type=DatasetSpec.parse)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work-dir", type=Path, required=True, help="scratch folder of the training run")
    parser.add_argument("--checkpoints", type=Path, required=True, help="folder that keeps the trained model")
    parser.add_argument("--json", type=Path, required=True, help="where to write the row(s), a JSON list")
    parser.add_argument("--resume-from", type=Path, help="checkpoint of a smaller step budget to continue")
    args = parser.parse_args()
    rows = run_cell(
        args.model, args.dataset, PROFILES[args.profile], args.seed, args.work_dir, args.checkpoints, args.resume_from
    )
    args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
