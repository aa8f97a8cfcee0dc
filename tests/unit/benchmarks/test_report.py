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
