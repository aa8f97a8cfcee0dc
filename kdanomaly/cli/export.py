"""``kdanomaly export``: a KDAnomaly checkpoint as the file set ``inspect`` and ``calibrate`` run fastest on.

Anomalib's own export (``--ckpt_path ... --export_type ...``) is still reached through the same word; it writes
Anomalib's normalised-score model for Anomalib's inferencers, without the calibrated raw-score threshold.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

ANOMALIB_EXPORT_OPTIONS = ("--ckpt_path", "--export_type")


def is_anomalib_export(argv: Sequence[str]) -> bool:
    """Whether ``kdanomaly export ...`` was given Anomalib's export options (then Anomalib's CLI runs it)."""
    return any(arg.split("=", 1)[0] in ANOMALIB_EXPORT_OPTIONS for arg in argv)


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly export", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="trained (and calibrated) KDAnomaly checkpoint")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for model.xml/.bin (or model.onnx) + model.json"
    )
    parser.add_argument("--engine", choices=("openvino", "onnx"), default="openvino")
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32")
    parser.add_argument(
        "--calibration-images", nargs="+", default=[], help="int8: good images to quantize on (the training normals)"
    )
    return parser


def export_main(argv: Sequence[str]) -> int:
    args = export_parser().parse_args(argv)
    from kdanomaly.engines import export_model
    from kdanomaly.engines.export import sampled_images
    from kdanomaly.engines.graph import load_scoring_graph
    from kdanomaly.inspection.inputs import collect_inputs

    try:
        graph = load_scoring_graph(args.model)
        good = collect_inputs(args.calibration_images) if args.calibration_images else []
        images = sampled_images(good, graph[1]) if args.precision == "int8" else None
        path = export_model(args.model, args.out, args.engine, args.precision, images, graph)
    except ValueError as error:
        raise SystemExit(f"kdanomaly export: {error}") from error
    print(f"{args.engine} {args.precision} model: {path} (with {args.out / 'model.json'})")
    return 0
