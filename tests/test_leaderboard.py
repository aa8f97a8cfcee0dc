"""The leaderboard's result writer, its resume, and the dataset specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.contenders import DatasetSpec
from benchmarks.leaderboard import run_leaderboard
from benchmarks.results_table import COLUMNS, ResultsTable, leaderboard, to_markdown, to_png
from kdanomaly.data.synthetic import generate_synthetic_dataset


def _row(model: str, dataset: str, image: float, pixel: float) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(COLUMNS, 1)
    return {**row, "model": model, "dataset": dataset, "profile": "cpu", "seed": 0, "image_AUROC": image,
            "pixel_AUROC": pixel, "backbone": "b", "machine": "m"}  # fmt: skip


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
    for model, scores in {"A": [(1.0, 0.90), (0.9, 0.90)], "B": [(0.8, 0.99), (0.8, 0.97)]}.items():
        for dataset, (image, pixel) in zip(["bottle", "tile"], scores, strict=True):
            table.append(_row(model, dataset, image, pixel))
    board = leaderboard(table.frame())
    assert board.index.tolist() == ["B", "A"]
    assert board.loc["A", "mean image"] == pytest.approx(0.95)
    assert board.loc["B", "tile pixel"] == pytest.approx(0.97)
    markdown = to_markdown(table.frame())
    assert markdown.splitlines()[2].startswith("| B | ")
    to_png(table.frame(), tmp_path / "board.png")
    assert (tmp_path / "board.png").read_bytes()[:4] == b"\x89PNG"


def test_dataset_specs_parse_and_bad_ones_are_rejected() -> None:
    spec = DatasetSpec.parse("mvtec:/data/mvtec:bottle")
    assert (spec.kind, spec.root, spec.category, spec.name) == ("mvtec", Path("/data/mvtec"), "bottle", "bottle")
    assert DatasetSpec.parse(spec.spec) == spec
    assert DatasetSpec.parse("magnetic_tile:/data/mt").name == "magnetic_tile"
    for bad in ["mvtec:/data", "tiles:/x", "folder:", "magnetic_tile:/x:extra"]:
        with pytest.raises(ValueError, match="bad dataset"):
            DatasetSpec.parse(bad)


def test_interrupted_run_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    """A real cell (Padim, smoke profile) on tiny synthetic data; the second run finds it done."""
    generate_synthetic_dataset(tmp_path / "data", "weave", image_size=64, n_train=8, n_test_good=4, n_test_per_defect=2)
    dataset = DatasetSpec.parse(f"mvtec:{tmp_path / 'data'}:weave")
    out = tmp_path / "board"
    first = run_leaderboard(["Padim"], [dataset], "smoke", 0, out)
    assert first.finished() == {("Padim", "weave", "smoke", "0")}
    row = first.rows()[0]
    assert 0.0 <= float(row["pixel_AUROC"]) <= 1.0
    assert float(row["peak_rss_mb"]) > 100
    modified = (out / "results.csv").stat().st_mtime_ns
    again = run_leaderboard(["Padim"], [dataset], "smoke", 0, out)  # would raise "already in" if it re-ran
    assert len(again.rows()) == 1
    assert (out / "results.csv").stat().st_mtime_ns == modified
    assert "| Padim |" in (out / "leaderboard.md").read_text()
