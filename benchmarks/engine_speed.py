"""Engines side by side in one process: model-only and whole-``inspect`` images per second, FLOPs, share of peak.

    python -m benchmarks.engine_speed --model results/demo/KDAnomaly/MVTecAD/weave/latest/weights/lightning/model.ckpt \
        --normals results/demo/data/weave/train/good --out benchmarks/results/engine_speed.json

Model only: the first ``--model-images`` of ``--images`` synthetic 256-px images (the embedded texture generator, a
seed the model never saw) already decoded, scored at batch 1 and at each of ``--batches``; the best batch is
reported beside batch 1. Pipeline: ``kdanomaly inspect`` on all the images as PNG files (decoding threads, scoring,
regions, overlays, thumbnails, maps, journal, report) at the engine's best batch, for the engines in ``--pipeline``,
each with the threshold at its own scores' 90th percentile (10 % of the images get regions). int8 is quantized on
``--normals`` (the model's training images) and the same images with pasted defects. Anomalib's Patchcore and
Padim (same backbone, trained on the same normals) run exported to OpenVINO through Anomalib's own export, fp32.
The machine's fp32 peak is cores x GHz x 2 FMA units x 16 lanes x 2 (``--peak-gflops``); bf16 (AVX512_BF16) and
int8 (VNNI) peaks are 2x and 4x that. Results are written after every cell; ``--resume`` keeps finished cells.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.report import run_header
from kdanomaly.data import image_files
from kdanomaly.data.synthetic import generate_synthetic_dataset
from kdanomaly.engines import ManifestError, export_model, open_model
from kdanomaly.engines.export import sampled_images
from kdanomaly.engines.graph import load_scoring_graph
from kdanomaly.engines.runtime import TorchEngine
from kdanomaly.inspection.run import InspectOptions, inspect
from kdanomaly.inspection.scoring import read_model_views

PEAK_FACTOR = {"fp32": 1, "bf16": 2, "int8": 4}  # per-cycle throughput relative to fp32 FMA (AVX512_BF16, VNNI)
REVIEWED = 0.1


def images_per_second(score: Callable[[np.ndarray], Any], images: np.ndarray, batch: int) -> float:
    """Images per second of ``score`` over ``images`` in batches of ``batch`` (one warm-up batch first)."""
    score(images[:batch])
    started = time.perf_counter()
    for start in range(0, len(images) - len(images) % batch or len(images), batch):
        score(images[start : start + batch])
    done = len(images) - len(images) % batch or len(images)
    return done / (time.perf_counter() - started)


def flops_per_image(checkpoint: Path) -> float:
    """FLOPs of one image through the scoring graph (PyTorch's counter: 2 per multiply-add)."""
    graph, size = load_scoring_graph(checkpoint)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        graph(torch.rand(1, 3, *size))
    return float(counter.get_total_flops())


def anomalib_openvino(name: str, normals: Path, image_size: tuple[int, int], scratch: Path) -> Any:
    """Anomalib's ``name`` (Patchcore or Padim, tf_efficientnet_lite0) fitted on ``normals``, exported by Anomalib
    to OpenVINO fp32 (Anomalib's export fixes the batch it traced with)."""
    import openvino
    from anomalib.data import Folder
    from anomalib.engine import Engine

    from kdanomaly.benchmark.contenders import MODELS, PROFILES

    model = MODELS[name](PROFILES["cpu"])  # the leaderboard's Patchcore (10 % coreset) and Padim
    data = Folder(
        name="normals", root=normals, normal_dir=".", train_batch_size=8, num_workers=0, test_split_mode="synthetic"
    )
    engine = Engine(accelerator="cpu", devices=1, max_epochs=1, logger=False, default_root_dir=scratch)
    engine.fit(model, datamodule=data)
    exported = openvino.Core().read_model(str(model.to_openvino(scratch / name, input_size=image_size)))
    return openvino.Core().compile_model(exported, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a KDAnomaly checkpoint at 256 px (make demo's)")
    parser.add_argument("--normals", type=Path, required=True, help="its training images (int8 calibration, peers)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model-images", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 4, 8, 16])
    pipeline = ["torch/fp32", "openvino/fp32", "openvino/bf16", "openvino/int8"]
    parser.add_argument("--pipeline", nargs="+", default=pipeline)
    parser.add_argument("--peak-gflops", type=float, default=166.4, help="2 cores x 2.6 GHz x 32 FLOP/cycle")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = run_header(args) | {"model_only": {}, "pipeline": {}, "peers": {}}
    if args.resume and args.out.exists():
        report = json.loads(args.out.read_text()) | {"settings": report["settings"], "machine": report["machine"]}
    scratch = Path(tempfile.mkdtemp(prefix="engine_speed_"))
    try:
        run(args, report, lambda: args.out.write_text(json.dumps(report, indent=2)), scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report, indent=2))


def run(args: argparse.Namespace, report: dict[str, Any], save: Callable[[], Any], scratch: Path) -> None:
    data = generate_synthetic_dataset(scratch / "data", "weave", 256, n_train=args.images, n_test_good=1,
                                      n_test_per_defect=1, seed=7)  # fmt: skip
    paths = image_files(data / "train" / "good")
    graph, size = load_scoring_graph(args.model)
    images = read_model_views(paths[: args.model_images], size)
    report["flops_per_image"] = report.get("flops_per_image") or flops_per_image(args.model)
    normals = sampled_images(image_files(args.normals), size)
    exports = {
        "openvino/fp32": export_model(args.model, scratch / "fp32"),
        "onnx/fp32": export_model(args.model, scratch / "onnx", "onnx"),
    }
    try:
        exports["openvino/int8"] = export_model(args.model, scratch / "int8", "openvino", "int8", normals)
    except ManifestError as refusal:
        report["int8_refused"] = str(refusal)
    cells = {
        "torch/fp32": (args.model, "torch", "fp32"), "torch-channels-last/fp32": (args.model, "torch", "fp32"),
        "onnx/fp32": (exports["onnx/fp32"], "onnx", "fp32"),
        "openvino/fp32": (exports["openvino/fp32"], "openvino", "fp32"),
        "openvino/bf16": (exports["openvino/fp32"], "openvino", "bf16"),
        "openvino/int8": (exports.get("openvino/int8"), "openvino", "int8"),
    }  # fmt: skip
    for name, (model, engine, precision) in cells.items():
        if name in report["model_only"] or model is None:
            continue
        rates, scores = {}, None
        for batch in [1, *args.batches]:
            if name.startswith("torch-channels-last"):
                scorer: Callable[[np.ndarray], Any] = TorchEngine(graph, size, batch, channels_last=True)
            else:
                scorer = open_model(model, engine, precision, batch_size=batch).engine
            rates[batch] = round(images_per_second(scorer, images, batch), 2)
            scores = scorer(images)[0] if scores is None else scores
        best = max(rates, key=rates.__getitem__)
        peak = args.peak_gflops * PEAK_FACTOR[precision] * 1e9
        report["model_only"][name] = {
            "images_per_second": rates, "best_batch": best,
            "share_of_peak": round(rates[best] * report["flops_per_image"] / peak, 4),
            "threshold_90": float(np.quantile(scores, 1 - REVIEWED)),
        }  # fmt: skip
        save()
    for name in args.pipeline:
        if name in report["pipeline"] or name not in report["model_only"]:
            continue
        model, engine, precision = cells[name]
        best, threshold = report["model_only"][name]["best_batch"], report["model_only"][name]["threshold_90"]
        options = InspectOptions(best, 2, progress=False, engine=engine, precision=precision)
        started = time.perf_counter()
        rows = inspect(paths, model, scratch / f"run_{engine}_{precision}", threshold=threshold, options=options)
        rate = round(len(rows) / (time.perf_counter() - started), 2)
        reviewed = sum(row["decision"] == "review" for row in rows)
        report["pipeline"][name] = {"images_per_second": rate, "batch": best, "reviewed": reviewed}
        save()
    for peer in ("Patchcore", "Padim"):
        if peer in report["peers"]:
            continue
        compiled = anomalib_openvino(peer, args.normals, size, scratch / "peers")
        first = compiled.inputs[0].get_partial_shape()[0]
        batch = first.get_length() if first.is_static else 2  # Patchcore's export fixes 2; Padim's is dynamic
        rate = images_per_second(compiled.create_infer_request().infer, images, batch)
        report["peers"][peer] = {"openvino_fp32_images_per_second": round(rate, 2), "batch": batch}
        save()


if __name__ == "__main__":
    main()
