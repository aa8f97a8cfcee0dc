"""The leaderboard's result writer, its resume, and the dataset specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdanomaly.benchmark.contenders import MODELS, PROFILES, TRAINABLE, DatasetSpec, expand_datasets
from kdanomaly.benchmark.leaderboard import run_leaderboard
from kdanomaly.benchmark.results_table import COLUMNS, ResultsTable, leaderboard, to_markdown, to_png
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
    """Real cells (Padim; KDAnomaly with its distillation-only row) on tiny synthetic data, smoke profile;
    the second run finds them done."""
    generate_synthetic_dataset(tmp_path / "data", "weave", image_size=64, n_train=8, n_test_good=4, n_test_per_defect=2)
    dataset = DatasetSpec.parse(f"mvtec:{tmp_path / 'data'}:weave")
    out = tmp_path / "board"
    first = run_leaderboard(["Padim", "KDAnomaly"], [dataset], "smoke", 0, out)
    expected = {(model, "weave", "smoke", "0") for model in ("Padim", "KDAnomaly", "KDAnomaly+SimAM+SSPCAB")}
    assert first.finished() == expected
    rows = {row["model"]: row for row in first.rows()}
    assert all(0.0 <= float(row["pixel_AUROC"]) <= 1.0 and float(row["peak_rss_mb"]) > 100 for row in rows.values())
    assert rows["KDAnomaly"]["train_seconds"] == rows["KDAnomaly+SimAM+SSPCAB"]["train_seconds"]  # one training
    assert rows["KDAnomaly"]["pixel_AUROC"] != rows["KDAnomaly+SimAM+SSPCAB"]["pixel_AUROC"]  # memory on / off
    modified = (out / "results.csv").stat().st_mtime_ns
    again = run_leaderboard(["Padim", "KDAnomaly"], [dataset], "smoke", 0, out)  # would raise "already in" if re-run
    assert len(again.rows()) == 3
    assert (out / "results.csv").stat().st_mtime_ns == modified
    report = (out / "leaderboard.md").read_text()
    assert "| Padim |" in report and "Ablation (same run)" in report and "ReverseDistillation: not run here" in report


def test_profiles_give_every_trainable_model_the_same_budget_and_validate_once() -> None:
    for profile in PROFILES.values():
        budgets = {tuple(sorted(profile.trainer_arguments(model).items())) for model in TRAINABLE}
        assert len(budgets) == 1, profile.name
        for model in MODELS:
            assert profile.trainer_arguments(model)["check_val_every_n_epoch"] >= 1_000_000
        assert profile.trainer_arguments("Padim")["max_epochs"] == 1
    assert PROFILES["cpu"].trainer_arguments("Stfpm")["max_steps"] == 100
    assert PROFILES["full"].trainer_arguments("Stfpm")["max_epochs"] == 100
    assert PROFILES["full"].coreset_sampling_ratio == 0.1


def test_all_mvtec_categories_expand_and_other_specs_pass_through() -> None:
    specs = expand_datasets([DatasetSpec.parse("mvtec:/d:all"), DatasetSpec.parse("magnetic_tile:/t")])
    assert len(specs) == 16
    assert [spec.category for spec in specs[:3]] == ["bottle", "cable", "capsule"]
    assert specs[-1].name == "magnetic_tile"


def test_benchmark_command_shows_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from kdanomaly.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["benchmark", "--help"])
    assert exit_info.value.code == 0
    assert "--profile" in capsys.readouterr().out


def test_one_pass_metrics_equal_anomalib_test_and_other_splits_use_it(tmp_path: Path) -> None:
    """The cell scores the validation pass's outputs; that must give Engine.test's numbers when val == test."""
    from anomalib.data import Folder
    from anomalib.engine import Engine

    from kdanomaly.benchmark.evaluation import ValidationOutputs, evaluate, same_images

    generate_synthetic_dataset(tmp_path / "data", "weave", image_size=64, n_train=8, n_test_good=6, n_test_per_defect=3)
    datamodule = DatasetSpec.parse(f"mvtec:{tmp_path / 'data'}:weave").datamodule(seed=0)
    model = MODELS["Padim"](PROFILES["smoke"])
    outputs = ValidationOutputs()
    engine = Engine(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, callbacks=[outputs],
                    default_root_dir=tmp_path / "runs", **PROFILES["smoke"].trainer_arguments("Padim"))  # fmt: skip
    engine.fit(model, datamodule=datamodule)
    one_pass = evaluate(engine, model, datamodule, outputs)
    assert same_images(datamodule) and len(outputs.batches) > 0
    anomalib_test = engine.test(model, datamodule=datamodule, verbose=False)[0]
    assert one_pass.keys() == anomalib_test.keys()
    assert one_pass == pytest.approx(anomalib_test, abs=1e-6)
    folder = Folder(
        name="weave", root=tmp_path / "data" / "weave", normal_dir="train/good", abnormal_dir="test/scratch"
    )
    folder.setup()
    assert not same_images(folder)  # Folder validates on half the test split: scored by Engine.test instead
