"""What the ``kdanomaly`` command prints besides its own output: third-party warnings only with ``-v``, and every
log line once (Anomalib's ``configure_logger`` puts a second handler on the root logger, so each line came twice)."""

from __future__ import annotations

import logging
import warnings

VERBOSE_FLAGS = ("-v", "--verbose")
LOG_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
RUN_LOGGERS = ("anomalib", "lightning.pytorch")  # what an Anomalib training run reports, at INFO
QUIET_LOGGERS = ("anomalib.cli.utils.openvino",)  # start-up notes that say nothing about the run


def take_verbose_flag(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without ``-v`` / ``--verbose``, and whether one was there."""
    kept = [arg for arg in argv if arg not in VERBOSE_FLAGS]
    return kept, len(kept) != len(argv)


def configure_output(verbose: bool, run_logs: bool) -> None:
    """One log handler; everything at INFO if ``verbose``, else WARNING but for Anomalib's and Lightning's run logs
    if ``run_logs`` (Anomalib's subcommands); unless ``verbose``, no warnings raised outside kdanomaly and no
    start-up notes.

    Call it before Anomalib, timm or Lightning are imported: their deprecation warnings fire at import time.
    """
    logging.basicConfig(format=LOG_FORMAT, level=logging.INFO if verbose else logging.WARNING, force=True)
    for name in RUN_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose or run_logs else logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore")
        warnings.filterwarnings("default", module=r"kdanomaly(\.|$)")
