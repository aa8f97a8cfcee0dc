"""How well a station names defect types, per KDAnomaly configuration, on synthetic surfaces only.

A station names a region by the teacher's features pooled by the anomaly map inside the region
(:class:`kdanomaly.station.defect_types.TeacherEmbedder`), so the map a configuration draws decides how well
types are told apart. Each configuration trains on the synthetic set's good images (seed 0, ``--steps`` at batch
8), its threshold is calibrated on good images of another seed (``--false-review-rate``), and every test defect
image with a region above it is embedded by its strongest region. For each of ``--draws`` draws, two detected
images per type are enrolled and the others are named (highest mean similarity). No real data is read.

    python -m benchmarks.station_naming --work /tmp/station_naming --out benchmarks/results/station_naming.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import seed_everything

from kdanomaly import KDAnomaly
from kdanomaly.benchmark.evaluation import cpu_engine
from kdanomaly.data import image_files
from kdanomaly.data.synthetic import DEFECT_TYPES, generate_synthetic_dataset
from kdanomaly.engines.graph import load_scoring_graph
from kdanomaly.engines.runtime import TorchEngine
from kdanomaly.inspection.calibration import calibrate
from kdanomaly.inspection.naming import DefectNamer
from kdanomaly.inspection.regions import find_regions
from kdanomaly.inspection.scoring import LoadedImage, model_views, read_images, read_model_views
from kdanomaly.memory import PrototypeMemory
from kdanomaly.station.defect_types import CROP_SIZE, TeacherEmbedder

CATEGORY = "weave"
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "forward student": {  # the defaults before the validation choice
        "denoising": False,
        "segmentation": False,
        "student_pretrained": False,
        "learning_rate": 1e-2,
        "memory_weight": 0.7,
        "fusion_statistics": "pixels",
    },
    "validation-chosen (default)": {
        "denoising": True,
        "segmentation": True,
        "student_pretrained": True,
        "learning_rate": 1e-3,
        "memory_weight": 0.5,
        "fusion_statistics": "image_max",
    },
}
ENROLLED_PER_TYPE = 2
# How the teacher's features are pooled over a region crop: weighted by the map, or that minus the crop's
# background (weighted by the map's complement), so the surface's own texture cancels out.
EMBEDDINGS = {"map-weighted": False, "minus background": True}


def trained_checkpoint(configuration: str, root: Path, size: int, steps: int, work: Path) -> Path:
    """``configuration`` trained on ``root``'s good images; its checkpoint (memory built), kept in ``work`` and
    reused by a rerun."""
    from anomalib.data import MVTecAD

    checkpoint = work / "model.ckpt"
    if checkpoint.is_file():
        return checkpoint

    seed_everything(0, workers=True)
    model = KDAnomaly(
        pre_processor=KDAnomaly.configure_pre_processor((size, size)), visualizer=False,
        **CONFIGURATIONS[configuration],
    )  # fmt: skip
    datamodule = MVTecAD(root=root, category=CATEGORY, train_batch_size=8, eval_batch_size=16, num_workers=0)
    engine = cpu_engine(work, max_steps=steps, max_epochs=-1, limit_val_batches=0)
    engine.fit(model, datamodule=datamodule)
    engine.trainer.save_checkpoint(checkpoint)
    return checkpoint


def strongest_regions(
    checkpoint: Path, defect_paths: list[Path], calibration_paths: list[Path], size: int, rate: float
) -> tuple[list[tuple[LoadedImage, np.ndarray, tuple[int, int, int, int]]], int]:
    """Each defect image with a region above the calibrated threshold, its map and its strongest region's box;
    and how many defect images had no region."""
    graph, image_size = load_scoring_graph(checkpoint)
    engine = TorchEngine(graph, image_size, batch_size=16)
    scores, _ = engine(read_model_views(calibration_paths, (size, size)))
    threshold = calibrate(scores, rate).threshold
    loaded = read_images(defect_paths, (size, size))
    _, maps = engine(model_views(loaded))
    found = []
    for item, anomaly_map in zip(loaded, maps, strict=True):
        regions = find_regions(anomaly_map, threshold, item.size)
        if regions:
            found.append((item, anomaly_map, regions[0].box))
    return found, len(loaded) - len(found)


def region_embeddings(
    checkpoint: Path, found: list[tuple[LoadedImage, np.ndarray, tuple[int, int, int, int]]], background_contrast: bool
) -> tuple[np.ndarray, list[str]]:
    """Embeddings of the ``found`` regions as a station makes them, and their true types."""
    embedder = TeacherEmbedder(checkpoint, background_contrast)
    namer = DefectNamer(embedder, PrototypeMemory(embedder.embedding_dim), CROP_SIZE)
    embeddings = []
    for item, anomaly_map, box in found:
        assert item.display is not None
        embeddings.append(namer.embed(item.display, item.size, [box], anomaly_map).numpy())
    return np.concatenate(embeddings), [item.path.parent.name for item, _, _ in found]


def naming_accuracy(embeddings: np.ndarray, kinds: list[str], draws: int) -> list[float]:
    """Per draw: the share of non-enrolled images named right, ``ENROLLED_PER_TYPE`` per type enrolled."""
    labels = np.array(kinds)
    accuracies = []
    for draw in range(draws):
        generator = np.random.default_rng(draw)
        per_type = [np.flatnonzero(labels == kind) for kind in DEFECT_TYPES]
        enrolled = np.concatenate([generator.choice(rows, ENROLLED_PER_TYPE, replace=False) for rows in per_type])
        named = np.setdiff1d(np.arange(len(labels)), enrolled)
        memory = PrototypeMemory(embeddings.shape[1])
        memory.add(embeddings[enrolled], labels[enrolled].tolist())
        predicted = np.array(memory.predict(embeddings[named]).labels)
        accuracies.append(float((predicted == labels[named]).mean()))
    return accuracies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (synthetic sets, checkpoints)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--train-images", type=int, default=40)
    parser.add_argument("--per-defect", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--false-review-rate", type=float, default=0.1)
    parser.add_argument("--draws", type=int, default=20)
    args = parser.parse_args()

    size = args.image_size
    root = args.work / "synthetic"
    generate_synthetic_dataset(root, CATEGORY, size, args.train_images, 10, args.per_defect)
    held_out = generate_synthetic_dataset(args.work / "held_out", CATEGORY, size, 40, 1, 1, seed=1)
    calibration = image_files(held_out / "train" / "good")
    defects = [path for kind in DEFECT_TYPES for path in image_files(root / CATEGORY / "test" / kind)]
    rows = []
    for configuration in CONFIGURATIONS:
        work = args.work / configuration.replace(" ", "_")
        checkpoint = trained_checkpoint(configuration, root, size, args.steps, work)
        found, missed = strongest_regions(checkpoint, defects, calibration, size, args.false_review_rate)
        for embedding, contrast in EMBEDDINGS.items():
            embeddings, kinds = region_embeddings(checkpoint, found, contrast)
            accuracies = naming_accuracy(embeddings, kinds, args.draws)
            rows.append({
                "configuration": configuration, "embedding": embedding,
                "named_right_mean": round(float(np.mean(accuracies)), 4),
                "named_right_std": round(float(np.std(accuracies)), 4), "defect_images": len(defects),
                "without_region": missed,
            })  # fmt: skip
            print(rows[-1], flush=True)
    settings = {key: value for key, value in vars(args).items() if key not in ("work", "out")}
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    args.out.write_text(json.dumps({"settings": settings, "machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
