"""What lower precision costs: image and pixel AUROC of one model on PyTorch fp32 and OpenVINO fp32, bf16, int8.

    python -m benchmarks.engine_accuracy --out benchmarks/results/engine_accuracy.json \
        --dataset synthetic:results/demo/data/weave:DEMO_CHECKPOINT --dataset bottle:MVTEC/bottle:BOTTLE_CHECKPOINT

Each ``--dataset NAME:ROOT:CHECKPOINT`` is an MVTec-layout folder (``train/good``, ``test/<kind>``,
``ground_truth/<kind>/<name>_mask.png``) and a KDAnomaly checkpoint trained on its ``train/good`` (the demo's,
``make demo``; bottle's by ``python -m benchmarks.kdad_mvtec``, which keeps it under its ``--out`` name). int8 is
quantized on those training images. Images are decoded and resized as ``kdanomaly inspect`` does; masks are
resized to the model's input with nearest-neighbour. Results are written after every cell; finished cells are
kept when the output file exists.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import roc_auc_score

from benchmarks.report import run_header
from kdanomaly.data import image_files
from kdanomaly.engines import export_model, open_model
from kdanomaly.engines.export import sampled_images
from kdanomaly.engines.graph import load_scoring_graph
from kdanomaly.inspection.scoring import read_model_views

ENGINES = {"torch/fp32": ("torch", "fp32"), "openvino/fp32": ("openvino", "fp32"),
           "openvino/bf16": ("openvino", "bf16"), "openvino/int8": ("openvino", "int8")}  # fmt: skip


def test_set(root: Path, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test images ``(N, 3, H, W)``, labels ``(N,)`` (1 = defect) and masks ``(N, H, W)`` of an MVTec-layout root."""
    paths = image_files(root / "test")
    images = read_model_views(paths, size)
    labels = np.array([path.parent.name != "good" for path in paths], dtype=int)
    masks = np.zeros((len(paths), *size), dtype=np.uint8)
    for index, path in enumerate(paths):
        mask = root / "ground_truth" / path.parent.name / f"{path.stem}_mask.png"
        if mask.exists():
            resized = Image.open(mask).convert("L").resize((size[1], size[0]), Image.Resampling.NEAREST)
            masks[index] = np.asarray(resized) > 127
    return images, labels, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="NAME:ROOT:CHECKPOINT")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    report: dict[str, Any] = run_header(args) | {"datasets": {}}
    if args.out.exists():
        report["datasets"] = json.loads(args.out.read_text())["datasets"]
    for spec in args.dataset:
        name, root, checkpoint = spec.split(":")
        cells = report["datasets"].setdefault(name, {})
        _, size = load_scoring_graph(Path(checkpoint))
        images, labels, masks = test_set(Path(root), size)
        with tempfile.TemporaryDirectory(prefix="engine_accuracy_") as scratch:
            normals = sampled_images(image_files(Path(root) / "train" / "good"), size)
            exports = {
                "fp32": export_model(Path(checkpoint), Path(scratch) / "fp32"),
                "int8": export_model(Path(checkpoint), Path(scratch) / "int8", "openvino", "int8", normals),
            }
            for cell, (engine, precision) in ENGINES.items():
                if cell in cells:
                    continue
                model = Path(checkpoint) if engine == "torch" else exports["int8" if precision == "int8" else "fp32"]
                scores, maps = open_model(model, engine, precision, batch_size=8).engine(images)
                cells[cell] = {
                    "image_AUROC": round(float(roc_auc_score(labels, scores)), 4),
                    "pixel_AUROC": round(float(roc_auc_score(masks.ravel(), maps.ravel())), 4),
                    "test_images": len(labels),
                }
                args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
