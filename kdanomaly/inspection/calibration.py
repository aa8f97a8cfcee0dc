"""Review threshold from good images only: split-conformal quantile, with the false-review rate's distribution.

With ``n`` held-out normal scores and a target false-review rate ``a``, the threshold is the ``k``-th smallest
score, ``k = ceil((n + 1)(1 - a))``; an image is sent to review when its score is above it. For a new normal image
exchangeable with the held-out ones the false-review probability is then at most ``a`` on average, and, given the
held-out set, it follows ``Beta(n + 1 - k, k)`` (Vovk 2012) — the source of the reported interval.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta

from kdanomaly.files import write_bytes_atomic

CHECKPOINT_KEY = "kdanomaly_calibration"
ROUNDING = 1e-9  # keeps ceil() of an exact integer such as 10 * 0.9 from rounding up
THRESHOLD_BUFFERS = ("post_processor._image_threshold", "post_processor._pixel_threshold")


@dataclass(frozen=True)
class Calibration:
    """A calibrated review threshold (raw anomaly score) and what it promises on normal images."""

    threshold: float
    target_rate: float
    normal_images: int
    expected_rate: float
    interval: tuple[float, float]
    confidence: float

    def describe(self) -> str:
        low, high = self.interval
        return (
            f"threshold {self.threshold:.6g} from {self.normal_images} normal images; expected false-review rate "
            f"{100 * self.expected_rate:.2f} % ({100 * self.confidence:.0f} % interval "
            f"{100 * low:.2f}-{100 * high:.2f} %)"
        )


def images_needed(target_rate: float) -> int:
    """The fewest held-out normal images that can calibrate ``target_rate``: ceil((1 - a) / a)."""
    return math.ceil((1 - target_rate) / target_rate - ROUNDING)


def calibrate(normal_scores: Sequence[float] | np.ndarray, target_rate: float, confidence: float = 0.95) -> Calibration:
    """The conformal threshold for ``target_rate`` from held-out normal images' scores.

    Raises:
        ValueError: a rate or confidence outside (0, 1), non-finite scores, or too few images for the rate.
    """
    if not 0 < target_rate < 1 or not 0 < confidence < 1:
        raise ValueError(f"target rate and confidence must lie in (0, 1), got {target_rate} and {confidence}")
    scores = np.sort(np.asarray(normal_scores, dtype=np.float64).ravel())
    if not np.isfinite(scores).all():
        raise ValueError("normal scores must be finite")
    n = len(scores)
    rank = math.ceil((n + 1) * (1 - target_rate) - ROUNDING)
    if rank > n:
        rate = f"{100 * target_rate:g} %"
        needed = images_needed(target_rate)
        raise ValueError(f"{n} normal images cannot calibrate a {rate} false-review rate; it needs {needed}")
    misses, hits = n + 1 - rank, rank
    low, high = beta.ppf([(1 - confidence) / 2, (1 + confidence) / 2], misses, hits)
    return Calibration(float(scores[rank - 1]), target_rate, n, misses / (n + 1), (float(low), float(high)), confidence)


def read_calibration(checkpoint: dict) -> Calibration | None:
    """The calibration stored in a loaded checkpoint dictionary, if any."""
    stored = checkpoint.get(CHECKPOINT_KEY)
    return None if stored is None else Calibration(**{**stored, "interval": tuple(stored["interval"])})


def checkpoint_calibration(checkpoint_path: str | Path) -> Calibration | None:
    """The calibration stored in the checkpoint file at ``checkpoint_path``, if any."""
    return read_calibration(torch.load(checkpoint_path, map_location="cpu", weights_only=False))


def store_calibration(checkpoint_path: str | Path, calibration: Calibration, out: str | Path | None = None) -> Path:
    """Write ``calibration`` into the checkpoint (its record and Anomalib's image/pixel thresholds) atomically.

    ``out`` (default: the checkpoint itself) is replaced only once the new file is complete on disk.
    """
    checkpoint_path = Path(checkpoint_path)
    out = Path(out) if out is not None else checkpoint_path
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    checkpoint[CHECKPOINT_KEY] = asdict(calibration)
    for buffer in THRESHOLD_BUFFERS:
        if buffer in checkpoint.get("state_dict", {}):
            checkpoint["state_dict"][buffer] = torch.tensor(calibration.threshold)
    stream = io.BytesIO()
    torch.save(checkpoint, stream)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, stream.getvalue())
    return out
