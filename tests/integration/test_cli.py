"""The command lines users type: Anomalib's CLI with our model by short name and from our config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from kdanomaly import KDAnomaly
from kdanomaly.cli import main
from tests.support import CATEGORY, IMAGE_SIZE

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1"]


def synthetic_data(root: Path) -> list[str]:
    """CLI options that point an MVTecAD datamodule at the synthetic set."""
    return ["--data.root", str(root), "--data.category", CATEGORY, "--data.num_workers", "0"]


def test_train_from_the_shipped_config(synthetic_root: Path, tmp_path: Path) -> None:
    config = str(REPO / "configs" / "kdanomaly" / "mvtec.yaml")
    ablation = ["--model.use_sspcab", "false", "--trainer.limit_test_batches", "1"]
    main(
        ["train", "-c", config, *synthetic_data(synthetic_root), *ablation, "--default_root_dir", str(tmp_path), *QUICK]
    )
    assert list(tmp_path.rglob("model.ckpt"))


def test_short_model_name_fit_then_onnx_export(synthetic_root: Path, tmp_path: Path) -> None:
    common = ["--model", "KDAnomaly", "--default_root_dir", str(tmp_path)]
    main(["fit", *common, "--data", "MVTecAD", *synthetic_data(synthetic_root), *QUICK])
    checkpoint = next(tmp_path.rglob("model.ckpt"))
    main(["export", *common, "--ckpt_path", str(checkpoint), "--export_type", "onnx"])
    (onnx_path,) = tmp_path.rglob("*.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = KDAnomaly.load_from_checkpoint(checkpoint, visualizer=False).eval()
    images = torch.rand(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    names = [output.name for output in session.get_outputs()]
    for image in images:  # Anomalib's export takes one image at a time
        outputs = dict(zip(names, session.run(None, {"input": image[None].numpy()}), strict=True))
        with torch.no_grad():
            expected = model(image[None]).anomaly_map.numpy()
        assert np.abs(outputs["anomaly_map"] - expected).max() <= 1e-3


def test_demo_writes_metrics_overlays_and_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["demo", "--out", str(tmp_path), "--image-size", "64", "--epochs", "1"])
    printed = capsys.readouterr().out
    assert "image AUROC" in printed
    assert "pixel AUROC" in printed
    overlays = list((tmp_path / "KDAnomaly").glob("*/weave/latest/images/*/*.png"))
    assert len(overlays) == 60  # every test image: 20 good + 4 defect types x 10
    assert list(tmp_path.rglob("model.ckpt"))
