"""The rule that picks KDAnomaly's defaults from the validation rows."""

from __future__ import annotations

import pytest

from benchmarks.validation_choices import choose


def _row(configuration: str, dataset: str, weight: float, statistics: str, value: float) -> dict[str, str]:
    metrics = {"image_AUROC": value, "pixel_AUROC": value, "pixel_AUPRO": value}
    return {"configuration": configuration, "dataset": dataset, "memory_weight": str(weight),
            "fusion_statistics": statistics, **{k: str(v) for k, v in metrics.items()}}  # fmt: skip


def test_design_is_chosen_on_the_distillation_map_alone_then_the_fusion_for_it() -> None:
    rows = [
        # "a" is the better student-teacher (weight 0) on average; "b" fuses better but is not chosen for that.
        _row("a", "x", 0.0, "pixels", 0.9), _row("a", "y", 0.0, "pixels", 0.8),
        _row("b", "x", 0.0, "pixels", 0.95), _row("b", "y", 0.0, "pixels", 0.7),
        _row("a", "x", 0.5, "pixels", 0.91), _row("a", "y", 0.5, "pixels", 0.85),
        _row("a", "x", 0.5, "image_max", 0.93), _row("a", "y", 0.5, "image_max", 0.84),
        _row("b", "x", 0.5, "pixels", 0.99), _row("b", "y", 0.5, "pixels", 0.99),
    ]  # fmt: skip
    assert choose(rows) == ("a", 0.5, "image_max")


def test_configurations_run_on_different_datasets_are_not_compared() -> None:
    rows = [_row("a", "x", 0.0, "pixels", 0.9), _row("b", "y", 0.0, "pixels", 0.8)]
    with pytest.raises(ValueError, match="same datasets"):
        choose(rows)
