"""The command lines users type: Anomalib's CLI with our model by short name and from our config."""

from __future__ import annotations

from pathlib import Path

from conftest import CATEGORY

from kdanomaly.cli import main

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


def test_train_from_the_shipped_config(synthetic_root: Path, tmp_path: Path) -> None:
    main(
        [
            "train",
            "-c",
            str(REPO / "configs" / "kdanomaly" / "mvtec.yaml"),
            "--data.root",
            str(synthetic_root),
            "--data.category",
            CATEGORY,
            "--data.num_workers",
            "0",
            "--model.use_sspcab",
            "false",
            "--trainer.limit_test_batches",
            "1",
            "--default_root_dir",
            str(tmp_path),
            *QUICK,
        ]
    )
    assert list(tmp_path.rglob("model.ckpt"))


def test_short_model_name_fit_then_onnx_export(synthetic_root: Path, tmp_path: Path) -> None:
    common = ["--model", "KDAnomaly", "--default_root_dir", str(tmp_path)]
    main(
        [
            "fit",
            *common,
            "--data",
            "MVTecAD",
            "--data.root",
            str(synthetic_root),
            "--data.category",
            CATEGORY,
            "--data.num_workers",
            "0",
            *QUICK,
        ]
    )
    checkpoint = next(tmp_path.rglob("model.ckpt"))
    main(["export", *common, "--ckpt_path", str(checkpoint), "--export_type", "onnx"])
    assert list(tmp_path.rglob("*.onnx"))
