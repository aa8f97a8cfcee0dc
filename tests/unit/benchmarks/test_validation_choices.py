"""The rule that picks KDAnomaly's defaults from the validation rows."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from benchmarks.validation_choices import CONFIGURATIONS, build_memory, choose, parse_memory
from kdanomaly import KDAnomaly
from kdanomaly.benchmark.contenders import DatasetSpec
from kdanomaly.models.kdad.kshot_memory import KShotMemory
from kdanomaly.models.kdad.positional_memory import PositionalMemory


def _row(
    configuration: str, dataset: str, weight: float, statistics: str, value: float, memory: str = "1x128"
) -> dict[str, str]:
    metrics = {"image_AUROC": value, "pixel_AUROC": value, "pixel_AUPRO": value}
    window, size = memory.split("x")
    return {"configuration": configuration, "dataset": dataset, "memory_weight": str(weight),
            "fusion_statistics": statistics, "memory_window": window, "memory_size": size,
            **{k: str(v) for k, v in metrics.items()}}  # fmt: skip


def test_design_is_chosen_on_the_distillation_map_alone_then_the_fusion_for_it() -> None:
    rows = [
        # "a" is the better student-teacher (weight 0) on average; "b" fuses better but is not chosen for that.
        _row("a", "x", 0.0, "pixels", 0.9), _row("a", "y", 0.0, "pixels", 0.8),
        _row("b", "x", 0.0, "pixels", 0.95), _row("b", "y", 0.0, "pixels", 0.7),
        _row("a", "x", 0.5, "pixels", 0.91), _row("a", "y", 0.5, "pixels", 0.85),
        _row("a", "x", 0.5, "image_max", 0.93), _row("a", "y", 0.5, "image_max", 0.84),
        _row("b", "x", 0.5, "pixels", 0.99), _row("b", "y", 0.5, "pixels", 0.99),
    ]  # fmt: skip
    assert choose(rows) == ("a", 0.5, "image_max", (1, 128))


def test_the_memory_is_chosen_with_its_weight_by_the_mean_over_datasets() -> None:
    rows = [
        _row("a", "x", 0.0, "image_max", 0.8), _row("a", "y", 0.0, "image_max", 0.8),
        # 3x128 wins on x alone, 5x128 on the mean over x and y; the weight goes with the memory.
        _row("a", "x", 0.5, "image_max", 0.99, "3x128"), _row("a", "y", 0.5, "image_max", 0.7, "3x128"),
        _row("a", "x", 0.7, "image_max", 0.9, "5x128"), _row("a", "y", 0.7, "image_max", 0.9, "5x128"),
        _row("a", "x", 0.5, "image_max", 0.85, "5x128"), _row("a", "y", 0.5, "image_max", 0.85, "5x128"),
    ]  # fmt: skip
    assert choose(rows) == ("a", 0.7, "image_max", (5, 128))


def test_a_memory_is_written_window_x_size_or_global_percent() -> None:
    assert parse_memory("3x256") == (3, 256)
    assert parse_memory("global:10") == (0, 10)
    assert isinstance(build_memory((0, 10)), KShotMemory) and build_memory((0, 10)).coreset_ratio == 0.1
    assert isinstance(build_memory((3, 256)), PositionalMemory)
    for bad in ("3-256", "2x128", "0x50", "global:0", "global:150", "3x256x1"):
        with pytest.raises(argparse.ArgumentTypeError, match="WINDOWxSIZE"):
            parse_memory(bad)


def test_configurations_run_on_different_datasets_are_not_compared() -> None:
    rows = [_row("a", "x", 0.0, "pixels", 0.9), _row("b", "y", 0.0, "pixels", 0.8)]
    with pytest.raises(ValueError, match="same datasets"):
        choose(rows)


@pytest.mark.parametrize("name", list(CONFIGURATIONS))
def test_each_configuration_builds_the_design_its_name_says_whatever_the_defaults(name: str) -> None:
    model = KDAnomaly(**CONFIGURATIONS[name], evaluator=False, visualizer=False)
    assert (model.synthetic_anomalies is not None) == ("denoising" in name)
    assert (model.model.segmentation_head is not None) == ("segmentation" in name)
    assert model.model.distillation == ("reverse" if "reverse" in name else "forward")
    if "reverse" in name:
        assert (model.learning_rate, model.betas) == (5e-3, (0.5, 0.999)), "RD4AD's published optimiser"
        return
    student, teacher = model.model.student.model, model.model.teacher.model
    first_student, first_teacher = next(student.parameters()), next(teacher.parameters())
    assert torch.equal(first_student, first_teacher) == ("pretrained" in name)
    assert model.learning_rate == (1e-3 if "pretrained" in name else 1e-2)


def test_a_run_skips_its_finished_cells_and_only_those(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blended and warped defects of one data set can share a CSV: a cell is finished per validation set."""
    import sys

    from benchmarks import validation_choices

    trained: list[tuple[str, str]] = []

    def fake_run(configuration: str, spec: DatasetSpec, steps: int, weights: list[float], fusions: list) -> list:
        trained.append((configuration, spec.name))
        return [
            {**_row(configuration, spec.name, weight, fusion[0], 0.5), "steps": steps, "memory_window": fusion[1][0],
             "memory_size": fusion[1][1], "train_seconds": 1.0, "machine": "test"}
            for fusion in fusions for weight in weights
        ]  # fmt: skip

    monkeypatch.setattr(validation_choices, "run", fake_run)
    monkeypatch.setattr(
        validation_choices, "validation_set", lambda spec, work, defects="blend": DatasetSpec(
            "folder", work, spec.name if defects == "blend" else f"{spec.name}-{defects}"
        )
    )  # fmt: skip
    out = tmp_path / "rows.csv"

    def main(defects: str) -> None:
        arguments = ["--datasets", "folder:/data/screw", "--configurations", "reverse", "--work", str(tmp_path),
                     "--out", str(out), "--defects", defects, "--memory-weights", "0", "0.5"]  # fmt: skip
        monkeypatch.setattr(sys, "argv", ["validation_choices", *arguments])
        validation_choices.main()

    main("blend")
    main("warp")
    main("blend")
    main("warp")
    assert trained == [("reverse", "screw"), ("reverse", "screw-warp")]
    assert len(out.read_text().splitlines()) == 1 + 2 * 2 * 2  # header; sets x statistics x weights
