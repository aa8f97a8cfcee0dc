"""benchmarks/README.md and the results table of README.md, rendered from the committed result files.

    python -m benchmarks.readme           # write both from benchmarks/results/
    python -m benchmarks.readme --check   # exit 1 if a committed file differs from what this would write

Every table comes from a file in ``benchmarks/results/``: the NEU-DET tables through
:mod:`benchmarks.detect_neu_table`, the leaderboard through :mod:`kdanomaly.benchmark.results_table`, the rest from
the JSON files. A table therefore cannot disagree with its file; rerun this after a result file changes.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from benchmarks import detect_neu_table
from kdanomaly.benchmark.results_table import METRIC_NAMES, ResultsTable, leaderboard, to_markdown

if TYPE_CHECKING:
    from benchmarks.validation_choices import Choice

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BENCHMARKS_README = REPO / "benchmarks" / "README.md"
TOP_README = REPO / "README.md"
CONTENDERS = REPO / "kdanomaly" / "benchmark" / "contenders.py"
POSITIONAL_MEMORY = REPO / "kdanomaly" / "models" / "kdad" / "positional_memory.py"
LEADERBOARD = "leaderboard"
BEGIN = "<!-- results table: written by `python -m benchmarks.readme` from benchmarks/results/, do not edit -->"
END = "<!-- end of results table -->"
MVTEC = "../shared/datasets/mvtec_ad"
MPDD = "../shared/datasets/mpdd"
MAGNETIC_TILE = "../shared/datasets/magnetic_tile"
NEU = "../shared/datasets/neu_det"
TIMES, MINUS = "\u00d7", "\u2212"
FULL, PLAIN = "+contrastive (full)", "plain"
KSHOT = "KDAnomaly (k-shot)"
EMBEDDINGS = {
    "pretrained": "ImageNet backbone, no training",
    "recognizer/backbone": "recognizer, pooled backbone features (default)",
    "recognizer/projection": "recognizer, 128-d projection",
    "cross_entropy": "cross-entropy baseline, pooled backbone features",
}


@dataclass(frozen=True)
class Section:
    """One ``##`` section of benchmarks/README.md: its title, the result files it renders and its Markdown body."""

    title: str
    files: tuple[str, ...]
    body: str

    @property
    def anchor(self) -> str:
        """The heading's anchor as GitHub makes it."""
        return re.sub(r"[^a-z0-9 _-]", "", self.title.lower()).replace(" ", "-")

    def markdown(self) -> str:
        """The section with its heading and the links to its result files."""
        links = ", ".join(f"[`results/{name}`](results/{name})" for name in self.files)
        return f"## {self.title}\n\nResult files: {links}.\n\n{self.body}\n"


# ------------------------------------------------------------------------------------------------------ helpers


def load(name: str) -> dict[str, Any]:
    """A JSON result file of benchmarks/results/."""
    return json.loads((RESULTS / name).read_text())


def paragraphs(*parts: str) -> str:
    """Markdown blocks separated by blank lines; prose is re-joined onto one line per paragraph."""
    blocks = []
    for part in parts:
        text = part.strip("\n")
        if not text:
            continue
        verbatim = text.startswith(("```", "|", "- "))
        blocks.append(text if verbatim else " ".join(text.split()))
    return "\n\n".join(blocks)


