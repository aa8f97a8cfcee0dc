"""``kdanomaly fit``: a folder of good images to a ready station (trained, calibrated, exported), resumable."""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kdanomaly.inspection.calibration import Calibration, calibrate, images_needed, store_calibration
from kdanomaly.inspection.inputs import collect_inputs
from kdanomaly.inspection.scoring import ImageFiles

from .record import STATION_FILE, Station, StationError, Version, relative

MIN_TRAINING_IMAGES = 8  # the positional memory and the student need a few images; fewer is refused
# Resumable checkpoints a fit writes, at most one per epoch: each refreshes KDAnomaly's map statistics over every
# training image and writes its memory bank, which costs about as much as an epoch of a few training steps.
CHECKPOINTS_PER_FIT = 20


@dataclass(frozen=True)
class FitOptions:
    """How a station is fitted. ``steps``: optimiser steps of the student (batches of ``batch_size``)."""

    image_size: int = 256
    steps: int = 500
    false_review_rate: float = 0.01
    calibration_fraction: float = 0.2
    seed: int = 0
    batch_size: int = 8
    workers: int = 2
    export: bool = True
    progress: bool = True


def fit_station(inputs: Sequence[str], out: Path, options: FitOptions | None = None) -> Station:
    """Split the good images ``inputs`` (folders, globs, list files, files) into training and calibration images,
    train KDAnomaly, calibrate its threshold, export it, and write the station ``out``.

    A killed fit run again with the same arguments resumes from its last epoch. An error before training starts
    (too few or unreadable images) leaves no folder behind.
    """
    options = options or FitOptions()
    if (out / STATION_FILE).exists():
        raise StationError(f"{out} is already a station: `kdanomaly learn` updates it; fit into a new folder")
    existed = out.exists()
    try:
        split = _split(collect_inputs(inputs), out / "work", options)
    except BaseException:
        if not existed:
            shutil.rmtree(out, ignore_errors=True)
        raise
    checkpoint = _train(split["training"], out / "work", options)
    return _first_version(out, checkpoint, split, options)


def _split(paths: list[Path], work: Path, options: FitOptions) -> dict:
    """The seeded training / calibration split of the readable ``paths`` (kept in ``work/split.json``)."""
    if not 0 < options.calibration_fraction < 1:
        raise ValueError(f"--calibration-fraction must lie in (0, 1), got {options.calibration_fraction}")
    recorded = work / "split.json"
    wanted = sorted(str(path.resolve()) for path in paths)
    if recorded.is_file():
        split = json.loads(recorded.read_text())
        if split["inputs"] != wanted or split["seed"] != options.seed:
            raise StationError(f"{work.parent} holds an unfinished fit of other images: fit into a new folder")
        return split
    readable, skipped = _readable(paths, options)
    needed = images_needed(options.false_review_rate)
    calibration_count = max(math.ceil(options.calibration_fraction * len(readable)), needed)
    if len(readable) - calibration_count < MIN_TRAINING_IMAGES:
        rate = f"{100 * options.false_review_rate:g} %"
        raise StationError(
            f"{len(readable)} readable good images are too few: a false-review rate of {rate} needs {needed} held out"
            f" for calibration, and training at least {MIN_TRAINING_IMAGES} more; give at least"
            f" {needed + MIN_TRAINING_IMAGES} good images (more is better) or a higher --false-review-rate"
        )
    order = np.random.default_rng(options.seed).permutation(len(readable))
    calibration = sorted(readable[i] for i in order[:calibration_count])
    training = sorted(readable[i] for i in order[calibration_count:])
    split = {"inputs": wanted, "seed": options.seed, "training": training, "calibration": calibration,
             "skipped": skipped}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(split, indent=2))
    return split


def _readable(paths: list[Path], options: FitOptions) -> tuple[list[str], list[dict[str, str]]]:
    """Resolved paths of the images ``inspect`` can read, and the others with the reason (each is printed)."""
    files = ImageFiles(paths, (options.image_size, options.image_size))
    readable, skipped = [], []
    with ThreadPoolExecutor(max(options.workers, 1)) as pool:
        loaded = pool.map(files.__getitem__, range(len(files)))
        for item in tqdm(loaded, total=len(files), unit="img", desc="reading", disable=not options.progress):
            if item.error is None:
                readable.append(str(item.path.resolve()))
            else:
                skipped.append({"path": str(item.path), "error": item.error})
                print(f"skipped {item.path}: {item.error}")
    return readable, skipped


