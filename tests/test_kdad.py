"""KDAnomaly as an Anomalib model: shapes, training, quality, persistence, export and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import CATEGORY, IMAGE_SIZE, TrainedRun

from kdanomaly import KDAnomaly
from kdanomaly.models.kdad import KDADModel
from kdanomaly.models.kdad.loss import KDADLoss
from kdanomaly.weights import MissingWeightsError


@pytest.fixture(scope="module")
def small_model() -> KDADModel:
    torch.manual_seed(0)
    return KDADModel("tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"], memory_weight=0.0)


def test_training_forward_gives_matching_multiscale_features(small_model: KDADModel) -> None:
    small_model.train()
    out = small_model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in out.teacher.values()] == [(2, 24, 16, 16), (2, 40, 8, 8), (2, 112, 4, 4)]
    assert [f.shape for f in out.student.values()] == [f.shape for f in out.teacher.values()]
    assert set(out.sspcab_pairs) == set(out.teacher)
    assert not small_model.teacher.training, "the teacher's BatchNorm must stay frozen in training mode"


def test_eval_forward_gives_a_map_of_the_input_size_and_its_max_as_score(small_model: KDADModel) -> None:
    small_model.eval()
    with torch.no_grad():
        out = small_model(torch.randn(3, 3, 96, 64))
    assert out.anomaly_map.shape == (3, 1, 96, 64)
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(-2, -1)))
    assert (out.anomaly_map >= 0).all()


def test_loss_is_zero_for_a_perfect_student_and_counts_sspcab() -> None:
    features = {"a": torch.randn(2, 8, 4, 4), "b": torch.randn(2, 16, 2, 2)}
    loss = KDADLoss(sspcab_weight=0.1)
    perfect = loss(features, {k: 3 * v for k, v in features.items()})  # cosine ignores the scale
    assert perfect["loss"].item() == pytest.approx(0.0, abs=1e-6)
    pairs = {"a": (torch.zeros(1, 2, 2, 2), torch.ones(1, 2, 2, 2))}
    assert loss(features, features, pairs)["loss"].item() == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize(("use_simam", "use_sspcab"), [(False, False), (True, False), (False, True)])
def test_ablation_switches_change_the_student(use_simam: bool, use_sspcab: bool) -> None:
    model = KDAnomaly(use_simam=use_simam, use_sspcab=use_sspcab, visualizer=False)
    has_simam = any(type(m).__name__ == "SimAM" for m in model.model.student.modules())
    assert has_simam == use_simam
    assert (model.model.sspcab is not None) == use_sspcab


def test_default_pre_processor_uses_the_backbones_normalisation() -> None:
    assert KDAnomaly(visualizer=False).pre_processor.transform.transforms[-1].mean == [0.5, 0.5, 0.5]
    imagenet = KDAnomaly.configure_pre_processor(backbone="resnet18", layers=["layer1", "layer2", "layer3"])
    assert imagenet.transform.transforms[-1].mean == pytest.approx([0.485, 0.456, 0.406])


def test_short_training_detects_and_localises_synthetic_defects(trained: TrainedRun) -> None:
    assert trained.metrics["image_AUROC"] >= 0.90
    assert trained.metrics["pixel_AUROC"] >= 0.90


def test_normal_memory_holds_every_training_image(trained: TrainedRun) -> None:
    assert trained.model.model.memory.n_images == trained.n_train
    means_and_stds = trained.model.model.map_statistics.values
    assert means_and_stds[1] > 0 and means_and_stds[3] > 0
    assert not torch.equal(means_and_stds, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_teacher_is_bit_identical_after_training(trained: TrainedRun) -> None:
    after = trained.model.model.teacher.state_dict()
    assert after.keys() == trained.teacher_before.keys()
    assert all(torch.equal(after[k], trained.teacher_before[k]) for k in after)


def test_checkpoint_round_trip_gives_identical_maps(trained: TrainedRun) -> None:
    restored = KDAnomaly.load_from_checkpoint(trained.checkpoint, visualizer=False).eval()
    with torch.no_grad():
        expected = trained.model(trained.test_images).anomaly_map
        assert torch.equal(restored(trained.test_images).anomaly_map, expected)


def test_onnx_export_matches_pytorch(trained: TrainedRun, tmp_path: Path) -> None:
    onnx_path = trained.model.to_onnx(tmp_path, input_size=(IMAGE_SIZE, IMAGE_SIZE))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    images = torch.nn.functional.interpolate(trained.test_images, size=(IMAGE_SIZE, IMAGE_SIZE))
    for image in images:
        batch = image[None]
        outputs = dict(zip(names, session.run(None, {"input": batch.numpy()}), strict=True))
        with torch.no_grad():
            expected = trained.model(batch).anomaly_map.numpy()
        assert np.abs(outputs["anomaly_map"] - expected).max() <= 1e-3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"layers": ["blocks.1", "blocks.9"]}, ValueError, "unknown layer"),
        ({"backbone": "resnet_nonexistent"}, ValueError, "unknown backbone"),
        ({"backbone": "resnet18", "layers": ["layer1", "layer2"]}, MissingWeightsError, "kdanomaly weights install"),
    ],
)
def test_bad_configuration_is_rejected_before_any_work(
    kwargs: dict, error: type[Exception], message: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from kdanomaly import weights

    monkeypatch.setattr(weights.hf_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(weights, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(error, match=message):
        KDAnomaly(**kwargs)


@pytest.mark.parametrize("size", [(100, 100), (32, 32), (256, 250)])
def test_image_sizes_the_model_cannot_take_are_rejected(size: tuple[int, int], small_model: KDADModel) -> None:
    with pytest.raises(ValueError, match="cannot be taken"):
        KDAnomaly.configure_pre_processor(image_size=size)
    with pytest.raises(ValueError, match="cannot be taken"):
        small_model(torch.zeros(1, 3, *size))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        small_model(torch.zeros(3, 64, 64))


def test_data_root_without_images_is_rejected(tmp_path: Path) -> None:
    from anomalib.data import MVTecAD

    from kdanomaly.cli import main

    (tmp_path / CATEGORY / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        main(["fit", "--model", "KDAnomaly", "--data", "MVTecAD", "--data.root", str(tmp_path)])
    with pytest.raises(RuntimeError, match="Found 0 images"):  # Anomalib's own check, for the Python API
        MVTecAD(root=tmp_path, category=CATEGORY, num_workers=0).setup()
