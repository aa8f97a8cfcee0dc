"""benchmarks/README.md and README.md's results table are what benchmarks/readme.py renders from the result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import readme


def test_the_committed_readmes_are_what_the_generator_writes() -> None:
    for path, text in readme.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run `python -m benchmarks.readme`"


def test_a_table_row_holds_its_result_file_values() -> None:
    result = json.loads((readme.RESULTS / "kshot_normal.json").read_text())
    first = next(row for row in result["rows"] if row["model"] == "KDAnomaly (k-shot)")
    patchcore = next(r for r in result["rows"] if r["model"] == "Patchcore" and r["k"] == first["k"])
    body = readme.kshot_section().body
    row = next(line for line in body.splitlines() if line.startswith(f"| {first['dataset']} | {first['k']} |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2:] == [
        f"{first['image_AUROC']:.4f} / {first['pixel_AUROC']:.4f}",
        f"{patchcore['image_AUROC']:.4f} / {patchcore['pixel_AUROC']:.4f}",
        f"{first['train_seconds']:.1f}",
        f"{patchcore['train_seconds']:.1f}",
    ]


def test_a_table_follows_its_file(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = readme.load

    def changed(name: str) -> dict[str, Any]:
        result = stored(name)
        return result | {"pipeline_images_per_second": 1.23} if name == "inspect_throughput.json" else result

    monkeypatch.setattr(readme, "load", changed)
    row = readme.inspect_throughput_section().body.splitlines()[-1]
    assert "| 1.23 |" in row


def test_check_reports_a_stale_file_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "README.md"
    stale.write_text("| an old table |\n")
    monkeypatch.setattr(readme, "BENCHMARKS_README", stale)
    assert readme.main(["--check"]) == 1
    assert str(stale) in capsys.readouterr().out
    assert stale.read_text() == "| an old table |\n"


def test_timings_of_another_design_than_the_default_are_flagged() -> None:
    from kdanomaly.models.kdad.lightning_model import DEFAULT_DISTILLATION

    window, size = readme.default_memory()
    current = {"KDAnomaly_memory_size": size, "KDAnomaly_memory_window": window,
               "KDAnomaly_distillation": DEFAULT_DISTILLATION}  # fmt: skip
    timed = {"datasets": {"a": dict(current), "b": dict(current)}}
    assert readme.earlier_design_note(timed) == ""
    timed["datasets"]["b"]["KDAnomaly_memory_size"] = size // 4
    assert f"{size // 4} patches per position" in readme.earlier_design_note(timed)
    # Timed before the window and the student were recorded: window 1, the forward student.
    timed["datasets"]["b"] = {"KDAnomaly_memory_size": size}
    note = " ".join(readme.earlier_design_note(timed).split())
    assert f"with a forward student, 1{readme.TIMES}1 window, {size} patches" in note
    assert f"default (a {DEFAULT_DISTILLATION} student, a {window}{readme.TIMES}{window} window, {size}" in note
    timed["datasets"]["b"] = dict(current, KDAnomaly_distillation="forward")
    assert "forward student" in readme.earlier_design_note(timed)


def _validation_row(dataset: str, memory: tuple[int, int], weight: float, value: float) -> dict[str, str]:
    return {"configuration": "a", "dataset": dataset, "memory_window": str(memory[0]), "memory_size": str(memory[1]),
            "memory_weight": str(weight), "image_AUROC": str(value), "pixel_AUROC": str(value),
            "pixel_AUPRO": str(value)}  # fmt: skip


def test_a_memory_table_shows_the_distillation_alone_once_then_positional_then_global_memories() -> None:
    rows = [
        _validation_row(dataset, memory, weight, value)
        for dataset in ("x", "y")
        for memory, weight, value in [((0, 10), 0.0, 0.5), ((0, 10), 0.5, 0.6), ((3, 512), 0.0, 0.5),
                                      ((3, 512), 0.5, 0.8), ((1, 512), 0.0, 0.5), ((1, 512), 0.5, 0.7)]
    ] + [_validation_row("x", (5, 128), 0.5, 0.9)]  # fmt: skip  # run on one data set only: left out
    table = readme.memory_table(rows, ["x", "y"])
    assert [row[:3] for row in table] == [["none", "", "0"], ["1x1", "512", "0.5"], ["3x3", "512", "0.5"],
                                          ["global", "10 %", "0.5"]]  # fmt: skip
    assert [row[-1] for row in table] == ["0.5000", "0.7000", "0.8000", "0.6000"]
