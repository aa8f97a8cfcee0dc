"""The leaderboard's results: an append-only CSV (one row per finished cell), its Markdown table and chart."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

COLUMNS = [
    "model",
    "dataset",
    "profile",
    "seed",
    "backbone",
    "image_AUROC",
    "pixel_AUROC",
    "pixel_AUPRO",
    "image_F1",
    "train_seconds",
    "ms_per_image_batch1",
    "ms_per_image_batch16",
    "peak_rss_mb",
    "parameters",
    "machine",
]
KEY = ("model", "dataset", "profile", "seed")


class ResultsTable:
    """Rows are appended and fsynced as cells finish, so an interrupted run resumes without losing any."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def rows(self) -> list[dict[str, str]]:
        """Every finished cell's row."""
        if not self.path.exists():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def finished(self) -> set[tuple[str, ...]]:
        """Keys ``(model, dataset, profile, seed)`` of the finished cells."""
        return {tuple(str(row[k]) for k in KEY) for row in self.rows()}

    def append(self, row: dict[str, object]) -> None:
        """Add one finished cell durably; ValueError for a row that lacks a column or repeats a cell."""
        missing = [column for column in COLUMNS if column not in row]
        if missing:
            raise ValueError(f"row lacks columns {missing}")
        if tuple(str(row[k]) for k in KEY) in self.finished():
            raise ValueError(f"cell {[row[k] for k in KEY]} is already in {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size == 0
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            handle.flush()
            os.fsync(handle.fileno())

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame with numeric metric columns."""
        frame = pd.DataFrame(self.rows(), columns=COLUMNS)
        numeric = COLUMNS[5:14]
        frame[numeric] = frame[numeric].apply(pd.to_numeric)
        return frame


METRIC_NAMES = {"image_AUROC": "image", "pixel_AUROC": "pixel", "pixel_AUPRO": "AUPRO"}  # leaderboard columns


def leaderboard(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model: image AUROC, pixel AUROC and pixel AUPRO on each dataset and their means, best mean pixel AUROC
    first."""
    wide = frame.pivot_table(index="model", columns="dataset", values=list(METRIC_NAMES))
    wide = wide.reindex(columns=[(metric, d) for metric in METRIC_NAMES for d in sorted(set(frame.dataset))])
    wide.columns = [f"{dataset} {METRIC_NAMES[metric]}" for metric, dataset in wide.columns]
    for metric, name in METRIC_NAMES.items():
        wide[f"mean {name}"] = frame.groupby("model")[metric].mean()
    return wide.sort_values(["mean pixel", "mean image"], ascending=False)


def to_markdown(frame: pd.DataFrame, ablation: Sequence[str] = (), unavailable: dict[str, str] | None = None) -> str:
    """Leaderboard (ablation variants other than the full model left out), models that could not run,
    the ablation table, and the full per-cell table, as Markdown."""
    variants = list(ablation)[:-1]
    sections = [_markdown(leaderboard(frame[~frame.model.isin(variants)]).reset_index(), "{:.4f}")]
    if unavailable:
        sections.append("\n".join(f"- {model}: not run here, {why}" for model, why in unavailable.items()))
    present = [model for model in ablation if model in set(frame.model)]
    if present:
        board = leaderboard(frame[frame.model.isin(present)]).reindex(present).reset_index()
        sections.append("Ablation (same run):\n\n" + _markdown(board, "{:.4f}"))
    detail = frame.drop(columns=["machine", "backbone"]).sort_values(["dataset", "model"])
    sections.append(_markdown(detail, "{:.4g}"))
    return "\n\n".join(sections)


def _markdown(frame: pd.DataFrame, float_format: str) -> str:
    def cell(value: object) -> str:
        return float_format.format(value) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + " --- |" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def to_png(frame: pd.DataFrame, path: str | Path) -> None:
    """Grouped bars of mean image AUROC, pixel AUROC and pixel AUPRO per model."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    board = leaderboard(frame)[[f"mean {name}" for name in METRIC_NAMES.values()]]
    axes = board.plot.barh(figsize=(8, 0.5 * len(board) + 1.5), xlim=(max(0.0, board.min().min() - 0.05), 1.0))
    axes.set_xlabel("AUROC / AUPRO (mean over datasets)")
    axes.invert_yaxis()
    plt.tight_layout()
    plt.savefig(path, dpi=120)
    plt.close()
