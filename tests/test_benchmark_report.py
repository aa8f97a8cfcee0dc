"""Resuming a benchmark result file: only with the same settings; the parts run so far are kept and recorded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from benchmarks.report import continued_report, run_header


def _header(steps: int, variants: list[str], sizes: list[str]) -> dict:
    return run_header(argparse.Namespace(steps=steps, variants=variants, sizes=sizes, out="x.json", resume=True))


def test_a_resumed_report_keeps_the_stored_results_and_records_every_part_run(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    fresh = _header(1000, ["full"], ["30"])
    assert continued_report(out, fresh, {"variants": ["plain", "full"], "sizes": None}) is fresh
    out.write_text(json.dumps(_header(1000, ["full", "plain"], ["10"]) | {"supervised": {"10/class": {"plain": 1}}}))
    continued = continued_report(out, fresh, {"variants": ["plain", "full"], "sizes": None})
    assert continued["supervised"] == {"10/class": {"plain": 1}}
    assert continued["settings"]["variants"] == "['plain', 'full']"  # the given order
    assert continued["settings"]["sizes"] == "['10', '30']"  # stored first, then the new


def test_a_report_made_with_other_settings_is_not_resumed(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    out.write_text(json.dumps(_header(400, ["full"], ["10"])))
    with pytest.raises(SystemExit, match=r"other settings \(\['steps'\]\)"):
        continued_report(out, _header(1000, ["full"], ["10"]), {"variants": None, "sizes": None})


def test_detector_tables_order_sizes_average_a_variant_over_its_draws_and_pair_it_with_plain() -> None:
    from benchmarks.detect_neu_table import CLASSES, cell_rows, draw_rows

    def cell(score: float) -> dict:
        timing = {"parameters": 1234567, "train_seconds": 10.0, "inference_ms_per_image": 5.0}
        return {"mAP@0.5": score} | dict.fromkeys(CLASSES, 1.0) | timing

    report = {
        "supervised": {
            "full": {"plain": cell(70.0)},
            "10/class": {"+ghost_fpn": cell(31.0), "plain": cell(30.0)},
            "10/class, draw 2": {"+ghost_fpn": cell(33.0), "plain": cell(34.0)},
            "10/class, draw 3": {"+ghost_fpn": cell(40.0)},
            "5/class": {"plain": cell(20.0)},
        }
    }
    assert [row.split(" | ")[0] for row in cell_rows(report)] == ["| 5", "| 10", "| 10", "| full"]
    assert "| 1 234 567 |" in cell_rows(report)[0]
    assert draw_rows(report, seed=0) == [
        "| 10 | plain: standard FPN, no deformable, no contrastive | 30.00, 34.00 | 32.00 ± 2.83 | — |",
        "| 10 | + deformable + Ghost FPN | 31.00, 33.00, 40.00 | 34.67 ± 4.73 | +1.00, -1.00 (mean +0.00) |",
    ]