def table(header: Sequence[object], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column, ``r`` for right-aligned (default left)."""
    rule = ["---:" if letter == "r" else "---" for letter in align.ljust(len(header), "l")]
    lines: list[Sequence[object]] = [list(header), rule, *rows]
    return "\n".join("| " + " | ".join(map(str, line)) + " |" for line in lines)


def command(*lines: str) -> str:
    """A bash block of the commands that wrote a file."""
    return "```bash\n" + "\n".join(lines) + "\n```"


def wrapped(first: str, *rest: str) -> list[str]:
    """A command over several lines, all but the first indented."""
    lines = [first, *("    " + line for line in rest)]
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def machine(*files: tuple[str, str]) -> str:
    """The ``machine`` each file records, from ``(file, machine)`` pairs."""
    return "Machine: " + "; ".join(f"`{value}` ({name})" for name, value in files) + "."


def auroc(value: float) -> str:
    return f"{value:.4f}"


def triple(board_row: pd.Series) -> str:
    """Mean image AUROC / pixel AUROC / pixel AUPRO of a leaderboard row."""
    return " / ".join(auroc(board_row[f"mean {name}"]) for name in METRIC_NAMES.values())


def pair(cell: dict[str, float]) -> str:
    """Image / pixel AUROC of a result row."""
    return f"{auroc(cell['image_AUROC'])} / {auroc(cell['pixel_AUROC'])}"


def mean_sd(cell: dict[str, float]) -> str:
    return f"{cell['mean']:.2f} ± {cell['std']:.2f}"


def spaced(number: int) -> str:
    """1000000 as ``1 000 000``."""
    return f"{number:,}".replace(",", " ")


def megabytes(size: int) -> str:
    return spaced(round(size / 1e6))


def signed(value: float) -> str:
    return f"{value:+.4f}"


# -------------------------------------------------------------------------------------------------- leaderboard


def source_literal(name: str, module: Path = CONTENDERS) -> Any:
    """The literal value of ``name`` in ``module`` (kdanomaly/benchmark/contenders.py), read without importing
    Anomalib."""
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(target, ast.Name) and target.id == name for target in targets):
                return ast.literal_eval(node.value)
    raise KeyError(f"{module} assigns no literal {name}")


def earlier_design_note(ratio: dict[str, Any]) -> str:
    """A warning when the side-by-side timing ran another KDAnomaly than its defaults (student or memory), else ''.

    Timings from before the window was recorded count as window 1, the only window there was; timings from before
    the student was recorded are of the forward student."""
    from benchmarks.speed_ratio import DISTILLATION_KEY, MEMORY_SIZE_KEY, MEMORY_WINDOW_KEY
    from kdanomaly.models.kdad.lightning_model import DEFAULT_DISTILLATION

    window, size = default_memory()
    timed = sorted(
        {
            (cell.get(DISTILLATION_KEY, "forward"), cell.get(MEMORY_WINDOW_KEY, 1), cell[MEMORY_SIZE_KEY])
            for cell in ratio["datasets"].values()
        }
    )
    if timed == [(DEFAULT_DISTILLATION, window, size)]:
        return ""
    designs = " / ".join(f"{d} student, {w}{TIMES}{w} window, {s} patches per position" for d, w, s in timed)
    return f"""These timings are of a KDAnomaly with a {designs}, not its current default (a {DEFAULT_DISTILLATION}
        student, a {window}{TIMES}{window} window, {size} patches per position): they were measured before
        KDAnomaly's leaderboard cells were re-run with the current default, and that re-run made no Patchcore
        checkpoints to time beside it. The per-cell ms columns of the leaderboard are of the current default, each
        cell timed in its own process."""


def default_memory() -> tuple[int, int]:
    """KDAnomaly's default positional memory, (window, patches per position), read without importing it."""
    return source_literal("DEFAULT_MEMORY_WINDOW", POSITIONAL_MEMORY), source_literal(
        "DEFAULT_MEMORY_SIZE", POSITIONAL_MEMORY
    )


def contenders_constants() -> tuple[list[str], dict[str, str]]:
    """``ABLATION`` and ``UNAVAILABLE`` of kdanomaly/benchmark/contenders.py."""
    return source_literal("ABLATION"), source_literal("UNAVAILABLE")


def leaderboard_frame() -> pd.DataFrame:
    """The leaderboard's cells (results.csv)."""
    return ResultsTable(RESULTS / LEADERBOARD / "results.csv").frame()


def leaderboard_markdown() -> str:
    """leaderboard.md as results_table renders it from results.csv; SystemExit if the committed file differs."""
    ablation, unavailable = contenders_constants()
    markdown = to_markdown(leaderboard_frame(), ablation, unavailable)
    if markdown != (RESULTS / LEADERBOARD / "leaderboard.md").read_text().rstrip("\n"):
        raise SystemExit(f"results/{LEADERBOARD}/leaderboard.md is not what results_table makes of results.csv")
    return markdown


def ablation_gains() -> tuple[str, ...]:
    """Each ablation variant's image / pixel AUROC minus plain distillation's, on the datasets plain has run on:
    the Markdown blocks of the explanation and the table."""
    ablation, _ = contenders_constants()
    frame = leaderboard_frame()
    plain = frame[frame.model == ablation[0]].set_index("dataset")
    if plain.empty:
        trainings = ", ".join(f"`{model}`" for model in ablation[:-2])
        return (f"The ablation trainings ({trainings}) are not in `results.csv` yet.",)
    datasets = sorted(plain.index)
    rows = []
    for model in ablation[1:]:
        cells = frame[frame.model == model].set_index("dataset")
        gains = [
            f"{signed(cells.loc[d, 'image_AUROC'] - plain.loc[d, 'image_AUROC'])} / "
            f"{signed(cells.loc[d, 'pixel_AUROC'] - plain.loc[d, 'pixel_AUROC'])}"
            if d in cells.index
            else "not run yet"
            for d in datasets
        ]
        rows.append([model, *gains])
    intro = """The ablation as differences to plain distillation (`KDAnomaly-plain`), image / pixel AUROC. One seed:
        differences of a few thousandths are within noise."""
    return intro, table(["model", *(f"{d}, image / pixel" for d in datasets)], rows, "l" + "r" * len(datasets))


VALIDATION_TITLE = "KDAnomaly's defaults, chosen on validation sets"
VALIDATION_LINK = f"[{VALIDATION_TITLE}](#{Section(VALIDATION_TITLE, (), '').anchor})"
VALIDATION_DATASETS = f"mvtec:{MVTEC}:screw magnetic_tile:{MAGNETIC_TILE}"
LEADERBOARD_DATASETS = (f"mvtec:{MPDD}:metal_plate", f"mvtec:{MVTEC}:bottle", f"magnetic_tile:{MAGNETIC_TILE}",
                        f"mvtec:{MVTEC}:screw")  # fmt: skip


def speed_rows(ratio: dict[str, Any]) -> list[list[object]]:
    """Per dataset and peer: ms per image of KDAnomaly and the peer at batch 1 / 16 and their ratios."""
    rows: list[list[object]] = []
    for dataset, cell in ratio["datasets"].items():
        for peer in sorted({key.split("_")[1] for key in cell if key.startswith("ratio_")}):
            ours = " / ".join(f"{cell[f'KDAnomaly_ms_batch{b}']:.1f}" for b in (1, 16))
            theirs = " / ".join(f"{cell[f'{peer}_ms_batch{b}']:.1f}" for b in (1, 16))
            ratios = " / ".join(f"{cell[f'ratio_{peer}_batch{b}']:.2f}" for b in (1, 16))
            rows.append([dataset, peer, ours, theirs, ratios])
    return rows


def leaderboard_section() -> Section:
    frame = leaderboard_frame()
    ratio = load(f"{LEADERBOARD}/speed_ratio.json")
    wall = load(f"{LEADERBOARD}/wall_time.json")
    window, size = default_memory()
    runs = "; ".join(
        f"{run['hours']:.1f} h for {run['cells']} cells of {', '.join(run['models'])}"
        + (f" ({run['why']})" if "why" in run else "")
        for run in wall["runs"]
    )
    body = paragraphs(
        """Image AUROC, pixel AUROC and pixel AUPRO of KDAnomaly and Anomalib's own Padim, Patchcore and Stfpm on
        four datasets, each (model, dataset) cell trained and evaluated in its own process, then KDAnomaly's
        ablation variants in the same protocol. The per-cell table adds image F1 at Anomalib's adaptive threshold,
        training seconds, inference ms per image at batch 1 and 16, peak RSS in MB and parameters.""",
        command(
            f"kdanomaly benchmark --profile cpu --out benchmarks/results/{LEADERBOARD} \\",
            "    --models KDAnomaly Patchcore Stfpm Padim --datasets \\",
            *(f"    {spec} \\" for spec in LEADERBOARD_DATASETS[:-1]),
            f"    {LEADERBOARD_DATASETS[-1]}",
            "# then the same with --models KDAnomaly-plain KDAnomaly+SimAM KDAnomaly+SSPCAB",
        ),
        f"""Data: MPDD `metal_plate` and MVTec AD `bottle` and `screw` in their own train / test splits; the
        magnetic tiles through `kdanomaly.data.magnetic_tile.MagneticTile` (`MT_Free` permuted with seed 0, half
        for training, the other half and every defect image with its mask for testing). None of them was used to
        choose a default: KDAnomaly's defaults were frozen on validation sets of training normals with synthetic
        defects before KDAnomaly's cells ran ({VALIDATION_LINK}; the student: {REVERSE_LINK}). `folder:ROOT`
        takes your own `good/`, `defect/` and optional
        `masks/`; `mvtec:ROOT:all` expands to the 15 MVTec AD categories. Wall time ({wall["source"]}): {runs}.""",
        f"""Protocol, the same for every model (`cpu` profile of `kdanomaly/benchmark/contenders.py`):
        `tf_efficientnet_lite0` with the same offline ImageNet weights, 256{TIMES}256 input normalised with the
        backbone's 0.5/0.5, seed 0, the same split and the same evaluator. Every trainable model (KDAnomaly, its
        ablation variants, Stfpm) gets the same 300 optimiser steps at batch 8. Patchcore keeps its published
        10 % coreset; Anomalib's Patchcore is used with its index selection replaced by the project's
        `kdanomaly.memory.k_center_greedy` (the same greedy k-center algorithm, faster on this CPU;
        `kdanomaly/benchmark/patchcore.py`). Padim (100 random features) and Patchcore make their one pass over
        the training set. Profile `full` keeps the published recipes (100 epochs), for a machine with a GPU.
        Validation runs once, after training, on the test images (Anomalib's `same_as_test`); its outputs are
        scored with the post-processor and metrics `Engine.test` uses (`kdanomaly/benchmark/evaluation.py`).
        Training seconds are the fit plus the memory fitting before the first validation batch (Padim, Patchcore,
        KDAnomaly's memory), without evaluation.""",
        machine(*((f"{LEADERBOARD}/results.csv", value) for value in sorted(set(frame.machine)))),
        """`leaderboard.md`, as `kdanomaly/benchmark/results_table.py` renders it from `results.csv`: the
        leaderboard, the models that could not run, KDAnomaly's ablation and every cell.
        `KDAnomaly+SimAM+SSPCAB` is the full model's student evaluated without its normal memory (the same training
        as the `KDAnomaly` row): the distillation map (with the segmentation head) alone. The other variants are
        trainings of their own, also without memory.""",
        leaderboard_markdown(),
        f"![Mean image AUROC, pixel AUROC and pixel AUPRO per model](results/{LEADERBOARD}/leaderboard.png)",
        *ablation_gains(),
        "### Inference time, side by side",
        f"""The per-cell timings come from separate processes at different moments. `benchmarks/speed_ratio.py`
        times the checkpoints the run kept side by side: per dataset, same process, the same 16 test images,
        alternating passes, the median of 5 rounds (the peers' checkpoints for the current file came from their
        cells run again with the same command; a model's time does not depend on its trained weights).
        Patchcore's cost grows with its training set (its bank is 10 % of the training patches); KDAnomaly's stops
        growing once its memory holds its {size} candidates per position ({-(-size // window**2)} training images
        with the {window}{TIMES}{window} window). Out of training KDAnomaly holds its convolution weights
        channels-last and runs copies of its networks with BatchNorm folded into the convolutions (its own code,
        `torch_model.py`); the peers run as Anomalib ships them.""",
        command(
            f"python -m benchmarks.speed_ratio --out benchmarks/results/{LEADERBOARD}/speed_ratio.json \\",
            "    --datasets " + " ".join(LEADERBOARD_DATASETS),
        ),
        machine((f"{LEADERBOARD}/speed_ratio.json", ratio["machine"])),
        table(
            ["dataset", "peer", "KDAnomaly ms / image, batch 1 / 16", "peer ms / image", "KDAnomaly / peer"],
            speed_rows(ratio),
            "llrrr",
        ),
        earlier_design_note(ratio),
    )
    names = ("results.csv", "leaderboard.md", "leaderboard.png", "speed_ratio.json", "wall_time.json")
    return Section("Leaderboard: KDAnomaly against Anomalib's models", tuple(f"{LEADERBOARD}/{n}" for n in names), body)


def steps_curve_section() -> Section:
    from benchmarks.steps_curve import DISTILLATION_ALONE, MODEL, curve

    frame = curve(RESULTS / "steps_curve")
    dataset = frame.dataset.iloc[0]
    budgets = sorted(set(frame.steps))
    rows, seconds = [], 0.0
    for steps in budgets:
        cells = frame[frame.steps == steps].set_index("model")
        full, alone = cells.loc[MODEL], cells.loc[DISTILLATION_ALONE]
        metrics = [*(auroc(full[m]) for m in METRIC_NAMES), *(auroc(alone[m]) for m in METRIC_NAMES)]
        seconds += full.train_seconds
        rows.append([steps, *metrics, f"{seconds:.0f}"])
    names = list(METRIC_NAMES.values())
    body = paragraphs(
        f"""Where KDAnomaly's training saturates: the leaderboard's `cpu` protocol with other step budgets (batch 8)
        on MVTec AD `{dataset}`. Each budget is a run of its own that continues the previous budget's checkpoint
        (weights, Adam state, step count; the learning rate is constant), so it is that run trained on (from a
        budget that ended mid-epoch with freshly shuffled batches); the table's training seconds add up the budgets
        so far (each budget's own include fitting its memory). Every cell also scores the full model's student
        alone (memory off), as the leaderboard does. Budgets run so far:
        {", ".join(map(str, budgets))} of {", ".join(map(str, source_literal("STEPS_CURVE")))}; the run resumes at
        the first unfinished one. These budgets measure the design chosen before the reverse student (the forward
        denoising student of {VALIDATION_LINK}); the current default's curve is still to be run, into an empty
        `--out` (a budget continues the previous budget's checkpoint, which must be of the same design).""",
        command(
            *wrapped(
                f"python -m benchmarks.steps_curve --dataset mvtec:{MVTEC}:{dataset}",
                "--out benchmarks/results/steps_curve",
            )
        ),
        machine(*(("steps_curve/steps*/results.csv", value) for value in sorted(set(frame.machine)))),
        table(["steps", *names, *(f"alone: {name}" for name in names), "train s"], rows, "r" * 8),
        "![KDAnomaly's AUROC and AUPRO against training steps](results/steps_curve/steps_curve.png)",
    )
    files = (*(f"steps_curve/steps{steps}/results.csv" for steps in budgets), "steps_curve/steps_curve.png")
    return Section("KDAnomaly against training steps", files, body)


# ---------------------------------------------------------------------------------------------------- KDAnomaly


def read_csv(name: str) -> list[dict[str, str]]:
    """The rows of a CSV result file of benchmarks/results/."""
    import csv

    with (RESULTS / name).open() as file:
        return list(csv.DictReader(file))


def validation_triples(row_cells: list[dict[str, str]]) -> list[str]:
    """Image AUROC / pixel AUROC / AUPRO of each validation row."""
    from benchmarks.validation_choices import METRICS

    return [" / ".join(auroc(float(r[m])) for m in METRICS) for r in row_cells]


def validation_mean(row_cells: list[dict[str, str]]) -> float:
    """The validation rule's score: the mean of the three metrics over the rows (one per data set)."""
    from benchmarks.validation_choices import METRICS

    return sum(float(r[m]) for r in row_cells for m in METRICS) / (len(METRICS) * len(row_cells))


def memory_name(window: int, size: int) -> tuple[str, str]:
    """A memory's (window, size) columns: ``3x3, 128`` positional, ``global, 10 %`` the k-shot memory."""
    return ("global", f"{size} %") if window == 0 else (f"{window}x{window}", str(size))


def validation_cells(
    rows: list[dict[str, str]], datasets: list[str]
) -> dict[tuple[str, int, int, float], list[dict[str, str]]]:
    """Each (configuration, memory window, memory size, weight) of the validation rows run on all of ``datasets``,
    with its row on each, in that order, sorted by key."""
    keyed: dict[tuple[str, int, int, float], dict[str, dict[str, str]]] = {}
    for r in rows:
        key = (r["configuration"], int(r["memory_window"]), int(r["memory_size"]), float(r["memory_weight"]))
        keyed.setdefault(key, {})[r["dataset"]] = r
    return {
        key: [by_dataset[d] for d in datasets]
        for key, by_dataset in sorted(keyed.items())
        if set(datasets) <= set(by_dataset)
    }


def memory_table(rows: list[dict[str, str]], datasets: list[str]) -> list[list[str]]:
    """Rows (memory, size, weight, a triple per data set, the rule's mean) of one design's memory stage: the
    distillation map alone first (weight 0, the same for every memory), then the positional memories, then the
    global ones."""
    cells = validation_cells(rows, datasets)
    alone = next(found for (_, _, _, weight), found in cells.items() if weight == 0)
    fused = sorted(((window, size, weight), found) for (_, window, size, weight), found in cells.items() if weight > 0)
    fused.sort(key=lambda item: item[0][0] == 0)  # global memories (window 0) last, the rest in order
    return [
        ["none", "", "0", *validation_triples(alone), auroc(validation_mean(alone))],
        *(
            [*memory_name(window, size), f"{weight:g}", *validation_triples(found), auroc(validation_mean(found))]
            for (window, size, weight), found in fused
        ),
    ]


def validation_choices_section() -> Section:
    from benchmarks.validation_choices import choose

    rows, memory_rows = read_csv("validation_choices.csv"), read_csv("validation_memory.csv")
    first, final = choose(rows), choose(memory_rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    scores = [f"{d}, image / pixel / AUPRO" for d in datasets]
    triples = validation_triples

    def key(row: dict[str, str]) -> tuple[str, str, float]:  # the standardisation does not matter at weight 0
        weight = float(row["memory_weight"])
        return row["configuration"], row["fusion_statistics"] if weight else "-", weight

    cells = {(*key(r), r["dataset"]): r for r in rows}
    design_rows = [
        [configuration, standardise, f"{w:g}", *triples([cells[(configuration, standardise, w, d)] for d in datasets])]
        for configuration, standardise, w in sorted({key(r) for r in rows})
    ]

    memory_table_rows = memory_table(memory_rows, datasets)
    steps = sorted({r["steps"] for r in rows})
    body = paragraphs(
        f"""How KDAnomaly's student-teacher design, its memory and the memory's weight were chosen, without a test
        image: each data set's training normals are split (seed 0, 20 % held out,
        `kdanomaly/data/validation_split.py`), every configuration trains on the rest ({", ".join(steps)} steps,
        batch 8, 256 px, seed 0) and is scored on the held-out normals and the same images with a blended defect
        (`blend_defects`: a feathered ellipse of another image's content at partial opacity, placed mostly on the
        object; a different family from the Perlin anomalies the denoising student trains on). The rule was fixed
        before the runs: the design with the best mean of image AUROC, pixel AUROC and AUPRO of its distillation
        map alone (memory weight 0) over the data sets, then that design's best fusion (memory weight, and
        standardisation by the statistics of all pixels or of each normal map's maximum) by the same mean. Each
        standardisation was evaluated on a training of its own, so a design has two weight-0 rows: the table
        shows the later, the rule averages both.""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation",
                f"--out benchmarks/results/validation_choices.csv --datasets {VALIDATION_DATASETS}",
            )
        ),
        machine(*(("validation_choices.csv", value) for value in sorted({r["machine"] for r in rows}))),
        table(["configuration", "statistics", "memory weight", *scores], design_rows, "llr" + "r" * len(datasets)),
        f"""Chosen in this first stage: **{first.configuration}**, memory weight **{first.memory_weight:g}**, fusion
        statistics **{first.fusion_statistics}**, with the positional memory as it was then
        ({first.memory[0]}x{first.memory[0]} window, {first.memory[1]} patches per position).""",
        f"""The second stage chose the positional memory, by the same rule and with the weight again free: the
        chosen design is trained once more per data set and evaluated with each memory (search window around the
        query's position x patches kept per position) and each weight, with {first.fusion_statistics}
        statistics. The first four memories of the command were run first; 1x256 and 1x512 were added after
        their rows were seen. The memory-only rows (weight 1) do not depend on the student. A memory keeps every patch
        when it has no more training images than its size (screw's validation training set has 256, so 256 and
        512 are the same memory there).""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation",
                f'--out benchmarks/results/validation_memory.csv --configurations "{first.configuration}"',
                f"--fusion-statistics {first.fusion_statistics} --memories 1x128 3x128 5x128 3x256 1x256 1x512",
                f"--datasets {VALIDATION_DATASETS}",
            )
        ),
        machine(*(("validation_memory.csv", value) for value in sorted({r["machine"] for r in memory_rows}))),
        table(
            ["window", "size", "memory weight", *scores, "mean (the rule)"],
            memory_table_rows,
            "rrr" + "r" * (len(datasets) + 1),
        ),
        f"""Chosen: **{final.configuration}**, memory weight **{final.memory_weight:g}**, fusion statistics
        **{final.fusion_statistics}**, positional memory with a **{final.memory[0]}x{final.memory[0]}** window and
        **{final.memory[1]}** patches per position.""",
    )
    return Section(VALIDATION_TITLE, ("validation_choices.csv", "validation_memory.csv"), body)


WARP_REFERENCE = "validation_warp_reference"
WINDOW_FILE = "validation_memory_window.csv"
STRUCTURAL_TITLE = "KDAnomaly on structural defects, a second validation family"
STRUCTURAL_LINK = f"[{STRUCTURAL_TITLE}](#{Section(STRUCTURAL_TITLE, (), '').anchor})"


def structural_validation_section() -> Section:
    from benchmarks.validation_choices import CONFIGURATIONS, choose
    from kdanomaly.benchmark.contenders import DISTILLATION_ONLY
    from kdanomaly.data.pasted_defects import STRUCTURE_SHARE, WARP_RADIUS

    blended, design_rows, memory_rows = (
        read_csv(name) for name in ("validation_memory.csv", "validation_warp.csv", "validation_warp_memory.csv")
    )
    chosen = choose(blended)
    datasets = list(dict.fromkeys(r["dataset"] for r in design_rows))
    scores = [f"{d}, image / pixel / AUPRO" for d in datasets]

    order = {name: index for index, name in enumerate(CONFIGURATIONS)}
    run_configurations = sorted({r["configuration"] for r in design_rows}, key=order.__getitem__)
    designs = sorted(validation_cells(design_rows, datasets).items(), key=lambda item: (order[item[0][0]], item[0][3]))
    design_table = [
        [configuration, f"{weight:g}", *validation_triples(found), auroc(validation_mean(found))]
        for (configuration, _, _, weight), found in designs
    ]
    memory_rows_shown = memory_table(memory_rows, datasets)
    reference = ResultsTable(RESULTS / WARP_REFERENCE / "results.csv").frame()
    for model, group in reference.groupby("model"):
        by_dataset = {row.dataset: row for row in group.itertuples()}
        found = [
            {m: str(getattr(by_dataset[d], m)) for m in ("image_AUROC", "pixel_AUROC", "pixel_AUPRO")} for d in datasets
        ]
        memory_rows_shown.append(
            [f"{model} (reference)", "", "", *validation_triples(found), auroc(validation_mean(found))]
        )
    leaderboard_rows = leaderboard_frame()
    distillation_name = DISTILLATION_ONLY["KDAnomaly"]
    screw_test = leaderboard_rows[(leaderboard_rows.model == distillation_name) & (leaderboard_rows.dataset == "screw")]
    design = {
        weight: found for (configuration, _, _, weight), found in designs if configuration == chosen.configuration
    }
    alone, fused, memory_alone = design[0.0], design[chosen.memory_weight], design[1.0]
    alone_by_design = ", ".join(
        f"{configuration} {auroc(validation_mean(found))}"
        for (configuration, _, _, weight), found in designs
        if weight == 0
    )
    blended_screw = next(
        r for r in blended
        if r["configuration"] == chosen.configuration and r["dataset"] == "screw" and float(r["memory_weight"]) == 0
    )  # fmt: skip
    body = paragraphs(
        f"""The blended defects of {VALIDATION_LINK} did not predict MVTec AD screw: the chosen design's
        distillation map alone reached {auroc(float(blended_screw["image_AUROC"]))} image AUROC on screw's validation
        set and {auroc(float(screw_test.image_AUROC.iloc[0]))} on its test set (the leaderboard's
        {distillation_name} row). Blended defects bring foreign content, which the denoising student, trained on
        pasted Perlin anomalies, learns to refuse; screw's defects are its own material out of shape. A second
        family of validation defects keeps to that: `warp_defects` (`kdanomaly/data/pasted_defects.py`) bends a disc
        of the image itself, a swirl or a push fading to nothing at the border,
        {WARP_RADIUS[0] * 100:g}-{WARP_RADIUS[1] * 100:g} % of the shorter side in radius, centred among the
        {STRUCTURE_SHARE * 100:g} % of pixels with the strongest gradient, no new content or colour. The split and
        the held-out images are those above (seed 0); only the defects differ. The design and fusion rows were
        run after the defaults were frozen, to see whether the validation sets can see what the test set saw; the
        memory's window was then chosen over both families (the last table).""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation --defects warp",
                "--out benchmarks/results/validation_warp.csv --fusion-statistics image_max --memories 1x512",
                "--configurations " + " ".join(f'"{c}"' if " " in c else c for c in run_configurations),
                f"--datasets {VALIDATION_DATASETS}",
            )
        ),
        machine(*(("validation_warp.csv", value) for value in sorted({r["machine"] for r in design_rows}))),
        table(
            ["configuration", "memory weight", *scores, "mean (the rule)"],
            design_table,
            "lr" + "r" * (len(datasets) + 1),
        ),
        f"""The chosen design ({chosen.configuration}), by the rule's mean on warped defects: distillation map alone
        {auroc(validation_mean(alone))}, memory alone {auroc(validation_mean(memory_alone))}, fused at weight
        {chosen.memory_weight:g} {auroc(validation_mean(fused))}. The distillation map alone of each design on
        warped defects: {alone_by_design}; the memory-only rows agree across designs (the memory does not depend
        on the student).""",
        """Memories on warped defects, with the chosen design trained once more per data set, and Patchcore at its
        published 10 % coreset in the leaderboard's protocol on the same validation sets as a reference (a global
        memory: every normal patch a candidate for every query patch).""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation --defects warp",
                f'--out benchmarks/results/validation_warp_memory.csv --configurations "{chosen.configuration}"',
                "--fusion-statistics image_max --memories 1x512 3x512 global:10 global:1",
                f"--datasets {VALIDATION_DATASETS}",
            ),
            *wrapped(
                f"kdanomaly benchmark --profile cpu --out benchmarks/results/{WARP_REFERENCE} --models Patchcore",
                "--datasets " + " ".join(f"folder:/tmp/validation/{d}" for d in datasets),
            ),
        ),
        machine(
            *(("validation_warp_memory.csv", value) for value in sorted({r["machine"] for r in memory_rows})),
            *((f"{WARP_REFERENCE}/results.csv", value) for value in sorted(set(reference.machine))),
        ),
        table(
            ["memory", "size", "memory weight", *scores, "mean (the rule)"],
            memory_rows_shown,
            "llr" + "r" * (len(datasets) + 1),
        ),
        """The global rows are KDAnomaly's k-shot memory, not Patchcore: L2-normalised features compared by cosine,
        statistics from 8 training images, built for one to eight good images.""",
        *both_families(chosen, blended, memory_rows),
    )
    files = ("validation_warp.csv", "validation_warp_memory.csv", f"{WARP_REFERENCE}/results.csv", WINDOW_FILE)
    return Section(STRUCTURAL_TITLE, files, body)


