"""KDAnomaly's design choices, made on validation sets built from training normals only (never a test image).

Each dataset's training normals are split (seed 0, 20 % held out, :mod:`kdanomaly.data.validation_split`); a
configuration trains on the rest for ``--steps`` optimiser steps (batch 8, 256 px, seed 0) and is scored on the
held-out normals and the same images with synthetic defects (``--defects``: blended, the first stages; or warped,
named ``DATASET-warp``), at every memory weight of ``--memory-weights``, every standardisation of
``--fusion-statistics`` and every memory of ``--memories`` (positional ``WINDOWxSIZE``, or ``global:PERCENT``, the
k-shot memory over all positions); the trained model is evaluated again with only the fusion or the memory changed.
Rows are appended to ``--out`` as they finish; finished (configuration, dataset, steps, statistics, memory) cells
are skipped, so an interrupted run resumes.

The rule, fixed before the rows were seen (:func:`choose`): the student-teacher design is the configuration with
the best mean of image AUROC, pixel AUROC and pixel AUPRO of its distillation map alone (memory weight 0),
averaged over the datasets; the fusion (memory weight, standardisation and memory) is then the one with the best
such mean for that configuration.

    python -m benchmarks.validation_choices --work /tmp/validation --out benchmarks/results/validation_choices.csv \
        --datasets mvtec:../shared/datasets/mvtec_ad:screw magnetic_tile:../shared/datasets/magnetic_tile
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

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
from kdanomaly.data.validation_split import DEFECT_FAMILIES, SPLIT_FILE, write_validation_set
from kdanomaly.models.kdad.kshot_memory import KShotMemory
from kdanomaly.models.kdad.positional_memory import PositionalMemory


def _design(distillation: str, denoising: bool, segmentation: bool, pretrained: bool, lr: float) -> dict[str, Any]:
    """Every switch of a configuration spelled out, so it stays what its name says when KDAnomaly's defaults change;
    a reverse student gets RD4AD's published Adam betas (0.5, 0.999), a forward one Adam's usual ones."""
    betas = (0.5, 0.999) if distillation == "reverse" else (0.9, 0.999)
    return {"distillation": distillation, "denoising": denoising, "segmentation": segmentation,
            "student_pretrained": pretrained, "learning_rate": lr, "betas": betas}  # fmt: skip


CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "forward": _design("forward", denoising=False, segmentation=False, pretrained=False, lr=1e-2),
    "denoising": _design("forward", denoising=True, segmentation=False, pretrained=False, lr=1e-2),
    "denoising+segmentation": _design("forward", denoising=True, segmentation=True, pretrained=False, lr=1e-2),
    "denoising+segmentation, pretrained student": _design(
        "forward", denoising=True, segmentation=True, pretrained=True, lr=1e-3
    ),
    "reverse": _design("reverse", denoising=False, segmentation=False, pretrained=False, lr=5e-3),
    "reverse, denoising+segmentation": _design("reverse", denoising=True, segmentation=True, pretrained=False, lr=5e-3),
}
METRICS = ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")
FIELDS = ["configuration", "dataset", "steps", "fusion_statistics", "memory_window", "memory_size", "memory_weight",
          *METRICS, "train_seconds", "machine"]  # fmt: skip
Memory = tuple[int, int]  # (window, patches per position) of a positional memory; (0, percent kept) of a global one
GLOBAL = "global:"


def parse_memory(text: str) -> Memory:
    """``"3x128"`` -> ``(3, 128)``: a positional memory's window and size; ``"global:10"`` -> ``(0, 10)``: the k-shot
    (global) memory keeping 10 % of all normal patches, every one a candidate for every query patch."""
    try:
        if text.startswith(GLOBAL):
            percent = int(text.removeprefix(GLOBAL))
            if 1 <= percent <= 100:
                return 0, percent
        else:
            window, size = map(int, text.split("x"))
            if window >= 1 and window % 2 == 1 and size >= 1:
                return window, size
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(
        f"expected a memory as WINDOWxSIZE with an odd window (3x128) or global:PERCENT (global:10), got {text!r}"
    )


def build_memory(memory: Memory) -> PositionalMemory | KShotMemory:
    """The memory module a :data:`Memory` stands for."""
    window, size = memory
    return KShotMemory(coreset_ratio=size / 100) if window == 0 else PositionalMemory(window, size)


def validation_set(spec: DatasetSpec, work: Path, defects: str = "blend") -> DatasetSpec:
    """The validation set of ``spec``'s training normals (seed 0) with ``defects`` of that family, written under
    ``work`` once; named like ``spec`` (blended defects, the first stages) or ``screw-warp``."""
    name = spec.name if defects == "blend" else f"{spec.name}-{defects}"
    root = work / name
    if not (root / SPLIT_FILE).is_file():
        write_validation_set(spec.training_images(seed=0), root, defects=defects)
    return DatasetSpec("folder", root, name)


def run(
    configuration: str, spec: DatasetSpec, steps: int, memory_weights: list[float], fusions: list[tuple[str, Memory]]
) -> list[dict[str, Any]]:
    """Train one configuration on one validation set and score it at every memory weight of every (standardisation,
    memory) fusion."""
    seed_everything(0, workers=True)
    model = KDAnomaly(
        BACKBONE, DISTILLED_LAYERS, memory_weight=0.5, **CONFIGURATIONS[configuration], **common_components()
    )
    datamodule = spec.datamodule(seed=0)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    with tempfile.TemporaryDirectory() as scratch:
        fitted = fit_and_evaluate(
            model, datamodule, Path(scratch), max_steps=steps, max_epochs=-1, **NO_VALIDATION_DURING_FIT
        )
        rows = []
        for standardise, (window, size) in fusions:
            model.model.map_statistics.standardise = standardise  # type: ignore[assignment]
            model.model.memory = build_memory((window, size))
            model._memory_stale = True  # the next evaluation with memory rebuilds it and the statistics
            for weight in memory_weights:
                model.model.memory_weight = weight
                metrics = evaluate(fitted.engine, model, datamodule, fitted.outputs)
                rows.append({
                    "configuration": configuration, "dataset": spec.name, "steps": steps,
                    "fusion_statistics": standardise, "memory_window": window, "memory_size": size,
                    "memory_weight": weight,
                    **{key: round(float(metrics[key]), 4) for key in METRICS},
                    "train_seconds": round(fitted.train_seconds, 1), "machine": machine,
                })  # fmt: skip
    return rows


class Choice(NamedTuple):
    """The defaults the validation rows choose."""

    configuration: str
    memory_weight: float
    fusion_statistics: str
    memory: Memory


def choose(rows: list[dict[str, str]]) -> Choice:
    """The choice by the rule of the module docstring, from the CSV's rows."""

    def memory(row: dict[str, str]) -> Memory:
        return int(row["memory_window"]), int(row["memory_size"])

    def score(configuration: str, weight: float, standardise: str | None = None, kept: Memory | None = None) -> float:
        cells = [
            r for r in rows
            if r["configuration"] == configuration and float(r["memory_weight"]) == weight
            and standardise in (None, r["fusion_statistics"]) and kept in (None, memory(r))
        ]  # fmt: skip
        return sum(float(r[m]) for r in cells for m in METRICS) / (len(METRICS) * len(cells))

    configurations = sorted({r["configuration"] for r in rows})
    covered = {c: {r["dataset"] for r in rows if r["configuration"] == c} for c in configurations}
    if len({frozenset(datasets) for datasets in covered.values()}) != 1:
        raise ValueError(f"the configurations were not run on the same datasets: {covered}")
    design = max(configurations, key=lambda configuration: score(configuration, 0.0, None))
    fusions = sorted(
        {(float(r["memory_weight"]), r["fusion_statistics"], memory(r)) for r in rows if r["configuration"] == design}
    )
    weight, standardise, kept = max(fusions, key=lambda fusion: score(design, *fusion))
    return Choice(design, weight, standardise, kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", type=DatasetSpec.parse, required=True)
    parser.add_argument("--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--memory-weights", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--fusion-statistics", nargs="+", default=["pixels", "image_max"])
    parser.add_argument(
        "--memories",
        nargs="+",
        type=parse_memory,
        default=[(1, 128)],
        help="WINDOWxSIZE or global:PERCENT each (the first stage: 1x128)",
    )
    parser.add_argument(
        "--defects", choices=sorted(DEFECT_FAMILIES), default="blend", help="the validation defects' family"
    )
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the validation sets")
    parser.add_argument("--out", type=Path, required=True, help="CSV the rows are appended to")
    args = parser.parse_args()
    done = set()
    if args.out.is_file():
        with args.out.open() as file:
            done = {
                (row["configuration"], row["dataset"], int(row["steps"]), row["fusion_statistics"],
                 (int(row["memory_window"]), int(row["memory_size"])))
                for row in csv.DictReader(file)
            }  # fmt: skip
    for spec in args.datasets:
        validation = validation_set(spec, args.work, args.defects)
        for configuration in args.configurations:
            missing = [
                (standardise, memory)
                for standardise in args.fusion_statistics
                for memory in args.memories
                if (configuration, validation.name, args.steps, standardise, memory) not in done
            ]
            if not missing:
                continue
            rows = run(configuration, validation, args.steps, args.memory_weights, missing)
            new_file = not args.out.is_file()
            with args.out.open("a", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=FIELDS)
                if new_file:
                    writer.writeheader()
                writer.writerows(rows)
            print(rows, flush=True)


if __name__ == "__main__":
    main()
