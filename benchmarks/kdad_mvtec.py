"""Train and test KDAnomaly on one MVTec-layout category; report AUROCs, training s/epoch, inference ms/image.

    python -m benchmarks.kdad_mvtec --root ../shared/datasets/mvtec_ad --category bottle --epochs 20 \
        --out benchmarks/results/kdad_bottle.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from anomalib.data import MVTecAD
from anomalib.engine import Engine
from lightning.pytorch import Callback, seed_everything

from kdanomaly import KDAnomaly
from kdanomaly.benchmark.timing import inference_ms_per_image


class TrainEpochTimer(Callback):
    """Wall time of every training epoch, validation excluded."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: object, pl_module: object) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: object, pl_module: object) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="JSON file for the results")
    args = parser.parse_args()

    seed_everything(args.seed, workers=True)
    datamodule = MVTecAD(root=args.root, category=args.category, train_batch_size=8, eval_batch_size=16, num_workers=2)
    size = (args.image_size, args.image_size)
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor(image_size=size))
    timer = TrainEpochTimer()
    engine = Engine(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=Path(args.out).with_suffix(""),
        logger=False,
        callbacks=[timer],
    )
    engine.fit(model, datamodule=datamodule)
    metrics = engine.test(model, datamodule=datamodule)[0]
    images = torch.stack([datamodule.test_data[i].image for i in range(min(32, len(datamodule.test_data)))])
    result = {
        "category": args.category,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "seed": args.seed,
        "image_AUROC": metrics["image_AUROC"],
        "pixel_AUROC": metrics["pixel_AUROC"],
        "train_seconds_per_epoch": sum(timer.seconds) / len(timer.seconds),
        "inference_ms_per_image_batch1": inference_ms_per_image(model, images, batch_size=1),
        "inference_ms_per_image_batch16": inference_ms_per_image(model, images, batch_size=16),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
