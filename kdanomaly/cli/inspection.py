"""``kdanomaly inspect`` (pre-screen images before human review) and ``kdanomaly calibrate`` (its threshold)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path


def _add_batching(parser: argparse.ArgumentParser) -> None:
    from kdanomaly.engines import ENGINES, PRECISIONS

    parser.add_argument("--engine", choices=ENGINES, default="auto", help="auto: the fastest installed (OpenVINO)")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: an export's own, fp32 for a checkpoint")
    parser.add_argument("--threads", type=int, default=0, help="inference threads (0: the engine's choice)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="image-decoding processes (0: in the main process)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def inspect_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly inspect", description=__doc__)
    parser.add_argument("images", nargs="+", help="image files, folders (recursive), glob patterns, list files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="KDAnomaly checkpoint, or its export (.xml/.onnx)")
    source.add_argument("--station", type=Path, help="a station (kdanomaly fit): its current model and defect types")
    parser.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or a run to --resume)")
    parser.add_argument("--threshold", type=float, help="review threshold (default: the calibrated one)")
    parser.add_argument("--memory", type=Path, help="prototype memory of defect types (kdanomaly fewshot enroll)")
    parser.add_argument("--recognizer", type=Path, help="few-shot recognizer checkpoint the memory was enrolled with")
    parser.add_argument("--recognizer-size", type=int, default=128, help="side of the region crops it embeds")
    parser.add_argument("--max-regions", type=int, default=20, help="regions kept per image, strongest first")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    _add_batching(parser)
    return parser


def calibrate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdanomaly calibrate",
        description="Review threshold for a target false-review rate, from good images only.",
    )
    parser.add_argument("--model", type=Path, required=True, help="KDAnomaly checkpoint, or its export (.xml/.onnx)")
    parser.add_argument("--normal", nargs="+", required=True, help="held-out good images (not used in training)")
    parser.add_argument("--false-review-rate", type=float, default=0.01, help="target share of good images reviewed")
    parser.add_argument("--confidence", type=float, default=0.95, help="level of the reported interval")
    parser.add_argument(
        "--out", type=Path, help="write the calibrated checkpoint here (default: update --model; an export's model.json"
        " is updated in place)",
    )  # fmt: skip
    _add_batching(parser)
    return parser


def _options(args: argparse.Namespace):
    from kdanomaly.inspection.run import InspectOptions

    if args.batch_size < 1 or args.workers < 0 or args.threads < 0:
        raise SystemExit(
            f"--batch-size must be >= 1, --workers and --threads >= 0, got {args.batch_size}, {args.workers}, "
            f"{args.threads}"
        )
    extra = {"max_regions": args.max_regions, "recognizer_size": args.recognizer_size} if "max_regions" in args else {}
    engine = {"engine": args.engine, "precision": args.precision, "threads": args.threads}
    return InspectOptions(args.batch_size, args.workers, progress=not args.no_progress, **engine, **extra)


def inspect_main(argv: Sequence[str]) -> int:
    args = inspect_parser().parse_args(argv)
    from kdanomaly.inspection.inputs import collect_inputs
    from kdanomaly.inspection.run import inspect

    try:
        rows = inspect(
            collect_inputs(args.images), args.model, args.out, args.threshold, args.recognizer, args.memory,
            args.resume, _options(args), args.station,
        )  # fmt: skip
    except ValueError as error:
        raise SystemExit(f"kdanomaly inspect: {error}") from error
    if not rows:  # a process of a sharded run other than rank 0
        print("this process's share is done; rank 0 writes the results and the report")
        return 0
    review = sum(row.get("decision") == "review" for row in rows)
    errors = sum(row["status"] != "ok" for row in rows)
    print(f"{len(rows)} images: {review} to review, {len(rows) - review - errors} passed, {errors} unreadable")
    print(f"report: {args.out / 'report.html'}")
    return 0


def calibrate_main(argv: Sequence[str]) -> int:
    args = calibrate_parser().parse_args(argv)
    from dataclasses import asdict

    from kdanomaly.engines.manifest import store_export_calibration
    from kdanomaly.inspection.calibration import calibrate, store_calibration
    from kdanomaly.inspection.inputs import collect_inputs
    from kdanomaly.inspection.run import normal_scores

    exported = args.model.suffix != ".ckpt"
    try:
        if exported and args.out is not None:
            raise ValueError("--out is for checkpoints; an export's model.json is updated in place")
        scores, errors = normal_scores(args.model, collect_inputs(args.normal), _options(args))
        for error in errors:
            print(f"skipped: {error}")
        calibration = calibrate(scores, args.false_review_rate, args.confidence)
    except ValueError as error:
        raise SystemExit(f"kdanomaly calibrate: {error}") from error
    if exported:
        written = store_export_calibration(args.model, calibration)
    else:
        written = store_calibration(args.model, calibration, args.out)
    print(calibration.describe())
    print(json.dumps(asdict(calibration) | {"checkpoint": str(written), "skipped": len(errors)}))
    return 0
