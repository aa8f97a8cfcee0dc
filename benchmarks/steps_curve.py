"""KDAnomaly's image AUROC, pixel AUROC and pixel AUPRO against its training steps, on one dataset.

Each budget of ``STEPS_CURVE`` is a leaderboard run of its own (profile ``steps<N>``, the ``cpu`` protocol with
another step budget) in ``--out/steps<N>``, so a killed run resumes at its unfinished budget. Each budget continues
the previous budget's kept checkpoint (weights, Adam state and step count; Adam at a constant learning rate, so
a budget is the earlier run trained on; one that stopped mid-epoch goes on with freshly shuffled batches), and
the curve costs the largest budget's steps once. Every cell also scores the distillation map alone (memory off).
The curve is drawn from the runs' ``results.csv`` files.

    python -m benchmarks.steps_curve --dataset mvtec:../shared/datasets/mvtec_ad:screw \
        --out benchmarks/results/steps_curve
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from kdanomaly.benchmark.results_table import METRIC_NAMES, ResultsTable

MODEL, DISTILLATION_ALONE = "KDAnomaly", "KDAnomaly+SimAM+SSPCAB"  # the cell's two rows (contenders.DISTILLATION_ONLY)


def curve(out: Path) -> pd.DataFrame:
    """One row per finished (budget, model) cell of the runs in ``out``: ``steps``, ``model`` and the metrics.

    Read without importing Anomalib (benchmarks/readme.py renders it)."""
    frames = [
        ResultsTable(results).frame().assign(steps=int(results.parent.name.removeprefix("steps")))
        for results in out.glob("steps*/results.csv")
    ]
    return pd.concat(frames, ignore_index=True).sort_values(["model", "steps"])


def draw(frame: pd.DataFrame, path: Path) -> None:
    """Each metric against steps (log scale), the full model solid and its distillation map alone dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4))
    for metric, colour in zip(METRIC_NAMES, ("C0", "C1", "C2"), strict=True):
        label = metric.replace("_", " ")
        for model, style in ((MODEL, "-"), (DISTILLATION_ALONE, "--")):
            rows = frame[frame.model == model]
            name = label if model == MODEL else f"{label}, distillation alone"
            axes.plot(rows.steps, rows[metric], style, marker="o", color=colour, label=name)
    axes.set_xscale("log")
    budgets = sorted(set(frame.steps))
    axes.set_xticks(budgets, [str(steps) for steps in budgets])
    axes.minorticks_off()
    axes.set_xlabel("optimiser steps (batch 8)")
    axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5), handlelength=3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    from kdanomaly.benchmark.contenders import DISTILLATION_ONLY, STEPS_CURVE, DatasetSpec
    from kdanomaly.benchmark.leaderboard import run_leaderboard

    assert DISTILLATION_ONLY[MODEL] == DISTILLATION_ALONE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=DatasetSpec.parse, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--budgets", type=int, nargs="+", choices=STEPS_CURVE, default=list(STEPS_CURVE),
        help="run only these; each continues the curve's previous budget, which must have run",
    )  # fmt: skip
    args = parser.parse_args(argv)
    previous: Path | None = None
    for steps in STEPS_CURVE:
        profile = f"steps{steps}"
        if steps in args.budgets:
            run_leaderboard([MODEL], [args.dataset], profile, args.seed, args.out / profile, resume_from=previous)
        previous = args.out / profile / "checkpoints" / profile / f"{MODEL}_{args.dataset.name}.ckpt"
    draw(curve(args.out), args.out / "steps_curve.png")


if __name__ == "__main__":
    main()
