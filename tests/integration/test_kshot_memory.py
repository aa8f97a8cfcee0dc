"""K-shot KDAnomaly trained on a single normal image: detection, checkpoint round trip, no ONNX."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support import CATEGORY, synthetic_datamodule, train_and_test


def test_kshot_kdanomaly_detects_synthetic_defects_from_a_single_normal_image(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from lightning.pytorch import seed_everything

    from kdanomaly import KDAnomaly
    from kdanomaly.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("kshot")
    size, shots = 128, 1
    generate_synthetic_dataset(root, CATEGORY, image_size=size, n_train=shots, n_test_good=10, n_test_per_defect=5)
    seed_everything(0)
    datamodule = synthetic_datamodule(root)
    model = KDAnomaly(
        memory_kind="prototype", pre_processor=KDAnomaly.configure_pre_processor((size, size)), visualizer=False
    )
    engine, metrics = train_and_test(model, datamodule, tmp_path_factory.mktemp("run"), max_steps=120)
    assert metrics["image_AUROC"] >= 0.85 and metrics["pixel_AUROC"] >= 0.85
    assert len(model.model.memory.patches) == round(0.1 * shots * (size // 8) ** 2)

    checkpoint = Path(engine.trainer.checkpoint_callback.best_model_path)
    restored = KDAnomaly.load_from_checkpoint(checkpoint, visualizer=False).eval()
    images = torch.stack([datamodule.test_data[i].image for i in range(0, len(datamodule.test_data), 9)])
    with torch.no_grad():
        # The restored index re-normalises the unit patches: equal up to float32 rounding.
        torch.testing.assert_close(restored(images).anomaly_map, model.eval()(images).anomaly_map)
    with pytest.raises(ValueError, match="export_type torch"):
        model.to_onnx(tmp_path_factory.mktemp("export"), input_size=(size, size))