def _train(training: list[str], work: Path, options: FitOptions) -> Path:
    """KDAnomaly trained on ``training`` for ``options.steps`` steps; the last checkpoint (resumed if present)."""
    from anomalib.callbacks.checkpoint import ModelCheckpoint
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything
    from torchvision.transforms.v2 import Resize

    from kdanomaly.models import KDAnomaly

    from .checkpoint_io import SameFolderCheckpointIO

    links = work / "train"
    if not links.is_dir():  # Anomalib's Folder reads a directory: link the training images into one
        staging = work / "train.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for index, path in enumerate(training):
            (staging / f"{index:06d}{Path(path).suffix.lower()}").symlink_to(path)
        staging.rename(links)
    size = (options.image_size, options.image_size)
    seed_everything(options.seed, workers=True)
    datamodule = Folder(
        name="station", root=work, normal_dir="train", train_batch_size=options.batch_size,
        num_workers=options.workers, test_split_mode="none", val_split_mode="none",
        train_augmentations=Resize(size, antialias=True), seed=options.seed,
    )  # fmt: skip
    model = KDAnomaly(pre_processor=KDAnomaly.configure_pre_processor(size), visualizer=False)
    checkpoints = work / "checkpoints"
    every = checkpoint_interval(len(training), options)
    engine = Engine(
        max_steps=options.steps, max_epochs=-1, limit_val_batches=0, accelerator="cpu", devices=1,
        default_root_dir=work, logger=False,
        enable_progress_bar=options.progress, plugins=[SameFolderCheckpointIO()],
        callbacks=[ModelCheckpoint(dirpath=checkpoints, filename="model", save_last=True, every_n_epochs=every)],
    )  # fmt: skip
    last = checkpoints / "last.ckpt"
    if last.is_file():
        progress = torch.load(last, map_location="cpu", weights_only=False)
        print(f"resuming the fit after epoch {progress['epoch']} (step {progress['global_step']} of {options.steps})")
    engine.fit(model, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    engine.trainer.save_checkpoint(last)  # the final weights, whether or not the last epoch was a checkpoint's
    return last


def checkpoint_interval(training_images: int, options: FitOptions) -> int:
    """Epochs between a fit's checkpoints: one, or more when a fit has more than CHECKPOINTS_PER_FIT epochs."""
    steps_per_epoch = math.ceil(training_images / options.batch_size)
    return max(1, round(options.steps / CHECKPOINTS_PER_FIT / steps_per_epoch))


def _first_version(out: Path, checkpoint: Path, split: dict, options: FitOptions) -> Station:
    """Calibrate the trained ``checkpoint`` on the held-out images, export it, and write version 1."""
    calibration = held_out_calibration(checkpoint, split["calibration"], options.false_review_rate, options)
    print(calibration.describe())
    version_folder = out / "v1"
    version_folder.mkdir(exist_ok=True)
    calibrated = store_calibration(checkpoint, calibration, version_folder / "model.ckpt")
    model = export_for_inspection(calibrated, version_folder / "export") if options.export else calibrated
    station = Station(
        root=out, image_size=options.image_size, seed=options.seed, false_review_rate=options.false_review_rate,
        training_images=split["training"], calibration_images=split["calibration"], skipped=split["skipped"],
        versions=[Version(1, relative(calibrated, out), relative(model, out), calibration.threshold,
                          created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), false_alarms=[])],
        current=1,
    )  # fmt: skip
    station.save()
    return station


def held_out_calibration(checkpoint: Path, images: list[str], rate: float, options: FitOptions) -> Calibration:
    """The threshold of ``checkpoint`` (scored by PyTorch) for ``rate`` on the station's held-out good ``images``;
    StationError if one of them can no longer be read."""
    from kdanomaly.inspection.run import InspectOptions, normal_scores

    scoring = InspectOptions(batch_size=16, workers=options.workers, progress=options.progress, engine="torch")
    scores, errors = normal_scores(checkpoint, [Path(p) for p in images], scoring)
    if errors:
        raise StationError(f"held-out calibration images are no longer readable: {errors}")
    return calibrate(scores, rate)


def export_for_inspection(checkpoint: Path, folder: Path) -> Path:
    """``checkpoint`` exported for the fastest installed engine (OpenVINO fp32), or itself without OpenVINO."""
    from kdanomaly.engines import export_model
    from kdanomaly.engines.runtime import installed

    if not installed("openvino"):
        return checkpoint
    return export_model(checkpoint, folder)
