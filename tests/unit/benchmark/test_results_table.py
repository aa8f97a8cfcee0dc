"""The leaderboard's result table: rows survive a reopen, a cell is written once, ranking and rendering."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdanomaly.benchmark.results_table import COLUMNS, ResultsTable, leaderboard, to_markdown, to_png


def _row(model: str, dataset: str, image: float, pixel: float, aupro: float = 0.5) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, 1)
    return {**row, "model": model, "dataset": dataset, "profile": "cpu", "seed": 0, "image_AUROC": image,
            "pixel_AUROC": pixel, "pixel_AUPRO": aupro, "backbone": "b", "machine": "m"}  # fmt: skip


def test_rows_survive_a_reopen_and_a_cell_is_written_once(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path / "results.csv")
    table.append(_row("A", "bottle", 0.9, 0.8))
    table.append(_row("B", "bottle", 0.7, 0.95))
    reopened = ResultsTable(tmp_path / "results.csv")
    assert reopened.finished() == {("A", "bottle", "cpu", "0"), ("B", "bottle", "cpu", "0")}
    assert reopened.frame()["pixel_AUROC"].tolist() == [0.8, 0.95]
    with pytest.raises(ValueError, match="already in"):
        reopened.append(_row("A", "bottle", 0.1, 0.1))
    with pytest.raises(ValueError, match="lacks columns"):
        reopened.append({"model": "C"})
    assert len(reopened.rows()) == 2


def test_leaderboard_ranks_by_mean_pixel_auroc_and_renders(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path / "results.csv")
    for model, scores in {"A": [(1.0, 0.90, 0.8), (0.9, 0.90, 0.6)], "B": [(0.8, 0.99, 0.9), (0.8, 0.97, 0.9)]}.items():
        for dataset, (image, pixel, aupro) in zip(["bottle", "tile"], scores, strict=True):
            table.append(_row(model, dataset, image, pixel, aupro))
    board = leaderboard(table.frame())
    assert board.index.tolist() == ["B", "A"]
    assert board.loc["A", "mean image"] == pytest.approx(0.95)
    assert board.loc["B", "tile pixel"] == pytest.approx(0.97)
    assert board.loc["A", "mean AUPRO"] == pytest.approx(0.7) and board.loc["A", "tile AUPRO"] == pytest.approx(0.6)
    assert list(board.columns[:2]) == ["bottle image", "tile image"]
    markdown = to_markdown(table.frame())
    assert markdown.splitlines()[2].startswith("| B | ")
    to_png(table.frame(), tmp_path / "board.png")
    assert (tmp_path / "board.png").read_bytes()[:4] == b"\x89PNG"
