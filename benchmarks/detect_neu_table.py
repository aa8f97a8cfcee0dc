"""README tables of a ``detect_neu`` result file: every cell of the split seed's draw; each variant's mAP per draw
and its difference to plain on the same draws.

python -m benchmarks.detect_neu_table benchmarks/results/detect_neu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

CLASSES = ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
LABELS = {
    "plain": "plain: standard FPN, no deformable, no contrastive",
    "+deformable": "+ deformable last stage",
    "+ghost_fpn": "+ deformable + Ghost FPN",
    "+contrastive (full)": "+ deformable + Ghost FPN + contrastive (full)",
}


def _thousands(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def _size_and_draw(key: str) -> tuple[str, int | None]:
    """``"30/class, draw 1"`` → ``("30", 1)``; the split seed's cells (no draw named) → ``(size, None)``."""
    size, _, draw = key.partition(", draw ")
    return size.removesuffix("/class"), int(draw) if draw else None


def _by_size(report: dict) -> list[tuple[str, int | None, dict]]:
    """``(size, draw, cells)`` of the supervised cells, smallest k first, the full split last."""
    cells = [(*_size_and_draw(key), cells) for key, cells in report["supervised"].items()]
    return sorted(cells, key=lambda c: (c[0] == "full", int(c[0]) if c[0] != "full" else 0, c[1] or 0))


def cell_rows(report: dict) -> list[str]:
    """One Markdown row per variant of each size, the split seed's draw only, in the order of ``LABELS``."""
    rows = []
    for size, draw, cells in _by_size(report):
        for name in (name for name in LABELS if name in cells and draw is None):
            cell = cells[name]
            values = [f"{cell['mAP@0.5']:.2f}", *(f"{cell[c]:.2f}" for c in CLASSES), _thousands(cell["parameters"])]
            values += [f"{cell['train_seconds']:.0f}", f"{cell['inference_ms_per_image']:.1f}"]
            rows.append(f"| {size} | {LABELS[name]} | " + " | ".join(values) + " |")
    return rows


def _minus_plain(scores: dict[int, float], plain: dict[int, float]) -> str:
    """A variant's mAP minus plain's on each draw both ran (same k images, same seed), and their mean; — if none."""
    shared = sorted(scores.keys() & plain.keys())
    if not shared:
        return "—"
    gains = [scores[d] - plain[d] for d in shared]
    return ", ".join(f"{g:+.2f}" for g in gains) + f" (mean {statistics.mean(gains):+.2f})"


def draw_rows(report: dict, seed: int) -> list[str]:
    """Per size and variant run on more than one draw (sizes as in the cell table, variants in ``LABELS``' order):
    mAP@0.5 of every draw, their mean and standard deviation, and the difference to plain draw by draw."""
    by_variant: dict[tuple[str, str], dict[int, float]] = {}
    for size, draw, cells in _by_size(report):
        for name, cell in cells.items():
            by_variant.setdefault((size, name), {})[seed if draw is None else draw] = cell["mAP@0.5"]
    sizes = list(dict.fromkeys(size for size, _ in by_variant))
    rows = []
    for (size, name), scores in sorted(
        by_variant.items(), key=lambda i: (sizes.index(i[0][0]), list(LABELS).index(i[0][1]))
    ):
        if len(scores) > 1:
            per_draw = ", ".join(f"{scores[d]:.2f}" for d in sorted(scores))
            mean, spread = statistics.mean(scores.values()), statistics.stdev(scores.values())
            gain = "—" if name == "plain" else _minus_plain(scores, by_variant.get((size, "plain"), {}))
            rows.append(f"| {size} | {LABELS[name]} | {per_draw} | {mean:.2f} ± {spread:.2f} | {gain} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    report = json.loads(parser.parse_args().report.read_text())
    print("\n".join(cell_rows(report)), "", "\n".join(draw_rows(report, int(report["settings"]["seed"]))), sep="\n")


if __name__ == "__main__":
    main()
