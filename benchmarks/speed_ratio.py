"""Inference time of trained KDAnomaly and its peers side by side: same process, same images, alternating passes.

The leaderboard times each model in its own process at a different moment; this script compares the checkpoints
the ``cpu`` leaderboard run kept (``<its out>/checkpoints/cpu``) under identical conditions, on each of
``--datasets``: KDAnomaly against each of ``--peers`` (default Stfpm, the other student-teacher, and Patchcore at
its 10 % coreset, whose cost grows with its training set).

    python -m benchmarks.speed_ratio --out benchmarks/results/leaderboard/speed_ratio.json \
        --datasets mvtec:../shared/datasets/mpdd:metal_plate mvtec:../shared/datasets/mvtec_ad:bottle \
        magnetic_tile:../shared/datasets/magnetic_tile mvtec:../shared/datasets/mvtec_ad:screw
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from statistics import median

import torch
from anomalib.models import Stfpm
from anomalib.models.components import AnomalibModule
from tqdm import tqdm

from kdanomaly import KDAnomaly
from kdanomaly.benchmark.contenders import (
    BACKBONE,
    DISTILLED_LAYERS,
    IMAGE_SIZE,
    MEMORY_LAYERS,
    PROFILES,
    DatasetSpec,
    common_components,
)
from kdanomaly.benchmark.patchcore import KCenterPatchcore
from kdanomaly.benchmark.timing import inference_ms_per_image, timing_images
from kdanomaly.models.kdad.positional_memory import PositionalMemory

MEMORY_SIZE_KEY, MEMORY_WINDOW_KEY = "KDAnomaly_memory_size", "KDAnomaly_memory_window"
DISTILLATION_KEY = "KDAnomaly_distillation"  # absent from timings of the forward student, before it was a switch


def load(name: str, checkpoint: Path, profile: str) -> AnomalibModule:
    """A kept leaderboard checkpoint with the components and arguments its cell built it with."""
    if name == "KDAnomaly":
        return KDAnomaly.load_from_checkpoint(checkpoint, **common_components())
    if name == "Stfpm":
        return Stfpm.load_from_checkpoint(checkpoint, backbone=BACKBONE, layers=DISTILLED_LAYERS, **common_components())
    if name == "Patchcore":
        ratio = PROFILES[profile].coreset_sampling_ratio
        return KCenterPatchcore.load_from_checkpoint(
            checkpoint, backbone=BACKBONE, layers=MEMORY_LAYERS, coreset_sampling_ratio=ratio, **common_components()
        )
    raise ValueError(f"no side-by-side timing for {name!r}; use Stfpm or Patchcore")


def side_by_side(
    dataset: DatasetSpec, folder: Path, profile: str, peers: list[str], rounds: int
) -> dict[str, float | int | str]:
    """Median ms per image at batch 1 and 16 of KDAnomaly and ``peers`` on ``dataset``, and KDAnomaly's ratios."""
    models = {name: load(name, folder / f"{name}_{dataset.name}.ckpt", profile) for name in ["KDAnomaly", *peers]}
    datamodule = dataset.datamodule(seed=0)
    datamodule.setup()
    images = timing_images(datamodule.test_data, IMAGE_SIZE)  # the images the leaderboard cells time
    timings: dict[str, dict[int, list[float]]] = {name: {1: [], 16: []} for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for batch_size in (1, 16):
                timings[name][batch_size].append(inference_ms_per_image(model, images, batch_size))
    result = {f"{name}_ms_batch{b}": round(median(t), 2) for name, per in timings.items() for b, t in per.items()}
    result[DISTILLATION_KEY] = models["KDAnomaly"].model.distillation
    memory = models["KDAnomaly"].model.memory
    if isinstance(memory, PositionalMemory):  # its cost grows with the patches kept per position
        result[MEMORY_SIZE_KEY], result[MEMORY_WINDOW_KEY] = memory.size, memory.window
    for peer in peers:
        for batch_size in (1, 16):
            ratio = median(timings["KDAnomaly"][batch_size]) / median(timings[peer][batch_size])
            result[f"ratio_{peer}_batch{batch_size}"] = round(ratio, 3)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", type=DatasetSpec.parse, required=True)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--peers", nargs="+", default=["Stfpm", "Patchcore"])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; the median is reported")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    folder = args.out.parent / "checkpoints" / args.profile
    result: dict[str, object] = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads"}
    result["datasets"] = {
        spec.name: side_by_side(spec, folder, args.profile, args.peers, args.rounds)
        for spec in tqdm(args.datasets, desc="side-by-side timing", unit="dataset")
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
