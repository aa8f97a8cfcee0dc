"""The NEU-DET detector tables: sizes in order, a variant averaged over its draws and paired with plain."""

from __future__ import annotations


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
