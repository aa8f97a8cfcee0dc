"""The leaderboard on real cells: an interrupted run resumes; one-pass metrics equal Anomalib's test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdanomaly.benchmark.contenders import MODELS, PROFILES, DatasetSpec
from kdanomaly.benchmark.leaderboard import run_leaderboard
from kdanomaly.data.synthetic import generate_synthetic_dataset


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


def test_a_fit_resumed_from_a_checkpoint_continues_its_training(tmp_path: Path) -> None:
    """The steps curve's budgets continue each other: resumed at its own step budget, a fit trains no further and
    evaluates the checkpoint's student; a fresh fit with another seed ends elsewhere."""
    from lightning.pytorch import seed_everything

    from kdanomaly.benchmark.evaluation import fit_and_evaluate

    generate_synthetic_dataset(tmp_path / "data", "weave", image_size=64, n_train=8, n_test_good=2, n_test_per_defect=1)
    dataset = DatasetSpec.parse(f"mvtec:{tmp_path / 'data'}:weave")
    arguments = PROFILES["smoke"].trainer_arguments("KDAnomaly")

    def trained(seed: int, work: str, resume_from: Path | None = None):
        seed_everything(seed)
        model = MODELS["KDAnomaly"](PROFILES["smoke"])
        run = fit_and_evaluate(model, dataset.datamodule(seed), tmp_path / work, resume_from, **arguments)
        return run, model.model.student.state_dict()

    first, first_student = trained(0, "first")
    checkpoint = tmp_path / "first.ckpt"
    first.engine.trainer.save_checkpoint(checkpoint)
    resumed, resumed_student = trained(1, "resumed", checkpoint)
    _, fresh_student = trained(1, "fresh")
    assert resumed.engine.trainer.global_step == first.engine.trainer.global_step == arguments["max_steps"]
    assert all(torch.equal(resumed_student[name], value) for name, value in first_student.items())
    assert not all(torch.equal(fresh_student[name], value) for name, value in first_student.items())
