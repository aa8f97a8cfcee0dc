"""Calibrated pre-screening on MVTec AD bottle: false-review rate on held-out good images, every defect kept.

    python -m benchmarks.inspect_bottle --mvtec ../shared/datasets/mvtec_ad --out benchmarks/results/inspect_bottle.json

KDAnomaly (defaults, 256 px) trains on the bottle training images minus ``--held-out`` of them (seeded). Half of
the held-out images calibrate the review threshold for ``--rate`` (``kdanomaly calibrate``'s code); the other half
and the 20 good test images are inspected and the share sent to review is compared with the reported interval.
The defective test images are inspected too, and each one the trained model itself scores above the threshold
(Anomalib's test images through its pre-processor) must be in review.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import seed_everything
from lightning.pytorch.trainer.states import TrainerFn

from benchmarks.report import run_header
from kdanomaly import KDAnomaly
from kdanomaly.benchmark.contenders import NO_VALIDATION_DURING_FIT
from kdanomaly.inspection.calibration import calibrate, store_calibration
from kdanomaly.inspection.outputs import image_key
from kdanomaly.inspection.run import InspectOptions, inspect, normal_scores


def hold_out_training_images(datamodule: MVTecAD, count: int, seed: int) -> list[Path]:
    """Remove ``count`` random training images from ``datamodule`` (set up here); their paths."""
    datamodule.setup(TrainerFn.FITTING)
    samples = datamodule.train_data.samples
    held_out = np.random.default_rng(seed).choice(len(samples), count, replace=False)
    datamodule.train_data.samples = samples.drop(samples.index[held_out]).reset_index(drop=True)
    return [Path(path) for path in samples.image_path.iloc[np.sort(held_out)]]


@torch.no_grad()
def model_scores(model: KDAnomaly, datamodule: MVTecAD) -> dict[str, float]:
    """Raw scores of the test images by the trained model, through Anomalib's dataset and pre-processor."""
    model.eval()
    return {
        image_key(Path(item.image_path)): float(model.model(model.pre_processor.transform(item.image[None])).pred_score)
        for item in datamodule.test_data
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mvtec", type=Path, required=True, help="MVTec AD root (holds bottle/)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--held-out", type=int, default=80, help="training images kept out of training")
    parser.add_argument("--rate", type=float, default=0.1, help="target false-review rate")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    seed_everything(args.seed, workers=True)
    datamodule = MVTecAD(root=args.mvtec, category="bottle", train_batch_size=8, eval_batch_size=16, num_workers=2)
    held_out = hold_out_training_images(datamodule, args.held_out, args.seed)
    calibration_images, measured_images = held_out[: len(held_out) // 2], held_out[len(held_out) // 2 :]
    good_test = sorted((args.mvtec / "bottle" / "test" / "good").glob("*.png"))
    with tempfile.TemporaryDirectory(prefix="inspect_bottle_") as scratch_name:
        scratch = Path(scratch_name)
        model = KDAnomaly()
        engine = Engine(
            max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, default_root_dir=scratch,
            **NO_VALIDATION_DURING_FIT,
        )  # fmt: skip
        engine.fit(model, datamodule=datamodule)
        metrics = engine.test(model, datamodule=datamodule, verbose=False)[0]
        direct = model_scores(model, datamodule)
        options = InspectOptions(progress=False, engine="torch")  # as when the committed result was made
        checkpoint = scratch / "model.ckpt"
        engine.trainer.save_checkpoint(checkpoint)
        scores, _ = normal_scores(checkpoint, calibration_images, options)
        calibration = calibrate(scores, args.rate)
        calibrated = store_calibration(checkpoint, calibration, scratch / "calibrated.ckpt")
        good_rows = inspect([*measured_images, *good_test], calibrated, scratch / "good", options=options)
        defects = sorted(p for p in (args.mvtec / "bottle" / "test").rglob("*.png") if p.parent.name != "good")
        defect_rows = inspect(defects, calibrated, scratch / "defects", options=options)
    reviewed = sum(row["decision"] == "review" for row in good_rows)
    flagged = {row["key"] for row in defect_rows if row["decision"] == "review"}
    above = [key for key in map(image_key, defects) if direct[key] > calibration.threshold]
    rate = reviewed / len(good_rows)
    report = run_header(args) | {
        "training_images": len(datamodule.train_data.samples),
        "image_AUROC": round(metrics["image_AUROC"], 4), "pixel_AUROC": round(metrics["pixel_AUROC"], 4),
        "calibration": calibration.describe(), "threshold": calibration.threshold,
        "interval": list(calibration.interval), "expected_rate": calibration.expected_rate,
        "good_images_inspected": len(good_rows), "good_images_reviewed": reviewed,
        "measured_false_review_rate": round(rate, 4),
        "measured_rate_in_interval": calibration.interval[0] <= rate <= calibration.interval[1],
        "defective_images": len(defects), "defective_reviewed": len(flagged),
        "defective_scored_above_threshold_by_the_model": len(above),
        "of_those_missing_from_review": sorted(set(above) - flagged),
        "largest_score_difference_inspect_vs_model": max(
            abs(row["score"] - direct[row["key"]]) for row in defect_rows if row["key"] in direct
        ),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
