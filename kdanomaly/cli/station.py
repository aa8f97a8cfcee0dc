"""``kdanomaly fit`` (a station from good images) and ``kdanomaly learn`` (a new station version from reviews).

``kdanomaly fit`` with Anomalib's options (``--model``, ``--data``, ``--config``, ...) is Anomalib's own fit.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

ANOMALIB_FIT_OPTIONS = ("--model", "--data", "--config", "-c", "--trainer", "--ckpt_path", "--print_config")


def is_anomalib_fit(argv: Sequence[str]) -> bool:
    """Whether ``kdanomaly fit ...`` was given Anomalib's options (then Anomalib's CLI runs it)."""
    return any(arg.split("=", 1)[0].split(".", 1)[0] in ANOMALIB_FIT_OPTIONS for arg in argv)


def fit_parser() -> argparse.ArgumentParser:
    from kdanomaly.station.fit import FitOptions

    defaults = FitOptions()
    parser = argparse.ArgumentParser(prog="kdanomaly fit", description=__doc__)
    parser.add_argument("good", nargs="+", help="good images: folders (recursive), glob patterns, list files, files")
    parser.add_argument("--out", type=Path, required=True, help="the station folder to write (new)")
    parser.add_argument("--image-size", type=int, default=defaults.image_size, help="side the images are resized to")
    parser.add_argument("--steps", type=int, default=defaults.steps, help="training steps of the student")
    rate, fraction = defaults.false_review_rate, defaults.calibration_fraction
    parser.add_argument("--false-review-rate", type=float, default=rate, help="share of good images sent to review")
    parser.add_argument(
        "--calibration-fraction", type=float, default=fraction,
        help="share of the good images held out to calibrate the threshold (more when the rate needs more)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the split and the training")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="image-decoding workers")
    parser.add_argument("--no-export", action="store_true", help="keep the checkpoint only (inspect with PyTorch)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def fit_main(argv: Sequence[str]) -> int:
    args = fit_parser().parse_args(argv)
    from kdanomaly.station.fit import FitOptions, fit_station

    options = FitOptions(
        args.image_size, args.steps, args.false_review_rate, args.calibration_fraction, args.seed, args.batch_size,
        args.workers, export=not args.no_export, progress=not args.no_progress,
    )  # fmt: skip
    try:
        station = fit_station(args.good, args.out, options)
    except ValueError as error:
        raise SystemExit(f"kdanomaly fit: {error}") from error
    version = station.version()
    print(f"station {args.out}: {len(station.training_images)} training and {len(station.calibration_images)}"
          f" calibration images, {len(station.skipped)} skipped; model {station.path(version.model)}")  # fmt: skip
    print(f"next: kdanomaly inspect IMAGES --station {args.out} --out RUN")
    return 0


def learn_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="kdanomaly learn", description=__doc__)
    parser.add_argument("runs", nargs="*", type=Path, help="reviewed run folders (kdanomaly inspect, kdanomaly review)")
    parser.add_argument("--station", type=Path, required=True, help="the station to update (a new version)")
    parser.add_argument("--undo", action="store_true", help="make the previous version current again")
    args = parser.parse_args(argv)
    from kdanomaly.station.learn import learn, undo

    if args.undo == bool(args.runs):
        parser.error("give reviewed run folders, or --undo alone")
    try:
        version = undo(args.station) if args.undo else learn(args.runs, args.station)
    except ValueError as error:
        raise SystemExit(f"kdanomaly learn: {error}") from error
    print(f"station {args.station}: version {version.number} is current (threshold {version.threshold:.6g})")
    return 0