def both_families(chosen: Choice, blended: list[dict[str, str]], warped: list[dict[str, str]]) -> tuple[str, ...]:
    """Paragraphs of the memory stage's rule over the blended and the warped validation sets together, for the
    memories run on all of them; the blended 3x3 rows come from their own file."""
    configuration, default = chosen.configuration, default_memory()
    rows = blended + read_csv(WINDOW_FILE) + warped
    blended_sets = list(dict.fromkeys(r["dataset"] for r in blended))
    every = blended_sets + list(dict.fromkeys(r["dataset"] for r in warped))
    cells = validation_cells([r for r in rows if r["configuration"] == configuration], every)
    split = len(blended_sets)
    means = {
        (window, size, weight): [validation_mean(found[:split]), validation_mean(found[split:]), validation_mean(found)]
        for (_, window, size, weight), found in cells.items()
    }
    best = max(means, key=lambda key: means[key][2])
    window_rows = read_csv(WINDOW_FILE)
    return (
        """Over both families, by the memory stage's rule (the best mean of the three metrics at the memory's best
        weight), now over all four validation sets: the 3x3 window with 512 patches per position had only been
        run on warped defects, so it was run on the blended ones too, on a training of the same design that
        reproduced the committed weight-0 rows. This rule over both families was written after the warped rows
        above were seen and before the blended 3x3 rows were run.""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation",
                f'--out benchmarks/results/{WINDOW_FILE} --configurations "{configuration}"',
                "--fusion-statistics image_max --memories 3x512",
                f"--datasets {VALIDATION_DATASETS}",
            )
        ),
        machine(*((WINDOW_FILE, value) for value in sorted({r["machine"] for r in window_rows}))),
        table(
            ["memory", "size", "memory weight", "blended (2 sets)", "warped (2 sets)", "all four (the rule)"],
            [
                [*(memory_name(window, size) if weight else ("none", "")), f"{weight:g}", *map(auroc, values)]
                for (window, size, weight), values in means.items()
                if weight or (window, size) == min(key[:2] for key in means)
            ],
            "llrrrr",
        ),
        f"""By it: a **{memory_name(*best[:2])[0]}** window with **{best[1]}** patches per position at weight
        **{best[2]:g}** ({auroc(means[best][2])})."""
        + (
            f""" KDAnomaly's default since (`memory_window`, `memory_size`), in place of the second stage's
            {memory_name(*chosen.memory)[0]} window; the leaderboard's KDAnomaly cells were re-run with it. From
            {chosen.memory[1]} training images on, the search costs the same per image (both keep {chosen.memory[1]}
            patches per position) and the build holds {best[0] ** 2 // chosen.memory[0] ** 2} times as many candidates
            before the k-center reduction; with fewer images the wider window also keeps up to that many times as
            many patches (at most {chosen.memory[1]})."""
            if best[:2] == default
            else f""" KDAnomaly's default is not this but a {memory_name(*default)[0]} window with {default[1]}
            patches per position."""
        ),
    )


REVERSE_FILE = "validation_reverse.csv"
REVERSE_TITLE = "KDAnomaly's reverse-distillation student, chosen on both validation families"
REVERSE_LINK = f"[{REVERSE_TITLE}](#{Section(REVERSE_TITLE, (), '').anchor})"


def reverse_validation_section() -> Section:
    import inspect

    from benchmarks.validation_choices import CONFIGURATIONS, choose
    from kdanomaly import KDAnomaly
    from kdanomaly.models.kdad.lightning_model import student_recipe

    earlier = choose(read_csv("validation_memory.csv")).configuration
    window, size = default_memory()
    earlier_rows = [
        r for r in read_csv(WINDOW_FILE) + read_csv("validation_warp_memory.csv")
        if r["configuration"] == earlier and (int(r["memory_window"]), int(r["memory_size"])) == (window, size)
    ]  # fmt: skip
    reverse_rows = read_csv(REVERSE_FILE)
    rows = earlier_rows + reverse_rows
    chosen = choose(rows)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    datasets.sort(key=lambda d: d.endswith("-warp"))  # blended first
    order = {name: index for index, name in enumerate(CONFIGURATIONS)}
    cells = sorted(validation_cells(rows, datasets).items(), key=lambda item: (order[item[0][0]], item[0][3]))
    defaults = {name: p.default for name, p in inspect.signature(KDAnomaly.__init__).parameters.items()}
    recipe = student_recipe(defaults["memory_kind"])  # what the switches defaulting to None resolve to
    defaults.update(
        distillation=recipe.distillation, student_pretrained=recipe.pretrained,
        learning_rate=recipe.learning_rate, betas=recipe.betas,
    )  # fmt: skip
    switches = CONFIGURATIONS[chosen.configuration]
    is_default = all(defaults[name] == value for name, value in switches.items()) and (
        defaults["memory_weight"] == chosen.memory_weight
    )
    reverse_configurations = sorted({r["configuration"] for r in reverse_rows}, key=order.__getitem__)
    body = paragraphs(
        f"""The student-teacher map alone stayed far below the memory on MVTec AD screw (the leaderboard's
        distillation-only row), and on the warped validation defects of {STRUCTURAL_LINK}. Reverse distillation
        (RD4AD, Deng & Li, CVPR 2022) answers structural defects better: the student never sees the image; the
        teacher's three distilled stages are fused and squeezed through a one-class bottleneck (512 channels at
        stride 32) and a decoder rebuilds each stage from it, so what the bottleneck cannot carry comes back
        rebuilt as normal (`kdanomaly/models/kdad/reverse_student.py`; SimAM after every decoder block, the SSPCAB
        on the bottleneck's code; RD4AD's optimiser, Adam at 0.005 with betas 0.5 / 0.999). It was tried first
        as a scratch probe on these validation sets, then built and run here, alone and as a denoising student
        with DeSTSeg's segmentation head (the teacher's features of images with Perlin anomalies go into the
        bottleneck, the clean image's are the target), against the design chosen before
        ({earlier}, its rows of the memory-window stage above: {window}x{window} memory, {size} patches).""",
        """The rule is the earlier rule over all four validation sets (both families, as for the memory's window):
        the design with the best mean of image AUROC, pixel AUROC and AUPRO of its distillation map alone (weight
        0), then that design's memory weight by the same mean. 300 steps, batch 8, seed 0, image_max statistics.""",
        command(
            *wrapped(
                "python -m benchmarks.validation_choices --work /tmp/validation",
                f"--out benchmarks/results/{REVERSE_FILE} --fusion-statistics image_max --memories {window}x{size}",
                "--configurations " + " ".join(f'"{c}"' if " " in c else c for c in reverse_configurations),
                f"--datasets {VALIDATION_DATASETS}",
            ),
            "# the same with --defects warp",
        ),
        machine(*((REVERSE_FILE, value) for value in sorted({r["machine"] for r in reverse_rows}))),
        table(
            ["configuration", "memory weight", *(f"{d}, image / pixel / AUPRO" for d in datasets), "mean (the rule)"],
            [
                [configuration, f"{weight:g}", *validation_triples(found), auroc(validation_mean(found))]
                for (configuration, _, _, weight), found in cells
            ],
            "lr" + "r" * (len(datasets) + 1),
        ),
        f"""Chosen by the rule: **{chosen.configuration}** at memory weight **{chosen.memory_weight:g}**."""
        + (
            " KDAnomaly's defaults since; the leaderboard's KDAnomaly cells were re-run with them."
            if is_default
            else " KDAnomaly's defaults are not (yet) this design."
        ),
    )
    return Section(REVERSE_TITLE, (REVERSE_FILE, WINDOW_FILE, "validation_warp_memory.csv"), body)


def station_naming_section() -> Section:
    result = load("station_naming.json")
    settings = result["settings"]
    rows = [
        [row["configuration"], row["embedding"], f"{row['named_right_mean']:.1%} ± {row['named_right_std']:.1%}",
         f"{row['without_region']} of {row['defect_images']}"]
        for row in result["rows"]
    ]  # fmt: skip
    body = paragraphs(
        f"""How well a station names defect types with each KDAnomaly configuration, on synthetic surfaces only
        (`kdanomaly/data/synthetic.py`: {settings["train_images"]} good training images of
        {settings["image_size"]} px, {settings["per_defect"]} test images of each of four defect types). Each
        configuration trains {settings["steps"]} steps (batch 8, seed 0); its threshold is calibrated for
        {settings["false_review_rate"]:.0%} false reviews on 40 good images of another seed; each defect image with
        a region above it is embedded by its strongest region as a station embeds it: the teacher's deepest stage
        over the region's crop, pooled by the squared anomaly map (`map-weighted`), or that minus the same features
        pooled by the map's complement, the crop's background (`minus background`, so the surface's own texture
        cancels). Per draw ({settings["draws"]} draws), two detected images per type are enrolled and the others
        named by the highest mean similarity (the same draws for every row). The station's embedding,
        `minus background`, was chosen by this table.""",
        command(
            "python -m benchmarks.station_naming --work /tmp/station_naming "
            "--out benchmarks/results/station_naming.json"
        ),
        machine(("station_naming.json", result["machine"])),
        table(
            ["configuration", "embedding", "named right (mean ± sd over draws)", "defect images without a region"],
            rows,
            "llrr",
        ),
    )
    return Section("Defect naming by configuration, synthetic surfaces", ("station_naming.json",), body)


def kdad_bottle_section() -> Section:
    result = load("kdad_bottle.json")
    header = ["category", "image size", "epochs", "seed", "image AUROC", "pixel AUROC", "training s / epoch"]
    header += ["ms / image, batch 1", "batch 16"]
    row = [result["category"], result["image_size"], result["epochs"], result["seed"], auroc(result["image_AUROC"])]
    row += [auroc(result["pixel_AUROC"]), f"{result['train_seconds_per_epoch']:.1f}"]
    row += [f"{result['inference_ms_per_image_batch1']:.1f}", f"{result['inference_ms_per_image_batch16']:.1f}"]
    body = paragraphs(
        """KDAnomaly (`tf_efficientnet_lite0`, SimAM + SSPCAB) trained and tested on one MVTec AD category on the
        CPU, batch 8. Measured before the normal memory was added: these are distillation-only figures, what
        `memory_weight=0` gives today. The script builds the current default model, so rerunning it measures the
        fused model.""",
        command(
            *wrapped(
                f"python -m benchmarks.kdad_mvtec --root {MVTEC} --category bottle --epochs 20",
                "--out benchmarks/results/kdad_bottle.json",
            )
        ),
        machine(("kdad_bottle.json", f"{result['machine']}, torch {result['torch']}")),
        table(header, [row], "lrrrrrrrr"),
        """Training time is the training loop only (validation excluded), two data-loader workers decoding on the
        same cores. Inference is the whole Anomalib module (resize, normalise, model, post-processing) on the first
        32 test images, the median of three passes.""",
    )
    return Section("KDAnomaly distillation only, MVTec AD bottle", ("kdad_bottle.json",), body)


def kshot_cells(rows: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The rows of a kshot_normal file by (dataset, k, model)."""
    return {(row["dataset"], row["k"], row["model"]): row for row in rows}


def kshot_section() -> Section:
    first, rerun = load("kshot_normal.json"), load("kshot_normal_mt_memory_only.json")
    cells, again = kshot_cells(first["rows"]), kshot_cells(rerun["rows"])
    main = [
        [
            dataset,
            k,
            pair(cells[dataset, k, KSHOT]),
            pair(cells[dataset, k, "Patchcore"]),
            f"{cells[dataset, k, KSHOT]['train_seconds']:.1f}",
            f"{cells[dataset, k, 'Patchcore']['train_seconds']:.1f}",
        ]
        for dataset, k in sorted({(dataset, k) for dataset, k, _ in cells})
    ]
    memory_rows = [
        [
            dataset,
            k,
            pair(cells[dataset, k, KSHOT]) if (dataset, k, KSHOT) in cells else "—",
            pair(again[dataset, k, KSHOT]),
            pair(again[dataset, k, f"{KSHOT}, memory only"]),
        ]
        for dataset, k in sorted({(dataset, k) for dataset, k, model in again if model == KSHOT})
    ]
    settings = first["settings"]
    body = paragraphs(
        f"""KDAnomaly in its k-shot mode (`memory_kind="prototype"`) against Anomalib's Patchcore, both given the
        same k good images (drawn at random, seed {settings["seed"]}); the whole test set is scored. The
        leaderboard's backbone, pre-processing and evaluator. KDAnomaly trains its student {settings["steps"]}
        steps on the k images and keeps a 10 % coreset of their patches in its memory; Patchcore keeps its
        published 10 % coreset of the same layers.""",
        command(
            *wrapped(
                "python -m benchmarks.kshot_normal --out benchmarks/results/kshot_normal.json",
                f"--datasets mvtec:{MVTEC}:bottle magnetic_tile:{MAGNETIC_TILE}",
            )
        ),
        machine(("kshot_normal.json", first["machine"])),
        "Image / pixel AUROC and training seconds:",
        table(["data", "k", "KDAnomaly k-shot", "Patchcore", "KDAnomaly s", "Patchcore s"], main, "lrrrrr"),
        """Where the pixel AUROC goes: a second run on the magnetic tiles scores each trained KDAnomaly twice,
        fused and on its memory map alone (`memory_weight=1`). Its fused column is that run's; the first run's is
        shown beside it (they differ where the two trainings did).""",
        command(
            *wrapped(
                f'python -m benchmarks.kshot_normal --datasets magnetic_tile:{MAGNETIC_TILE} --models "{KSHOT}"',
                "--out benchmarks/results/kshot_normal_mt_memory_only.json",
            )
        ),
        machine(("kshot_normal_mt_memory_only.json", rerun["machine"])),
        table(["data", "k", "fused, first run", "fused, this run", "memory only"], memory_rows, "lrrrr"),
    )
    files = ("kshot_normal.json", "kshot_normal_mt_memory_only.json")
    return Section("KDAnomaly from k good images, against Patchcore", files, body)


# --------------------------------------------------------------------------------------------------- inspection


def inspect_bottle_section() -> Section:
    result = load("inspect_bottle.json")
    settings = result["settings"]
    low, high = result["interval"]
    difference = result["largest_score_difference_inspect_vs_model"]
    rows = [
        ["training images", result["training_images"]],
        ["good training images held out", settings["held_out"]],
        ["target false-review rate", f"{100 * float(settings['rate']):g} %"],
        ["`kdanomaly calibrate` reported", result["calibration"]],
        ["good images inspected", result["good_images_inspected"]],
        ["of those sent to review", result["good_images_reviewed"]],
        ["measured false-review rate", f"{100 * result['measured_false_review_rate']:.1f} %"],
        ["inside the 95 % interval", f"{'yes' if result['measured_rate_in_interval'] else 'no'}"],
        ["defective images inspected", result["defective_images"]],
        ["of those sent to review", result["defective_reviewed"]],
        [
            "defective images the model scores above the threshold",
            result["defective_scored_above_threshold_by_the_model"],
        ],
        ["of those missing from review", len(result["of_those_missing_from_review"])],
        [
            "image / pixel AUROC of the trained model",
            f"{auroc(result['image_AUROC'])} / {auroc(result['pixel_AUROC'])}",
        ],
        ["largest difference between `inspect`'s score and the model's", f"{difference:.2g}"],
    ]
    body = paragraphs(
        f"""`kdanomaly calibrate` then `kdanomaly inspect` on MVTec AD `bottle`: is the false-review rate the
        promised one, and does every defect reach review? KDAnomaly (defaults, 256 px, {settings["epochs"]} epochs)
        trains on the bottle training images minus {settings["held_out"]} held out at random (seed
        {settings["seed"]}). Half of those calibrate the threshold for a {100 * float(settings["rate"]):g} %
        false-review rate; the other half, the good test images and the defective test images are inspected. The
        interval ({100 * low:.2f}-{100 * high:.2f} %) is the one `calibrate` reports for the false-review rate given
        its calibration images.""",
        command(f"python -m benchmarks.inspect_bottle --mvtec {MVTEC} --out benchmarks/results/inspect_bottle.json"),
        machine(("inspect_bottle.json", result["machine"])),
        table(["quantity", "value"], rows, "lr"),
    )
    return Section("Calibrated pre-screening, MVTec AD bottle", ("inspect_bottle.json",), body)


def inspect_throughput_section() -> Section:
    result = load("inspect_throughput.json")
    settings = result["settings"]
    header = ["images", "image size", "batch", "decoding workers", "reviewed", "model alone, images / s"]
    header += ["`inspect`, images / s", "overhead"]
    row = [result["images"], TIMES.join(map(str, result["image_size"])), settings["batch_size"], settings["workers"]]
    row += [result["reviewed"], f"{result['forward_images_per_second']:.2f}"]
    row += [f"{result['pipeline_images_per_second']:.2f}", f"{100 * result['pipeline_overhead']:.1f} %"]
    body = paragraphs(
        f"""The throughput of `kdanomaly inspect` against the model's own forward rate, in the same process, one
        after the other, with `make demo`'s checkpoint. The images are synthetic PNGs written to a scratch folder.
        Model alone: the same images already decoded and resized in memory, scored in batches. `inspect`: the whole
        run on the files (decoding workers, scoring, regions, overlays, thumbnails, maps, journal, results and
        report), with the threshold at the scores' 90th percentile so that 10 % of the images get regions.
        Overhead = 1 {MINUS} `inspect`'s rate / the model's.""",
        command(
            *wrapped(
                "python -m benchmarks.inspect_throughput --out benchmarks/results/inspect_throughput.json",
                "--model results/demo/KDAnomaly/MVTecAD/weave/latest/weights/lightning/model.ckpt",
            )
        ),
        machine(("inspect_throughput.json", result["machine"])),
        table(header, [row], "rlrrrrrr"),
    )
    return Section("Throughput of kdanomaly inspect", ("inspect_throughput.json",), body)


ENGINE_LABELS = {
    "torch/fp32": "PyTorch eager, fp32", "torch-channels-last/fp32": "PyTorch, channels_last, fp32",
    "onnx/fp32": "ONNX Runtime, fp32", "openvino/fp32": "OpenVINO, fp32", "openvino/bf16": "OpenVINO, bf16",
    "openvino/int8": "OpenVINO, int8 (NNCF)",
}  # fmt: skip


def engine_speed_section() -> Section:
    result = load("engine_speed.json")
    settings, model_only, pipeline = result["settings"], result["model_only"], result["pipeline"]
    eager = model_only["torch/fp32"]["images_per_second"][str(model_only["torch/fp32"]["best_batch"])]
    header = ["engine", "batch 1, images / s", "best batch", "images / s", f"{TIMES} PyTorch eager", "share of peak"]
    rows = []
    for name, cell in model_only.items():
        best = cell["images_per_second"][str(cell["best_batch"])]
        rows.append([ENGINE_LABELS[name], f"{cell['images_per_second']['1']:.2f}", cell["best_batch"], f"{best:.2f}",
                     f"{best / eager:.2f}", f"{100 * cell['share_of_peak']:.1f} %"])  # fmt: skip
    piped = pipeline["torch/fp32"]["images_per_second"]
    pipeline_rows = [
        [ENGINE_LABELS[name], cell["batch"], f"{cell['images_per_second']:.2f}",
         f"{cell['images_per_second'] / piped:.2f}", cell["reviewed"]]
        for name, cell in pipeline.items()
    ]  # fmt: skip
    peer_rows = []
    for name, cell in result["peers"].items():
        ours = model_only["openvino/fp32"]["images_per_second"][str(cell["batch"])]
        rate = cell["openvino_fp32_images_per_second"]
        peer_rows.append([name, cell["batch"], f"{rate:.2f}", f"{ours:.2f}", f"{ours / rate:.2f}"])
    body = paragraphs(
        f"""The scoring graph of `make demo`'s checkpoint (256 {TIMES} 256) on each engine, in one process, one
        after the other: {result["flops_per_image"] / 1e9:.2f} GFLOP per image (PyTorch's FLOP counter, 2 per
        multiply-add). Model only: {settings["model_images"]} synthetic images already decoded, at batch 1 and at
        each of {settings["batches"]}, best batch shown. Share of peak: images / s {TIMES} FLOPs / the CPU's peak
        ({settings["peak_gflops"]} GFLOP/s fp32 = 2 cores {TIMES} 2.6 GHz {TIMES} 32 FLOP per cycle; bf16 and
        int8 rows against 2{TIMES} and 4{TIMES} that). The int8 model is NNCF's, quantized on the model's
        training images and the same images with pasted defects; its layers left in floating point run in bf16.""",
        command(
            *wrapped(
                "python -m benchmarks.engine_speed --out benchmarks/results/engine_speed.json",
                "--model results/demo/KDAnomaly/MVTecAD/weave/latest/weights/lightning/model.ckpt "
                "--normals results/demo/data/weave/train/good",
            )
        ),
        machine(("engine_speed.json", result["machine"])),
        table(header, rows, "lrrrrr"),
        f"""The whole `kdanomaly inspect` on {settings["images"]} PNG files (decoding threads, scoring, regions,
        overlays, thumbnails, maps, journal, report) at the engine's best batch, each engine's threshold at its own
        scores' 90th percentile:""",
        table(["engine", "batch", "images / s", f"{TIMES} PyTorch eager", "reviewed"], pipeline_rows, "lrrrr"),
        f"int8: {result['int8_refused']}." if "int8_refused" in result else "",
        f"""Anomalib's {" and ".join(result["peers"])} (Patchcore with its 10 % coreset, chosen by
        `kdanomaly.memory.k_center_greedy`, the same greedy algorithm as Anomalib's sampler), same backbone, fitted
        on the same good images, exported to OpenVINO fp32 by Anomalib's own export, model only, beside KDAnomaly's
        OpenVINO fp32 export at the same batch:""",
        table(
            ["Anomalib model", "batch", "images / s", "KDAnomaly, images / s", f"KDAnomaly {TIMES}"], peer_rows, "lrrrr"
        ),
    )
    return Section("Engines: images per second on a 2-core CPU", ("engine_speed.json",), body)


def engine_accuracy_section() -> Section:
    result = load("engine_accuracy.json")
    columns = list(ENGINES_ORDER)
    rows = []
    for name, cells in result["datasets"].items():
        reference = cells["torch/fp32"]
        for cell in columns:
            if cell in cells:
                value = cells[cell]
                rows.append([name, ENGINE_LABELS[cell], value["test_images"], auroc(value["image_AUROC"]),
                             signed(value["image_AUROC"] - reference["image_AUROC"]), auroc(value["pixel_AUROC"]),
                             signed(value["pixel_AUROC"] - reference["pixel_AUROC"])])  # fmt: skip
    body = paragraphs(
        """What lower precision costs in AUROC: one KDAnomaly checkpoint per data set scored on its whole test set by
        PyTorch and by its OpenVINO export in fp32, bf16 and int8 (NNCF, calibrated on the training images and the
        same images with pasted defects). `synthetic`: `make demo`'s checkpoint on its test set; `bottle`: MVTec AD
        bottle, the checkpoint of `python -m benchmarks.kdad_mvtec --category bottle --epochs 11` (256 px).""",
        command(
            *wrapped(
                "python -m benchmarks.engine_accuracy --out benchmarks/results/engine_accuracy.json",
                "--dataset synthetic:results/demo/data/weave:DEMO_CHECKPOINT "
                f"--dataset bottle:{MVTEC}/bottle:BOTTLE_CHECKPOINT",
            )
        ),
        machine(("engine_accuracy.json", result["machine"])),
        table(["data", "engine", "test images", "image AUROC", "change", "pixel AUROC", "change"], rows, "llrrrrr"),
    )
    return Section("Engines: AUROC at lower precision", ("engine_accuracy.json",), body)


ENGINES_ORDER = ("torch/fp32", "openvino/fp32", "openvino/bf16", "openvino/int8")


def percent(value: float | None) -> str:
    """A share as a percentage with one decimal."""
    return "-" if value is None else f"{100 * value:.1f} %"


def station_loop_change(name: str, first: dict[str, Any], last: dict[str, Any]) -> str:
    """A data set's first and last round: good / defect images reviewed, good reviewed at 95 % defect recall."""
    return (
        f"{name} {percent(first['false_review_rate'])} / {percent(first['defect_recall'])} → "
        f"{percent(last['false_review_rate'])} / {percent(last['defect_recall'])}; "
        f"{percent(first['false_review_rate_at_95_recall'])} → {percent(last['false_review_rate_at_95_recall'])}"
    )


def station_loop_section() -> Section:
    result = load("station_loop.json")
    settings = result["settings"]
    rows = []
    for name, cells in result["datasets"].items():
        for number, cell in enumerate(cells["rounds"]):
            typed = cell["type_accuracy"]
            rows.append([
                name, number, cell["version"], f"{cell['good_images']} / {cell['defect_images']}",
                percent(cell["false_review_rate"]), percent(cell["defect_recall"]),
                percent(cell["false_review_rate_all_defects_kept"]), percent(cell["false_review_rate_at_95_recall"]),
                auroc(cell["image_AUROC"]), "-" if typed is None else f"{percent(typed)} of {cell['typed_defects']}",
            ])  # fmt: skip
    header = [
        "data", "round", "station version", "good / defect images", "good reviewed", "defects reviewed",
        "false reviews, every defect kept", "false reviews, 95 % defects", "image AUROC", "types named right",
    ]  # fmt: skip
    body = paragraphs(
        f"""The station loop with a simulated reviewer. Per data set (seed {settings["seed"]}): a station fitted by
        `kdanomaly fit` on {settings["fit_images"]} good images ({settings["steps"]} steps, {settings["image_size"]}
        px, {percent(float(settings["false_review_rate"]))} target false-review rate); the other good images and every
        defect image shuffled into {settings["rounds"]} rounds. Round r is inspected by the station as it is after
        learning rounds 0 to r {MINUS} 1; then the ground truth decides every image sent to review (false alarm, or
        defect of its true type) and `kdanomaly learn` makes the next version. Columns: at the calibrated threshold,
        the share of the round's good images sent to review and of its defects caught; the share of good images
        that would be reviewed at the threshold that keeps every defect of the round (and 95 % of them); the
        round's image AUROC; among the reviewed defects of types confirmed in earlier rounds, the share whose
        strongest region is named with the right type. Magnetic tiles: `MT_Free` are the good images, the five
        defect classes the types; screw: MVTec AD's training and test good images, the five test defect
        folders.""",
        command(
            *wrapped(
                "python -m benchmarks.station_loop --out benchmarks/results/station_loop.json",
                f"--dataset magnetic_tile:{MAGNETIC_TILE} --dataset screw:{MVTEC}/screw",
            )
        ),
        machine(("station_loop.json", result["machine"])),
        table(header, rows, "lrrrrrrrrr"),
    )
    return Section("The station loop: a simulated reviewer, round by round", ("station_loop.json",), body)


# --------------------------------------------------------------------------------------------------- recognizer


def accuracy_rows(results: dict[str, Any], columns: Sequence[str], cell: Callable[[Any], str]) -> list[list[str]]:
    """One row per matched embedding, ``cell`` of each column it has, ``not run`` for the others."""
    return [
        [EMBEDDINGS[name], *(cell(scores[c]) if c in scores else "not run" for c in columns)]
        for name, scores in results.items()
    ]


def small_data_rows(name: str, report: dict[str, Any]) -> list[list[object]]:
    """The small-data cells of one fewshot_neu file, one row each."""
    settings = report["settings"]
    return [
        [
            name,
            settings["size"],
            settings["epochs_small"],
            EMBEDDINGS[model],
            size,
            f"{cell['accuracy']:.2f}",
            f"{cell['train_seconds']:.1f}",
        ]
        for model, sizes in report["small"].items()
        for size, cell in sizes.items()
    ]


def fewshot_neu_section() -> Section:
    first, small, probe = (
        load(f"{n}.json") for n in ("fewshot_neu", "fewshot_neu_small_200px", "fewshot_neu_small_10x40")
    )
    settings, novel = first["settings"], first["novel"]
    novel_rows = [
        [*row, f"{novel[name]['train_seconds']:.1f}" if novel[name]["train_seconds"] else "—"]
        for name, row in zip(novel, accuracy_rows(novel, ["k=1", "k=3", "k=5"], mean_sd), strict=True)
    ]
    sizes = [str(size) for size in ast.literal_eval(small["settings"]["per_class"])]
    columns = [f"{size}/class" for size in sizes]
    small_rows = accuracy_rows(small["small"], columns, lambda cell: f"{cell['accuracy']:.2f}")
    steps = small["small"]["recognizer/backbone"]
    small_rows.append(["optimiser steps (batch 32)", *(str(steps[c]["steps"]) for c in columns)])
    seconds = [
        [
            EMBEDDINGS[name].partition(",")[0],
            *(f"{s[c]['train_seconds']:.1f}" if c in s else "not run" for c in columns),
        ]
        for name, s in small["small"].items()
        if name != "recognizer/projection"
    ]
    other = small_data_rows("fewshot_neu.json", first) + small_data_rows("fewshot_neu_small_10x40.json", probe)
    per_size = "l" + "r" * len(sizes)
    body = paragraphs(
        f"""The few-shot recognizer (`kdanomaly/models/recognizer/`) on NEU's six steel-surface defect classes
        (whole images), against a cross-entropy baseline with the same backbone, views and budget, and against the
        untrained ImageNet backbone. Backbone `{settings["backbone"]}` with its offline ImageNet weights, batch 32,
        Adam 5e-4, seed {settings["seed"]}. Accuracy in %: an image gets the class whose references have the highest
        mean cosine similarity to it (the `PrototypeMemory` rule). The recognizer is matched on its pooled backbone
        features (its default) and on its trained 128-d projection.""",
        "### Novel classes",
        f"""Trained {settings["epochs"]} epochs on the images of inclusion, patches and rolled-in_scale at
        {settings["size"]} px; k references of crazing, pitted_surface and scratches enrolled, every other image of
        those three classified; mean ± standard deviation over {settings["draws"]} reference draws. One training
        seed per model.""",
        command(f"python -m benchmarks.fewshot_neu --data {NEU}/IMAGES --out benchmarks/results/fewshot_neu.json"),
        machine(("fewshot_neu.json", first["machine"])),
        table(["embedding matched", "k = 1", "k = 3", "k = 5", "training s"], novel_rows, "lrrrr"),
        """The projection, trained to separate the training classes (ArcFace) and to be view-invariant, loses what
        tells unseen types apart; the pooled features below it transfer. Hence `match_on="backbone"` by
        default.""",
        "### Small data",
        f"""{", ".join(sizes)} random images per class of all six at NEU's native {small["settings"]["size"]} px,
        {small["settings"]["epochs_small"]} epochs each; the same images enrolled, every other image classified. The
        script writes its file after each trained model; `--resume` keeps what is there and runs the rest on the
        same training images, `--models` picks which models run.""",
        command(
            *wrapped(
                f"python -m benchmarks.fewshot_neu --data {NEU}/IMAGES --protocols small --size 200 --epochs-small 80",
                "--out benchmarks/results/fewshot_neu_small_200px.json",
            ),
            "# then the same command with --resume --models recognizer",
        ),
        machine(("fewshot_neu_small_200px.json", small["machine"])),
        table(["embedding matched", *(f"{s} / class" for s in sizes)], small_rows, per_size),
        "Training seconds:",
        table(["model", *(f"{s} / class" for s in sizes)], seconds, per_size),
        """The same protocol at 128 px with fewer steps: `fewshot_neu.json` (the novel-class command's small-data
        part) and `fewshot_neu_small_10x40.json` (10 / class, 40 epochs). There the recognizer trails the
        cross-entropy baseline; the table above uses NEU's native size and a budget in epochs.""",
        command(
            *wrapped(
                f"python -m benchmarks.fewshot_neu --data {NEU}/IMAGES --protocols small --per-class 10",
                "--epochs-small 40 --out benchmarks/results/fewshot_neu_small_10x40.json",
            )
        ),
        machine(("fewshot_neu_small_10x40.json", probe["machine"])),
        table(["file", "px", "epochs", "embedding matched", "images", "accuracy", "training s"], other, "lrrllrr"),
    )
    files = ("fewshot_neu.json", "fewshot_neu_small_200px.json", "fewshot_neu_small_10x40.json")
    return Section("Few-shot defect types on NEU", files, body)


def fewshot_mt_section() -> Section:
    result = load("fewshot_mt.json")
    settings, crops = result["settings"], result["crops_per_type"]
    rows = [
        [EMBEDDINGS[name].replace("recognizer", "NEU recognizer"), *(mean_sd(cells[f"k={k}"]) for k in (1, 3, 5))]
        for name, cells in result["accuracy"].items()
    ]
    counts = ", ".join(f"{name} {count}" for name, count in crops.items())
    body = paragraphs(
        f"""The k-shot protocol on a factory's own defect types that the recognizer never saw: a recognizer trained
        on all six NEU classes, then the magnetic tiles' {len(crops)} defect types (chance:
        {100 / len(crops):.0f} %). Each defect is cut out around its mask (the mask's box grown to a square of 1.25
        times its longer side, at least 64 px), as `kdanomaly inspect` hands regions to the recognizer:
        {sum(crops.values())} crops ({counts}); {len(result["skipped_empty_masks"])} images with an empty mask are
        skipped. k references per type enrolled, every other crop classified at {settings["size"]} px; mean ±
        standard deviation over {settings["draws"]} draws.""",
        command(
            *wrapped(
                f"kdanomaly fewshot train -c configs/recognizer/default.yaml --data.root {NEU}/IMAGES",
                "--trainer.max_epochs 2 --out neu.ckpt",
            ),
            *wrapped(
                f"python -m benchmarks.fewshot_mt --data {MAGNETIC_TILE} --model neu.ckpt",
                "--out benchmarks/results/fewshot_mt.json",
            ),
        ),
        machine(("fewshot_mt.json", result["machine"])),
        table(["embedding matched", "k = 1", "k = 3", "k = 5"], rows, "lrrr"),
        """What the recognizer learned on NEU's steel textures does not carry over to the tiles' defect shapes: for a
        new product line, train the recognizer on that line's own labelled types.""",
    )
    return Section("Magnetic-tile defect types, recognizer trained on NEU", ("fewshot_mt.json",), body)


# ----------------------------------------------------------------------------------------------------- detector

CELL_HEADER = ["k / class", "variant", "mAP@0.5", *(c.replace("_", " ") for c in detect_neu_table.CLASSES)]
CELL_HEADER += ["parameters", "train s", "ms / image"]
DRAW_HEADER = ["k / class", "variant", "mAP@0.5 per draw, in draw order", "mean ± sd", "minus plain, same draw"]


# The runs that wrote each detect_neu file: options of the command's first line, of its second (before --out), and
# whether it continued the file (--resume).
BOTH = '--variants "+contrastive (full)" plain'
PAIR = '--variants plain "+contrastive (full)"'
DETECT_RUNS = {
    "detect_neu_flips.json": [
        ("--flips --sizes 10 30 --steps 1000 --protocols supervised", f"{BOTH} --checkpoints /tmp/ckpt", False),
        ("--flips --sizes 10 --draws 1 --steps 1000 --protocols supervised", f"{BOTH} --checkpoints /tmp/ckpt", True),
        ("--flips --sizes 30 --draws 1 2 --steps 1000 --protocols supervised", f"{BOTH} --checkpoints /tmp/ckpt", True),
    ],
    "detect_neu_flips_2000.json": [
        ("--flips --sizes 10 30 --steps 2000 --protocols supervised", f"{BOTH} --checkpoints /tmp/ckpt2000", False),
    ],
    "detect_neu.json": [
        ("--sizes 10 30 --steps 1000 --protocols supervised", PAIR, False),
        ("--sizes 30 --steps 1000 --protocols supervised", "--variants +ghost_fpn +deformable", True),
        ("--sizes 10 --steps 1000 --protocols supervised", "--variants +ghost_fpn", True),
        ("--sizes 10 --steps 1000 --protocols novel", "--variants plain", True),
        ("--sizes 5 --steps 1000 --protocols supervised", PAIR, True),
        ("--sizes 30 10 --draws 1 2 --steps 1000 --protocols supervised", PAIR, True),
        ("--sizes full --steps 1000 --protocols supervised", PAIR, True),
        ("--sizes 30 10 --draws 1 2 --steps 1000 --protocols supervised", "--variants +ghost_fpn", True),
    ],
}


def detect_commands(out: str) -> str:
    """The ``benchmarks.detect_neu`` commands that wrote ``results/<out>``, in order."""
    lines = []
    for first, second, resume in DETECT_RUNS[out]:
        rest = f"{second} --out benchmarks/results/{out}" + (" --resume" if resume else "")
        lines += wrapped(f"python -m benchmarks.detect_neu --root {NEU} {first}", rest)
    return command(*lines)


def detect_tables(report: dict[str, Any]) -> str:
    """:mod:`benchmarks.detect_neu_table`'s tables: the split seed's cells, then each variant across draws."""
    cells = table(CELL_HEADER, [], "rl" + "r" * (len(CELL_HEADER) - 2))
    cells += "\n" + "\n".join(detect_neu_table.cell_rows(report))
    draws = detect_neu_table.draw_rows(report, int(report["settings"]["seed"]))
    if not draws:
        return cells
    return cells + "\n\n" + table(DRAW_HEADER, [], "rllrl") + "\n" + "\n".join(draws)


def detect_machine(name: str, report: dict[str, Any]) -> str:
    """The file's machine, and the cells that record a torch version of their own when it is another."""
    torch_version = report["machine"].rpartition("torch ")[2]
    other: dict[str, list[str]] = {}
    for key, cells in report["supervised"].items():
        for variant, cell in cells.items():
            if cell.get("torch", torch_version) != torch_version:
                other.setdefault(cell["torch"], []).append(f"{key} {variant}")
    line = machine((name, report["machine"]))
    for version, where in other.items():
        line += f" Cells that record torch {version}: " + "; ".join(where) + "."
    return line


def detect_protocol(report: dict[str, Any]) -> str:
    """The split, budget and metric of a detect_neu file."""
    settings = report["settings"]
    flips = ", every training image flipped left-right and top-bottom at random" if settings.get("flips") else ""
    return (
        f"NEU-DET split once, seeded (seed {settings['seed']}), into {report['train_images']} training and "
        f"{report['test_images']} test images; k training images per class drawn from the training part (`full`: all "
        f"of it); {settings['steps']} AdamW steps at batch {settings['batch_size']}, {settings['image_size']} px"
        f"{flips}; AP at IoU 0.5, in %, on every test image (torchmetrics, COCO-style)."
    )


def map_by_cell(report: dict[str, Any]) -> dict[tuple[str, int, str], float]:
    """mAP@0.5 by (k, draw, variant)."""
    seed = int(report["settings"]["seed"])
    found = {}
    for key, cells in report["supervised"].items():
        size, _, draw = key.partition(", draw ")
        for variant, cell in cells.items():
            found[size.removesuffix("/class"), int(draw) if draw else seed, variant] = cell["mAP@0.5"]
    return found


def flips_rows(without: dict[str, Any], flipped: dict[str, Any]) -> list[list[object]]:
    """mAP@0.5 without and with flips of every (k, draw, variant) both files hold."""
    plain, flips = map_by_cell(without), map_by_cell(flipped)
    order = list(detect_neu_table.LABELS)

    def position(cell: tuple[str, int, str]) -> tuple[int, int, int]:
        return (int(cell[0]) if cell[0].isdigit() else sys.maxsize, cell[1], order.index(cell[2]))

    return [
        [
            size,
            draw,
            detect_neu_table.LABELS[variant],
            f"{plain[size, draw, variant]:.2f}",
            f"{flips[size, draw, variant]:.2f}",
            f"{flips[size, draw, variant] - plain[size, draw, variant]:+.2f}",
        ]
        for size, draw, variant in sorted(plain.keys() & flips.keys(), key=position)
    ]


def detector_section() -> Section:
    flipped, longer, without = (load(f"{n}.json") for n in ("detect_neu_flips", "detect_neu_flips_2000", "detect_neu"))
    novel, trained = without["novel"], without["supervised"]["10/class"][FULL]
    novel_classes = [c for c in detect_neu_table.CLASSES if c in novel]
    novel_rows = [
        ["enrolled in the memory, no retraining", novel["base_images"], novel["references"], f"{novel['mAP@0.5']:.2f}"]
        + [f"{novel[c]:.2f}" for c in novel_classes],
        ["trained on all six classes, 10 / class, draw 0 (for comparison)", "—", "—", "—"]
        + [f"{trained[c]:.2f}" for c in novel_classes],
    ]
    novel_header = ["full model", "base images", "references", "mAP@0.5", *(c.replace("_", " ") for c in novel_classes)]
    steps = int(without["settings"]["steps"])
    body = paragraphs(
        """The few-shot detector (`kdanomaly/models/detector/`) on NEU-DET's six boxed defect types, against `plain`
        (torchvision's FPN, no deformable block, no contrastive branch; the same backbone). Columns: mAP@0.5 and
        AP@0.5 per class in %, parameters, training seconds, and inference ms per image (one image at a time, after
        two warm-up images). Draw 0 is the split's seed; other draws redraw the k images and the initial weights, so
        a variant and plain on the same draw saw the same images. The tables are what
        `python -m benchmarks.detect_neu_table FILE` prints.""",
        "### Trained on flips (what `kdanomaly detect train` does)",
        detect_protocol(flipped),
        detect_commands("detect_neu_flips.json"),
        detect_machine("detect_neu_flips.json", flipped),
        detect_tables(flipped),
        "### Trained on flips, twice as long",
        detect_protocol(longer) + " The same warm-up and cosine decay over twice the steps.",
        detect_commands("detect_neu_flips_2000.json"),
        detect_machine("detect_neu_flips_2000.json", longer),
        detect_tables(longer),
        "### Without flips, and the parts of the model",
        detect_protocol(without)
        + """ Each part of the full model on its own: the deformable last stage, then the Ghost FPN, then the
        contrastive branch (weight 0.1).""",
        detect_commands("detect_neu.json"),
        detect_machine("detect_neu.json", without),
        detect_tables(without),
        "### Flips against no flips",
        f"mAP@0.5 of every cell both {spaced(steps)}-step files hold (same k, draw and variant: the same images):",
        table(
            ["k / class", "draw", "variant", "no flips", "flips", "flips minus no flips"],
            flips_rows(without, flipped),
            "rrlrrr",
        ),
        "### Novel classes through the memory",
        f"""The full model trained on the {novel["base_images"]} training images of inclusion, patches and rolled-in
        scale; {without["settings"]["novel_k"]} boxed images of each of crazing, pitted surface and scratches
        enrolled in a `PrototypeMemory` ({novel["references"]} references, no retraining). Every proposal takes its
        most similar enrolled class, scored by the box classifier's foreground probability {TIMES}
        (1 + similarity) / 2; AP on the test images that hold only those three classes. Enrolment names boxes
        without retraining, but the detector does not find types it was not trained on: the RPN and the foreground
        score learned only the base types. For a new type, train with its boxes; the memory is for naming.""",
        table(novel_header, novel_rows, "lrrrrrr"),
    )
    files = ("detect_neu_flips.json", "detect_neu_flips_2000.json", "detect_neu.json")
    return Section("Boxed defect types: NEU-DET detector", files, body)


# ------------------------------------------------------------------------------------------------------- memory


def memory_speed_section() -> Section:
    result = load("memory_speed.json")
    coreset, search = result["coreset"], result["search"]
    coreset_row = [f" {TIMES} ".join(map(spaced, coreset["features"])), spaced(coreset["coreset_size"])]
    coreset_row += [f"{coreset['anomalib_kcenter_seconds']:.2f}", f"{coreset['kdanomaly_kcenter_seconds']:.2f}"]
    coreset_row += [f"{coreset['speedup']}{TIMES}", f"{coreset['anomalib_covering_radius']:.4f}"]
    coreset_row += [f"{coreset['kdanomaly_covering_radius']:.4f}"]
    coreset_header = ["features", "picks", "Anomalib s", "kdanomaly s", "speed-up", "Anomalib radius"]
    coreset_header += ["kdanomaly radius"]
    search_rows = [
        [
            kind,
            f"{search[kind]['build_seconds']:.2f}",
            setting.removeprefix(f"{kind}_"),
            f"{measured['ms_per_query']:.3f}",
            measured["recall@1"],
        ]
        for kind in ("flat", "ivf", "hnsw")
        for setting, measured in search[kind].items()
        if setting != "build_seconds"
    ]
    body = paragraphs(
        """1. Coreset selection: teacher patch features of the MVTec AD bottle training images
        (`tf_efficientnet_lite0`, 256 px); `kdanomaly.memory.k_center_greedy` (exact greedy k-center with
        triangle-inequality and principal-subspace pruning) against Anomalib Patchcore's `KCenterGreedy` (random
        projection, plain greedy), one process, one after the other; and the covering radius each coreset achieves
        on all the features (smaller is better).""",
        f"""2. Search: {f" {TIMES} ".join(map(spaced, search["references"]))} random unit vectors,
        {spaced(search["queries"])} queries in one batch, top-1: flat (exact) against IVF and HNSW at several search
        efforts.""",
        command(f"python -m benchmarks.memory_speed --mvtec {MVTEC} --out benchmarks/results/memory_speed.json"),
        machine(("memory_speed.json", result["machine"])),
        table(coreset_header, [coreset_row], "rrrrrrr"),
        table(["index", "build s", "search setting", "ms / query", "recall@1"], search_rows, "lrlrr"),
    )
    return Section("Prototype memory: coreset and search speed", ("memory_speed.json",), body)


def scale_points(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured point of memory_scale.json's runs, by size and bytes per reference."""
    points = (point for run in result["runs"] for point in run["points"])
    return sorted(points, key=lambda p: (p["references"], p["pq_bytes"]))


def memory_scale_section() -> Section:
    result = load("memory_scale.json")
    points = scale_points(result)
    build_rows = [
        [
            spaced(p["references"]),
            p["pq_bytes"],
            megabytes(p["ivfpq_file_bytes"]),
            megabytes(p["flat_vector_bytes"]),
            f"{p['train_seconds']:.1f}",
            f"{p['shards_wall_seconds']:.1f}",
            f"{p['merge_and_save_seconds']:.1f}",
        ]
        for p in points
    ]
    build_header = ["references", "bytes / reference", "memory file, MB", "flat vectors, MB", "train s"]
    build_header += ["shards s (wall)", "merge + save s"]
    search_rows = [
        [
            spaced(p["references"]),
            p["pq_bytes"],
            setting.removeprefix("probes="),
            f"{found['ms_per_query']:.3f}",
            found["recall@10"],
            found["overlap@10"],
        ]
        for p in points
        for setting, found in p["search"].items()
    ]
    settings = result["runs"][0]["settings"]
    body = paragraphs(
        f"""An `ivfpq` `PrototypeMemory` built in shards by separate processes and merged. 128-d references from a
        mixture of 4 096 Gaussian clusters; the memory ({settings["lists"]} lists) is trained on
        {spaced(int(settings["train"]))} of them and saved; {settings["shards"]} worker processes
        ({settings["workers"]} at a time) each load it, add their slice and save; the shards are merged. 1 000
        queries from the same mixture. `recall@10`: share of queries whose exact nearest neighbour is among the 10
        returned; `overlap@10`: mean share of the exact top 10 returned (exact answers from `faiss.knn` over every
        slice). Flat vectors are computed, N {TIMES} 128 {TIMES} 4 bytes, what a flat memory must hold; the memory
        file is measured and includes ids and labels.""",
        command("python -m benchmarks.memory_scale --out benchmarks/results/memory_scale.json"),
        machine(("memory_scale.json", result["machine"]))
        + f" The file holds {len(result['runs'])} runs; its note: {result['note']}. The script's default"
        " `--pq-bytes 16 32 64` now measures all three sizes in one run.",
        table(build_header, build_rows, "rrrrrrr"),
        table(
            ["references", "bytes / reference", "lists probed", "ms / query", "recall@10", "overlap@10"],
            search_rows,
            "rrrrrr",
        ),
        """The codes' precision, not the number of lists probed, limits recall on these clusters; choose `pq_bytes`
        on your own embeddings (the default is about `dim / 2`).""",
    )
    return Section("Prototype memory at millions of references", ("memory_scale.json",), body)


# ----------------------------------------------------------------------------------------------------- assembly

SECTIONS: tuple[Callable[[], Section], ...] = (
    leaderboard_section,
    steps_curve_section,
    validation_choices_section,
    structural_validation_section,
    reverse_validation_section,
    station_naming_section,
    kdad_bottle_section,
    kshot_section,
    inspect_bottle_section,
    inspect_throughput_section,
    engine_speed_section,
    engine_accuracy_section,
    station_loop_section,
    fewshot_neu_section,
    fewshot_mt_section,
    detector_section,
    memory_speed_section,
    memory_scale_section,
)


def benchmarks_readme(sections: Sequence[Section]) -> str:
    """The whole of benchmarks/README.md."""
    head = paragraphs(
        "# Benchmark results",
        f"""Written by `python -m benchmarks.readme` from the result files in [`results/`](results/); do not edit it
        by hand. Every table is rendered from the files named under its section; each section gives the command
        that wrote them and the machine they record. The benchmark scripts are run by hand, not by the tests.
        KDAnomaly's design changed while these files were written, and their commands measure the current
        defaults: the reverse-distillation student chosen in {REVERSE_LINK}, measured by that section's validation
        rows and by the leaderboard's KDAnomaly cells and ablation. The side-by-side timing, the steps curve and the
        station loop measure the design chosen before it in {VALIDATION_LINK} (a forward denoising student from the
        teacher's weights with the segmentation head, a 3x3 positional memory of 512 patches per position at
        weight 0.5); the sections on the validation choices and on defect naming measure each configuration they
        name; the others measured earlier defaults (forward student, memory weight 0.7). KDAnomaly's PyTorch
        inference went channels-last, and later ran its networks with BatchNorm folded into their convolutions:
        the leaderboard's KDAnomaly cells and the side-by-side timing measure both; the engine section's PyTorch
        rows and the `kdanomaly inspect` throughput predate both (the engine section's ONNX and OpenVINO rows do
        not depend on them).""",
        "\n".join(f"- [{section.title}](#{section.anchor})" for section in sections),
    )
    return "\n".join([head + "\n", *(section.markdown() for section in sections)])


def draw_means(report: dict[str, Any], size: str) -> dict[str, float]:
    """Each variant's mean mAP@0.5 over its draws at ``size`` images per class."""
    by_variant: dict[str, list[float]] = {}
    for (k, _, variant), value in map_by_cell(report).items():
        if k == size:
            by_variant.setdefault(variant, []).append(value)
    return {variant: statistics.mean(values) for variant, values in by_variant.items()}


def ablation_means(frame: pd.DataFrame, ablation: Sequence[str]) -> str:
    """Mean image AUROC / pixel AUROC / pixel AUPRO of each memory-off variant that has run on every dataset."""
    datasets = set(frame[frame.model == ablation[-1]].dataset)
    complete = [model for model in ablation[:-1] if set(frame[frame.model == model].dataset) == datasets]
    board = leaderboard(frame[frame.model.isin(complete)])
    return "; ".join(f"{model} {triple(board.loc[model])}" for model in complete)


def summary_rows(links: dict[Callable[[], Section], str]) -> list[list[str]]:
    """The headline figures, each with the link to its section, for README.md."""
    frame = leaderboard_frame()
    ablation, _ = contenders_constants()
    board = leaderboard(frame[~frame.model.isin(ablation[:-1])])
    rival = board.drop(index="KDAnomaly").index[0]
    ours, theirs = board.loc["KDAnomaly"], board.loc[rival]
    kshot = kshot_cells(load("kshot_normal.json")["rows"])
    screening, throughput = load("inspect_bottle.json"), load("inspect_throughput.json")
    engines = load("engine_speed.json")["pipeline"]
    bottle = load("engine_accuracy.json")["datasets"]["bottle"]
    loop = load("station_loop.json")["datasets"]
    speed = load(f"{LEADERBOARD}/speed_ratio.json")
    low, high = screening["interval"]
    neu, tiles = load("fewshot_neu.json")["novel"], load("fewshot_mt.json")["accuracy"]
    small = load("fewshot_neu_small_200px.json")["small"]["recognizer/backbone"]["10/class"]
    flips, novel = load("detect_neu_flips.json"), load("detect_neu.json")["novel"]
    ten, thirty = draw_means(flips, "10"), draw_means(flips, "30")
    coreset = load("memory_speed.json")["coreset"]
    largest = scale_points(load("memory_scale.json"))[-1]
    rate = 100 * float(screening["settings"]["rate"])
    return [
        [
            "Anomaly detection, MPDD metal_plate + MVTec AD bottle, screw + magnetic tiles, mean image AUROC / pixel "
            "AUROC / pixel AUPRO",
            f"KDAnomaly {triple(ours)}; best Anomalib model ({rival}) {triple(theirs)}",
            links[leaderboard_section],
        ],
        [
            "KDAnomaly without its memory, the same four sets: the ablation (the last is the full model's student)",
            ablation_means(frame, ablation),
            links[leaderboard_section],
        ],
        [
            "Inference time, KDAnomaly / Patchcore (10 % coreset), side by side, batch 1 / 16"
            + (" (KDAnomaly's earlier design)" if earlier_design_note(speed) else ""),
            "; ".join(
                f"{dataset} {cell['ratio_Patchcore_batch1']:.2f} / {cell['ratio_Patchcore_batch16']:.2f}"
                for dataset, cell in speed["datasets"].items()
            ),
            links[leaderboard_section],
        ],
        [
            "From 1 good image, MVTec AD bottle, image / pixel AUROC",
            f"KDAnomaly {pair(kshot['bottle', 1, KSHOT])}; Patchcore {pair(kshot['bottle', 1, 'Patchcore'])}",
            links[kshot_section],
        ],
        [
            f"Calibrated screening, MVTec AD bottle, {rate:g} % target false-review rate",
            f"{100 * screening['measured_false_review_rate']:.1f} % of good images reviewed (reported interval "
            f"{100 * low:.2f}-{100 * high:.2f} %); {screening['defective_reviewed']} of "
            f"{screening['defective_images']} defective images reviewed",
            links[inspect_bottle_section],
        ],
        [
            "`kdanomaly inspect`, images per second",
            f"{throughput['pipeline_images_per_second']:.2f}; the model alone "
            f"{throughput['forward_images_per_second']:.2f} ({100 * throughput['pipeline_overhead']:.1f} % overhead)",
            links[inspect_throughput_section],
        ],
        [
            "`kdanomaly inspect` by engine, 256 px, images per second (same run)",
            f"OpenVINO int8 {engines['openvino/int8']['images_per_second']:.2f}; OpenVINO fp32 "
            f"{engines['openvino/fp32']['images_per_second']:.2f}; PyTorch eager "
            f"{engines['torch/fp32']['images_per_second']:.2f}",
            links[engine_speed_section],
        ],
        [
            "int8 and bf16 against PyTorch fp32, MVTec AD bottle, image / pixel AUROC change",
            f"int8 {signed(bottle['openvino/int8']['image_AUROC'] - bottle['torch/fp32']['image_AUROC'])} / "
            f"{signed(bottle['openvino/int8']['pixel_AUROC'] - bottle['torch/fp32']['pixel_AUROC'])}; bf16 "
            f"{signed(bottle['openvino/bf16']['image_AUROC'] - bottle['torch/fp32']['image_AUROC'])} / "
            f"{signed(bottle['openvino/bf16']['pixel_AUROC'] - bottle['torch/fp32']['pixel_AUROC'])}",
            links[engine_accuracy_section],
        ],
        [
            "Station loop, simulated reviewer, round 0 → round "
            f"{len(loop['magnetic_tile']['rounds']) - 1}: good images reviewed / defects reviewed at the calibrated "
            "threshold; good images reviewed at 95 % defect recall",
            "; ".join(
                station_loop_change(name.replace("_", " "), cells["rounds"][0], cells["rounds"][-1])
                for name, cells in loop.items()
            ),
            links[station_loop_section],
        ],
        [
            "Defect types unseen in training, NEU, 5 references per type, accuracy",
            f"recognizer {mean_sd(neu['recognizer/backbone']['k=5'])} %; cross-entropy baseline "
            f"{mean_sd(neu['cross_entropy']['k=5'])} %; ImageNet backbone {mean_sd(neu['pretrained']['k=5'])} %",
            links[fewshot_neu_section],
        ],
        [
            "NEU, 10 training images per class, accuracy",
            f"recognizer {small['accuracy']:.2f} %",
            links[fewshot_neu_section],
        ],
        [
            "Magnetic-tile defect types, recognizer trained on NEU, 5 references per type, accuracy",
            f"NEU recognizer {mean_sd(tiles['recognizer/backbone']['k=5'])} %; ImageNet backbone "
            f"{mean_sd(tiles['pretrained']['k=5'])} %",
            links[fewshot_mt_section],
        ],
        [
            "NEU-DET detector trained on flips, mAP@0.5, mean over draws",
            f"10 / class: full {ten[FULL]:.2f}, plain {ten[PLAIN]:.2f}; 30 / class: full {thirty[FULL]:.2f}, "
            f"plain {thirty[PLAIN]:.2f}",
            links[detector_section],
        ],
        [
            "NEU-DET, 3 types enrolled without retraining, mAP@0.5",
            f"{novel['mAP@0.5']:.2f}",
            links[detector_section],
        ],
        [
            f"Coreset of {spaced(coreset['coreset_size'])} from {spaced(coreset['features'][0])} patches, seconds",
            f"kdanomaly {coreset['kdanomaly_kcenter_seconds']:.2f}; Anomalib {coreset['anomalib_kcenter_seconds']:.2f}",
            links[memory_speed_section],
        ],
        [
            f"Memory of {spaced(largest['references'])} references, {largest['pq_bytes']} bytes each",
            f"{megabytes(largest['ivfpq_file_bytes'])} MB file, recall@10 "
            f"{largest['search']['probes=16']['recall@10']} (16 lists probed)",
            links[memory_scale_section],
        ],
    ]


def with_summary(readme: str, summary: str) -> str:
    """README.md with the text between its results-table markers replaced by ``summary``."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md lacks the markers of its results table:\n{BEGIN}\n{END}")
    return readme[: start + len(BEGIN)] + "\n" + summary + "\n" + readme[end:]


def rendered() -> dict[Path, str]:
    """What benchmarks/README.md and README.md should hold."""
    sections = {function: function() for function in SECTIONS}
    links = {function: f"[{s.title}](benchmarks/README.md#{s.anchor})" for function, s in sections.items()}
    summary = table(["measured", "result", "details"], summary_rows(links))
    return {
        BENCHMARKS_README: benchmarks_readme(list(sections.values())),
        TOP_README: with_summary(TOP_README.read_text(), summary),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write the two files, or with ``--check`` report the stale ones and return 1."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files and write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered().items():
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(str(shown))
        else:
            path.write_text(text)
            print(f"wrote {shown}")
    if stale:
        print(f"{', '.join(stale)}: not what the result files give; run `python -m benchmarks.readme`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
