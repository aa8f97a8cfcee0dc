"""KDAnomaly's design choices, made on validation sets built from training normals only (never a test image).

Each dataset's training normals are split (seed 0, 20 % held out, :mod:`kdanomaly.data.validation_split`); a
configuration trains on the rest for ``--steps`` optimiser steps (batch 8, 256 px, seed 0) and is scored on the
held-out normals and the same images with CutPaste defects, at every memory weight of ``--memory-weights`` (the
trained model is evaluated again with only the fusion weight changed). Rows are appended to ``--out`` as they
finish; finished (configuration, dataset, steps) cells are skipped, so an interrupted run resumes.

    python -m benchmarks.validation_choices --work /tmp/validation --out benchmarks/results/validation_choices.csv \
        --datasets mvtec:../shared/datasets/mvtec_ad:screw magnetic_tile:../shared/datasets/magnetic_tile
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import seed_everything

from kdanomaly import KDAnomaly
from kdanomaly.benchmark.contenders import (
    BACKBONE,
    DISTILLED_LAYERS,
    NO_VALIDATION_DURING_FIT,
    DatasetSpec,
    common_components,
)
from kdanomaly.benchmark.evaluation import evaluate, fit_and_evaluate
from kdanomaly.data.validation_split import SPLIT_FILE, write_validation_set

CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "forward": {},
    "denoising": {"denoising": True},
    "denoising+segmentation": {"denoising": True, "segmentation": True},
}
FIELDS = ["configuration", "dataset", "steps", "memory_weight", "image_AUROC", "pixel_AUROC", "pixel_AUPRO",
          "train_seconds", "machine"]  # fmt: skip


def validation_set(spec: DatasetSpec, work: Path) -> DatasetSpec:
    """The validation set of ``spec``'s training normals (seed 0), written under ``work`` once."""
    root = work / spec.name
    if not (root / SPLIT_FILE).is_file():
        write_validation_set(spec.training_images(seed=0), root)
    return DatasetSpec("folder", root, spec.name)


def run(configuration: str, spec: DatasetSpec, steps: int, memory_weights: list[float]) -> list[dict[str, Any]]:
    """Train one configuration on one validation set and score it at every memory weight."""
    seed_everything(0, workers=True)
    model = KDAnomaly(
        BACKBONE, DISTILLED_LAYERS, memory_weight=0.5, **CONFIGURATIONS[configuration], **common_components()
    )
    datamodule = spec.datamodule(seed=0)
    with tempfile.TemporaryDirectory() as scratch:
        fitted = fit_and_evaluate(
            model, datamodule, Path(scratch), max_steps=steps, max_epochs=-1, **NO_VALIDATION_DURING_FIT
        )
        rows = []
        for weight in memory_weights:
            model.model.memory_weight = weight
            metrics = evaluate(fitted.engine, model, datamodule, fitted.outputs)
            rows.append({
                "configuration": configuration, "dataset": spec.name, "steps": steps, "memory_weight": weight,
                **{key: round(float(metrics[key]), 4) for key in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")},
                "train_seconds": round(fitted.train_seconds, 1),
                "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", type=DatasetSpec.parse, required=True)
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--memory-weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the validation sets")
    parser.add_argument("--out", type=Path, required=True, help="CSV the rows are appended to")
    args = parser.parse_args()
    done = set()
    if args.out.is_file():
        with args.out.open() as file:
            done = {(row["configuration"], row["dataset"], int(row["steps"])) for row in csv.DictReader(file)}
    for spec in args.datasets:
        validation = validation_set(spec, args.work)
        for configuration in args.configurations:
            if (configuration, spec.name, args.steps) in done:
                continue
            rows = run(configuration, validation, args.steps, args.memory_weights)
            new_file = not args.out.is_file()
            with args.out.open("a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=FIELDS)
                if new_file:
                    writer.writeheader()
                writer.writerows(rows)
            print(rows, flush=True)


if __name__ == "__main__":
    main()
