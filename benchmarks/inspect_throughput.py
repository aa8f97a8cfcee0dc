"""Throughput of ``kdanomaly inspect`` against the model's pure forward-pass rate, same process, one after the other.

    python -m benchmarks.inspect_throughput --out benchmarks/results/inspect_throughput.json \
        --model results/demo/KDAnomaly/MVTecAD/weave/latest/weights/lightning/model.ckpt

``--images`` synthetic 256-px PNGs (the embedded texture generator) are written to a scratch folder. Forward rate:
the same images already decoded and resized in memory, scored in batches of ``--batch-size``. Pipeline rate: the
whole ``inspect`` run on the files (decoding workers, scoring, regions, overlays/thumbnails/maps, journal,
results and report), with the threshold at the scores' 90th percentile so that 10 % of the images get regions.
Overhead = 1 - pipeline rate / forward rate.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.report import run_header
from kdanomaly.data import image_files
from kdanomaly.data.synthetic import generate_synthetic_dataset
from kdanomaly.engines import open_model
from kdanomaly.inspection.run import InspectOptions, inspect
from kdanomaly.inspection.scoring import AnomalyScorer, read_model_views

REVIEWED = 0.1  # share of the images above the benchmark's threshold


def forward_rate(scorer: AnomalyScorer, paths: list[Path], batch_size: int) -> tuple[float, np.ndarray]:
    """Images per second of the model alone on pre-loaded images, and their scores."""
    images = read_model_views(paths, scorer.image_size)
    scorer(images[:batch_size])  # warm-up
    started = time.perf_counter()
    scores = [scorer(images[start : start + batch_size])[0] for start in range(0, len(images), batch_size)]
    return len(images) / (time.perf_counter() - started), np.concatenate(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="a KDAnomaly checkpoint (e.g. make demo's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engine", default="torch", help="PyTorch, as the committed result (engine_speed compares)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="inspect_throughput_"))
    try:
        data = generate_synthetic_dataset(scratch / "data", "weave", 256, n_train=args.images, n_test_good=1,
                                          n_test_per_defect=1)  # fmt: skip
        paths = image_files(data / "train" / "good")
        scorer = AnomalyScorer(open_model(args.model, args.engine, batch_size=args.batch_size).engine)
        forward, scores = forward_rate(scorer, paths, args.batch_size)
        threshold = float(np.quantile(scores, 1 - REVIEWED))
        started = time.perf_counter()
        options = InspectOptions(args.batch_size, args.workers, progress=False, engine=args.engine)
        rows = inspect(paths, args.model, scratch / "run", threshold=threshold, options=options)
        pipeline = len(rows) / (time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = run_header(args) | {
        "images": len(paths), "image_size": list(scorer.image_size),
        "forward_images_per_second": round(forward, 2), "pipeline_images_per_second": round(pipeline, 2),
        "reviewed": sum(row["decision"] == "review" for row in rows),
        "pipeline_overhead": round(1 - pipeline / forward, 3),
    }  # fmt: skip
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
