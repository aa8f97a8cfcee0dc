"""NEU-DET defect detection: mAP@0.5 per class and mean, ablation, parameters and CPU inference time; novel classes
enrolled in the prototype memory.

    python -m benchmarks.detect_neu --root ../shared/datasets/neu_det --out benchmarks/results/detect_neu.json

Supervised: every variant is trained for ``--steps`` steps (batch ``--batch-size``) on k images per class of the
seeded 80 % training split (``--sizes``, ``full`` = all of it) and evaluated on the fixed 20 % test split with
torchmetrics' COCO-style mAP at IoU 0.5; ``--flips`` trains on randomly flipped images. ``--draws`` repeats each cell
with other seeds for the k images and the initial weights (the split stays that of ``--seed``); a draw other than
``--seed`` gets its own cell, ``"30/class, draw 1"``. Novel: the full model trained on the base classes' images,
``--novel-k`` boxed images of each novel class enrolled, AP of the novel classes on the test images that hold only
them. ``--checkpoints`` keeps each trained detector, so a cell can be evaluated again without training.
Results are written after each trained model, with the model's settings and the torch version; ``--resume`` keeps
those already in ``--out`` (same settings; other sizes, variants and protocols may be added) and runs the rest, and
again any whose variant has been redefined since.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything
from torch.utils.data import DataLoader
from torchmetrics.detection import MeanAveragePrecision

from benchmarks.report import continued_report, run_header
from kdanomaly.data.detection import BoxedImage, DetectionDataset, collate, only_classes, per_class, read_neu_det, split
from kdanomaly.memory import PrototypeMemory
from kdanomaly.models.detector import FewShotDetector

VARIANTS = {
    "plain": {"pyramid": "standard", "deformable_blocks": 0, "contrastive_weight": 0.0, "cosine_classifier": False},
    "+deformable": {
        "pyramid": "standard",
        "deformable_blocks": 1,
        "contrastive_weight": 0.0,
        "cosine_classifier": False,
    },
    "+ghost_fpn": {"pyramid": "ghost", "deformable_blocks": 1, "contrastive_weight": 0.0, "cosine_classifier": False},
    "+contrastive (full)": {
        "pyramid": "ghost",
        "deformable_blocks": 1,
        "contrastive_weight": 0.1,
        "cosine_classifier": False,
    },
}
FULL = "+contrastive (full)"
BASE = ["inclusion", "patches", "rolled-in_scale"]
NOVEL = ["crazing", "pitted_surface", "scratches"]


def made_with(cell: dict[str, Any] | None, variant: str) -> bool:
    """Whether a stored result ``cell`` was made with ``variant`` as it is defined now."""
    return cell is not None and cell.get("model") == VARIANTS[variant]


def train(detector: FewShotDetector, records: list[BoxedImage], args: argparse.Namespace) -> float:
    """``args.steps`` optimiser steps on ``records``; the wall time in seconds."""
    dataset = DetectionDataset(records, detector.class_names, args.image_size, flips=args.flips)
    loader = DataLoader(
        dataset, args.batch_size, shuffle=True, drop_last=len(dataset) > args.batch_size, collate_fn=collate
    )
    trainer = Trainer(
        max_steps=args.steps, max_epochs=-1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.fit(detector, loader)
    return time.perf_counter() - started


def trained_or_loaded(
    detector: FewShotDetector, records: list[BoxedImage], args: argparse.Namespace, cell: str
) -> float:
    """Train ``detector`` (:func:`train`), or, with ``--checkpoints``, load the weights an earlier run of this cell
    saved there (saving them after training otherwise); the training wall time in seconds."""
    if args.checkpoints is None:
        return train(detector, records, args)
    path = args.checkpoints / (re.sub(r"[^a-z0-9]+", "_", cell.lower()).strip("_") + ".pt")
    made = {
        "hyper_parameters": dict(detector.hparams),
        "images": [str(r.path) for r in records],
        "steps": args.steps,
        "flips": args.flips,
    }
    if path.exists():
        saved = torch.load(path, weights_only=False)
        if {key: saved[key] for key in made} != made:
            raise SystemExit(f"{path} was trained with other settings or images than {cell!r}; move it away")
        detector.load_state_dict(saved["state_dict"])
        return saved["train_seconds"]
    seconds = train(detector, records, args)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    torch.save(made | {"state_dict": detector.state_dict(), "train_seconds": seconds}, path)
    return seconds


def average_precision(
    detector: FewShotDetector, records: list[BoxedImage], classes: Sequence[str], args: argparse.Namespace,
    memory: PrototypeMemory | None = None,
) -> dict[str, float]:  # fmt: skip
    """mAP@0.5 and AP@0.5 per class of ``classes`` (boxes of other classes are left out of the ground truth)."""
    metric = MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True)
    dataset = DetectionDataset(records, detector.class_names if memory is None else classes, args.image_size)
    names = list(dataset.classes)
    for images, targets in DataLoader(dataset, 8, collate_fn=collate):
        found = detector.detect(list(images), memory, min_score=0.001)
        metric.update(
            [
                {
                    "boxes": d["boxes"],
                    "scores": d["scores"],
                    "labels": torch.tensor([names.index(n) + 1 for n in d["labels"]], dtype=torch.int64),
                }
                for d in found
            ],
            targets,
        )
    result = metric.compute()
    by_class = dict(zip(result["classes"].tolist(), result["map_per_class"].tolist(), strict=True))
    return {"mAP@0.5": round(100 * float(result["map_50"]), 2)} | {
        name: round(100 * by_class.get(names.index(name) + 1, float("nan")), 2) for name in classes
    }


def inference_ms(detector: FewShotDetector, records: list[BoxedImage], args: argparse.Namespace) -> float:
    """Mean milliseconds per image, one image at a time, after two warm-up images."""
    images = [DetectionDataset(records[:12], detector.class_names, args.image_size)[i][0] for i in range(12)]
    for image in images[:2]:
        detector.detect([image])
    started = time.perf_counter()
    for image in images[2:]:
        detector.detect([image])
    return round(1000 * (time.perf_counter() - started) / 10, 1)


def supervised(
    records: list[BoxedImage], test: list[BoxedImage], classes: list[str], args: argparse.Namespace, report: dict
) -> None:
    for size, draw in ((size, draw) for size in args.sizes for draw in args.draws):
        chosen = records if size == "full" else per_class(records, int(size), draw)
        key = (f"{size}/class" if size != "full" else "full") + (f", draw {draw}" if draw != args.seed else "")
        cells = report.setdefault("supervised", {}).setdefault(key, {})
        for name in (name for name in args.variants if not made_with(cells.get(name), name)):
            seed_everything(draw)
            detector = FewShotDetector(classes, image_size=args.image_size, **VARIANTS[name])
            seconds = trained_or_loaded(detector, chosen, args, f"{key}, {name}")
            row = {
                "model": VARIANTS[name], "torch": torch.__version__, "images": len(chosen), "steps": args.steps,
                "train_seconds": round(seconds, 1),
                "parameters": sum(p.numel() for p in detector.parameters()),
                "inference_ms_per_image": inference_ms(detector, test, args),
            } | average_precision(detector, test, classes, args)  # fmt: skip
            cells[name] = row
            print(f"{key} {name}: {row}", flush=True)
            args.out.write_text(json.dumps(report, indent=2))


def novel(records: list[BoxedImage], test: list[BoxedImage], args: argparse.Namespace, report: dict) -> None:
    seed_everything(args.seed)
    detector = FewShotDetector(BASE, image_size=args.image_size, **VARIANTS[FULL])
    base_images = only_classes(records, BASE)
    seconds = train(detector, base_images, args)
    references = per_class(only_classes(records, NOVEL), args.novel_k, args.seed)
    images, targets = collate(list(DetectionDataset(references, NOVEL, args.image_size)))
    memory = detector.enroll(list(images), [t["boxes"] for t in targets], [list(r.labels) for r in references])
    row = {
        "model": VARIANTS[FULL], "torch": torch.__version__, "base_images": len(base_images),
        "train_seconds": round(seconds, 1),
        "references": len(references),
    }  # fmt: skip
    report["novel"] = row | average_precision(detector, only_classes(test, NOVEL), NOVEL, args, memory)
    print(f"novel: {report['novel']}", flush=True)
    args.out.write_text(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="NEU-DET folder (IMAGES/, ANNOTATIONS/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", default=["10", "30", "5", "full"], help="images per class, or full")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--flips", action="store_true", help="train on random left-right and top-bottom flips")
    parser.add_argument("--novel-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split (and of draw --seed)")
    parser.add_argument("--draws", nargs="+", type=int, default=[0], help="seeds of the k images and initial weights")
    parser.add_argument("--protocols", nargs="+", default=["supervised", "novel"], choices=["supervised", "novel"])
    parser.add_argument("--resume", action="store_true", help="keep the results already in --out, run the rest")
    parser.add_argument(
        "--checkpoints", type=Path, help="folder to save each trained detector in, and to load it from when present"
    )
    args = parser.parse_args()
    records, classes = read_neu_det(args.root)
    train_records, test_records = split(records, 0.2, args.seed)
    # Where to keep weights is no setting of the results; no flips is stored as no setting (files made before it).
    report: dict[str, Any] = run_header(args, checkpoints=None, flips=args.flips or None) | {
        "train_images": len(train_records),
        "test_images": len(test_records),
    }
    if args.resume:
        report = continued_report(
            args.out, report, {"sizes": None, "variants": list(VARIANTS), "protocols": None, "draws": None}
        )
    if "supervised" in args.protocols:
        supervised(train_records, test_records, classes, args, report)
    if "novel" in args.protocols and not made_with(report.get("novel"), FULL):
        novel(train_records, test_records, args, report)


if __name__ == "__main__":
    main()
