"""``report.html``: a static review page that opens from disk with no server.

Summary, score histogram with the threshold, defect-type counts, and the review queue (rank, thumbnail, overlay,
score, decision, regions, types) sortable by clicking a column header. Images are linked by relative paths.
"""

from __future__ import annotations

import html
from collections import Counter
from pathlib import Path
from urllib.parse import quote

import numpy as np

from kdanomaly.files import write_bytes_atomic

from .journal import Row
from .results import type_counts

HISTOGRAM_BINS = 30
SVG_WIDTH, SVG_HEIGHT, MARGIN = 640, 180, 30

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:middle}
th.sortable{cursor:pointer;user-select:none}th.sortable:hover{background:#eef}
tr.review td.decision{color:#b00;font-weight:bold}tr.error td{color:#777}
img.thumb{max-width:120px;max-height:120px}.summary span{margin-right:1.5em}
"""

SORT_SCRIPT = """
document.querySelectorAll('#queue th.sortable').forEach(function (header, column) {
  header.addEventListener('click', function () {
    var body = document.querySelector('#queue tbody');
    var rows = Array.from(body.rows);
    var ascending = header.dataset.order !== 'asc';
    var index = header.cellIndex;
    rows.sort(function (a, b) {
      var x = a.cells[index].dataset.value, y = b.cells[index].dataset.value;
      var nx = parseFloat(x), ny = parseFloat(y);
      var order = (isNaN(nx) || isNaN(ny)) ? x.localeCompare(y) : nx - ny;
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    header.dataset.order = ascending ? 'asc' : 'desc';
  });
});
"""


def histogram_svg(scores: list[float], threshold: float) -> str:
    """An inline SVG histogram of ``scores`` with a red line at ``threshold``."""
    if not scores:
        return "<p>No image was scored.</p>"
    low, high = min(*scores, threshold), max(*scores, threshold)
    high = high if high > low else low + 1.0
    counts, edges = np.histogram(scores, bins=HISTOGRAM_BINS, range=(low, high))
    plot_width, plot_height = SVG_WIDTH - 2 * MARGIN, SVG_HEIGHT - 2 * MARGIN
    bar_width = plot_width / HISTOGRAM_BINS
    tallest = max(int(counts.max()), 1)
    bars = []
    for index, count in enumerate(counts):
        height = plot_height * count / tallest
        above = edges[index] >= threshold
        bars.append(
            f'<rect x="{MARGIN + index * bar_width:.1f}" y="{MARGIN + plot_height - height:.1f}" '
            f'width="{bar_width - 1:.1f}" height="{height:.1f}" fill="{"#d66" if above else "#88a"}">'
            f"<title>{edges[index]:.4g} to {edges[index + 1]:.4g}: {count}</title></rect>"
        )
    line_x = MARGIN + plot_width * (threshold - low) / (high - low)
    return (
        f'<svg id="histogram" width="{SVG_WIDTH}" height="{SVG_HEIGHT}" role="img" aria-label="score histogram">'
        + "".join(bars)
        + f'<line x1="{line_x:.1f}" x2="{line_x:.1f}" y1="{MARGIN - 10}" y2="{MARGIN + plot_height}" stroke="red" '
        f'stroke-width="2"/><text x="{line_x + 4:.1f}" y="{MARGIN - 12}" fill="red" font-size="12">threshold '
        f"{threshold:.4g}</text>"
        f'<text x="{MARGIN}" y="{SVG_HEIGHT - 8}" font-size="12">{low:.4g}</text>'
        f'<text x="{SVG_WIDTH - MARGIN}" y="{SVG_HEIGHT - 8}" font-size="12" text-anchor="end">{high:.4g}</text></svg>'
    )


def _cell(value: object, shown: str | None = None, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    text = html.escape(str(value))
    return f'<td{klass} data-value="{text}">{shown if shown is not None else text}</td>'


def _image_link(relative: str | None, css: str = "thumb") -> str:
    if not relative:
        return ""
    url = quote(relative)
    return f'<a href="{url}"><img class="{css}" src="{url}" loading="lazy" alt=""></a>'


def _queue_row(row: Row) -> str:
    if row["status"] != "ok":
        cells = [_cell(row["rank"]), _cell(""), _cell(""), _cell(row["path"]), _cell("", "-"), _cell("error")]
        cells += [_cell(""), _cell(row.get("error", ""))]
        return f'<tr class="error" data-row="{row["rank"]}">{"".join(cells)}</tr>'
    types = ", ".join(f"{name} x{count}" for name, count in sorted(type_counts(row).items()))
    cells = [
        _cell(row["rank"]),
        _cell(row["rank"], _image_link(row.get("thumbnail"))),
        _cell(row["rank"], _image_link(row.get("overlay"))),
        _cell(row["path"]),
        _cell(f"{row['score']:.6g}"),
        _cell(row["decision"], css="decision"),
        _cell(len(row.get("regions", []))),
        _cell(types),
    ]
    return f'<tr class="{row["decision"]}" data-row="{row["rank"]}">{"".join(cells)}</tr>'


def render_report(rows: list[Row], threshold: float, title: str, notes: list[str]) -> str:
    """The page for ranked ``rows``; ``notes`` are extra summary lines (model, calibration)."""
    scored = [row for row in rows if row["status"] == "ok"]
    decisions = Counter(row["decision"] for row in scored)
    types: Counter[str] = sum((type_counts(row) for row in scored), Counter())
    summary = [
        f"<span>{len(rows)} images</span>",
        f"<span>{decisions['review']} to review</span>",
        f"<span>{decisions['pass']} passed</span>",
        f"<span>{len(rows) - len(scored)} unreadable</span>",
    ]
    type_rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{count}</td></tr>" for name, count in types.most_common())
    type_table = "<p>No typed regions.</p>"
    if types:
        type_table = f"<table id='types'><tr><th>type</th><th>regions</th></tr>{type_rows}</table>"
    headers = ["rank", "thumbnail", "overlay", "path", "score", "decision", "regions", "types / error"]
    head = "".join(f'<th class="sortable">{name}</th>' for name in headers)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="summary">{"".join(summary)}</p>
{"".join(f"<p>{html.escape(note)}</p>" for note in notes)}
<h2>Scores</h2>
{histogram_svg([row["score"] for row in scored], threshold)}
<h2>Defect types</h2>
{type_table}
<h2>Review queue</h2>
<table id="queue"><thead><tr>{head}</tr></thead>
<tbody>
{"".join(_queue_row(row) + chr(10) for row in rows)}</tbody></table>
<script>{SORT_SCRIPT}</script>
</body></html>
"""


def write_report(out: Path, rows: list[Row], threshold: float, notes: list[str]) -> Path:
    """Write ``report.html`` under ``out`` atomically; its path."""
    path = out / "report.html"
    write_bytes_atomic(path, render_report(rows, threshold, f"Inspection of {len(rows)} images", notes).encode())
    return path
