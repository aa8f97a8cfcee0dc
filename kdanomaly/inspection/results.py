"""The ranked results of a run: ``results.jsonl`` and ``results.csv``, one row per image, highest score first.

Images that could not be read follow the scored ones, each with its error. Both files are rewritten atomically
from the run's journal when a run (or a resumed one) completes.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from kdanomaly.files import write_bytes_atomic

from .journal import Row

CSV_COLUMNS = (
    "rank", "path", "status", "score", "decision", "regions", "types", "largest_region_area", "width", "height",
    "overlay", "thumbnail", "map", "error",
)  # fmt: skip


def ranked(rows: list[Row]) -> list[Row]:
    """Scored rows by descending score (ties by path), then error rows by path; each with its 1-based ``rank``."""
    scored = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (-r["score"], r["path"]))
    failed = sorted((r for r in rows if r["status"] != "ok"), key=lambda r: r["path"])
    return [{"rank": rank, **row} for rank, row in enumerate(scored + failed, start=1)]


def type_counts(row: Row) -> Counter[str]:
    """How many regions of each defect type a row holds (regions without a type are not counted)."""
    return Counter(region["type"] for region in row.get("regions", []) if "type" in region)


def _csv_row(row: Row) -> dict[str, object]:
    regions = row.get("regions", [])
    types = ";".join(f"{name}:{count}" for name, count in sorted(type_counts(row).items()))
    flat = {key: row.get(key, "") for key in CSV_COLUMNS}
    largest = max((region["area"] for region in regions), default="")
    return flat | {
        "regions": len(regions) if row["status"] == "ok" else "",
        "types": types,
        "largest_region_area": largest,
    }


def write_results(out: Path, rows: list[Row]) -> None:
    """Write ``results.jsonl`` and ``results.csv`` of already ranked ``rows`` under ``out``."""
    write_bytes_atomic(out / "results.jsonl", "".join(json.dumps(row) + "\n" for row in rows).encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(_csv_row(row) for row in rows)
    write_bytes_atomic(out / "results.csv", text.getvalue().encode())
