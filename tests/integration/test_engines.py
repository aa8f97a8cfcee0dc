"""Engines: exports score as PyTorch does (fp32 exactly, bf16 and int8 closely), and refuse to score when they do
not match what their model.json claims."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from kdanomaly.data import image_files
from kdanomaly.engines import ManifestError, export_model, open_model
from kdanomaly.engines.cache import cached_export_folder
from kdanomaly.engines.export import full_precision_convolutions, sampled_images
from kdanomaly.engines.graph import load_scoring_graph
from kdanomaly.inspection.calibration import calibrate, store_calibration
from kdanomaly.inspection.scoring import read_model_views
from kdanomaly.models.kdad.torch_model import Distillation
from tests.support import CATEGORY, IMAGE_SIZE, TrainedRun

MAP_TOLERANCE = 1e-4  # of the map's range, fp32 engines against PyTorch
AUROC_TOLERANCE = 0.005  # bf16 and int8 against fp32 (one swapped pair of the 200 is 0.005)


def _images(paths: list[Path]) -> np.ndarray:
    return read_model_views(paths, (IMAGE_SIZE, IMAGE_SIZE))


@pytest.fixture(scope="module")
def test_set(synthetic_root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic test images ``(N, 3, S, S)`` and their labels (1 = defect)."""
    paths = image_files(synthetic_root / CATEGORY / "test")
    return _images(paths), np.array([path.parent.name != "good" for path in paths], dtype=int)


@pytest.fixture(scope="module")
def checkpoint(trained: TrainedRun, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model calibrated (20 % false reviews) on its training normals, as a copy."""
    opened = open_model(trained.checkpoint, "torch")
    scores, _ = opened.engine(_images(image_files(synthetic_root / CATEGORY / "train" / "good")))
    return store_calibration(trained.checkpoint, calibrate(scores, 0.2), tmp_path_factory.mktemp("ckpt") / "m.ckpt")


@pytest.fixture(scope="module")
def exports(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The checkpoint exported for OpenVINO fp32 (by opening it on OpenVINO: the export cache's copy) and as ONNX
    (by ``kdanomaly export``); one export each, the slow step of these tests."""
    from kdanomaly.cli import main

    open_model(checkpoint, "openvino")
    openvino = cached_export_folder(*load_scoring_graph(checkpoint), "openvino") / "model.xml"
    onnx = tmp_path_factory.mktemp("exports") / "onnx"
    assert main(["export", "--model", str(checkpoint), "--out", str(onnx), "--engine", "onnx"]) == 0
    return {"openvino": openvino, "onnx": onnx / "model.onnx"}


@pytest.mark.parametrize(
    ("model", "engine"), [("openvino", "openvino"), ("onnx", "onnx"), ("onnx", "openvino"), ("ckpt", "openvino")]
)
def test_fp32_engines_give_pytorch_maps_ranks_and_decisions(
    model: str, engine: str, checkpoint: Path, exports: dict[str, Path], test_set: tuple[np.ndarray, np.ndarray]
) -> None:
    images, _ = test_set
    reference = open_model(checkpoint, "torch")
    expected_scores, expected_maps = reference.engine(images)
    opened = open_model(checkpoint if model == "ckpt" else exports[model], engine, batch_size=4)
    scores, maps = opened.engine(images)
    assert opened.engine.name == engine and maps.shape == expected_maps.shape
    assert np.abs(maps - expected_maps).max() <= MAP_TOLERANCE * np.ptp(expected_maps)
    np.testing.assert_array_equal(np.argsort(scores, kind="stable"), np.argsort(expected_scores, kind="stable"))
    threshold = reference.calibration.threshold
    assert opened.calibration is not None and opened.calibration.threshold == threshold
    np.testing.assert_array_equal(scores > threshold, expected_scores > threshold)


def test_bf16_keeps_the_image_auroc(exports: dict[str, Path], test_set: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = test_set
    fp32 = roc_auc_score(labels, open_model(exports["openvino"]).engine(images)[0])
    opened = open_model(exports["openvino"], "openvino", "bf16")
    assert opened.engine.precision == "bf16"
    assert round(abs(roc_auc_score(labels, opened.engine(images)[0]) - fp32), 9) <= AUROC_TOLERANCE  # float noise


def test_int8_is_exported_only_when_it_keeps_the_image_auroc(
    checkpoint: Path, synthetic_root: Path, test_set: tuple[np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    """An int8 export either detects as PyTorch does on the test set or is refused with nothing left behind (the
    reverse student's model is refused here: its int8 teacher costs 0.009 image and 0.007 pixel AUROC on the
    check's pasted defects, over the 0.005 allowed)."""
    images, labels = test_set
    normals = sampled_images(image_files(synthetic_root / CATEGORY / "train" / "good"), (IMAGE_SIZE, IMAGE_SIZE))
    fp32 = roc_auc_score(labels, open_model(checkpoint, "torch").engine(images)[0])
    try:
        model = export_model(checkpoint, tmp_path / "int8", "openvino", "int8", normals)
    except ManifestError as refused:
        assert "int8 quantization does not keep" in str(refused) and "bf16" in str(refused)
        assert not list((tmp_path / "int8").iterdir())
        return
    opened = open_model(model, "openvino", "int8")
    assert opened.engine.precision == "int8"
    assert round(abs(roc_auc_score(labels, opened.engine(images)[0]) - fp32), 9) <= AUROC_TOLERANCE  # float noise


@pytest.mark.parametrize(
    ("segmentation", "distillation"), [(True, "forward"), (False, "forward"), (True, "reverse"), (False, "reverse")]
)
def test_int8_leaves_exactly_the_head_and_a_reverse_student_in_fp32(
    segmentation: bool, distillation: Distillation
) -> None:
    """The convolutions kept out of int8 are the segmentation head's and a reverse student's after its bottleneck
    concatenates the teacher's stages, found in the exported graph (which has no module names); the teacher's and
    the bottleneck's convolutions before the concatenation are quantized."""
    from torch import nn

    from kdanomaly.engines.export import openvino_model
    from kdanomaly.engines.graph import ScoringGraph
    from kdanomaly.models.kdad.torch_model import KDADModel

    model = KDADModel(
        "tf_efficientnet_lite0", ["blocks.1", "blocks.2", "blocks.4"], distillation, memory_weight=0.0,
        segmentation=segmentation,
    )  # fmt: skip
    kept = [model.segmentation_head] + ([model.student] if distillation == "reverse" else [])
    before_concat = set(model.student.bottleneck.align.modules()) if distillation == "reverse" else set()
    convolutions = sum(
        isinstance(module, nn.Conv2d | nn.ConvTranspose2d) and module not in before_concat
        for part in kept
        if part is not None
        for module in part.modules()
    )
    converted = openvino_model(ScoringGraph(model, (0.5,) * 3, (0.5,) * 3), (128, 128))
    assert len(full_precision_convolutions(converted)) == convolutions


def test_an_int8_model_that_misses_defects_is_refused_with_nothing_left_behind(
    checkpoint: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quantization that loses the defects (here: every convolution's weights zeroed, constant maps) is caught by
    the export's check on good images with pasted defects, and no file of it stays."""
    from openvino import opset13

    from kdanomaly.engines import export

    def blind(model, images):
        for op in model.get_ops():
            if op.get_type_name() == "Convolution":
                weights = op.input_value(1).get_node()
                weights.output(0).replace(opset13.constant(np.zeros(tuple(weights.shape), np.float32)).output(0))
        return model

    monkeypatch.setattr(export, "quantized_int8", blind)
    normals = sampled_images(image_files(synthetic_root / CATEGORY / "train" / "good"), (IMAGE_SIZE, IMAGE_SIZE))
    with pytest.raises(ManifestError, match="int8 quantization does not keep"):
        export_model(checkpoint, tmp_path / "int8", "openvino", "int8", normals)
    assert not list((tmp_path / "int8").iterdir())


def _save_with_another_memory(model_xml: Path, bank_shape: tuple[int, ...], out: Path) -> None:
    """The same network with its normal memory's patches at other positions (the bank flipped), as ``out``."""
    import openvino
    from openvino import opset13

    model = openvino.Core().read_model(str(model_xml))
    banks = [op for op in model.get_ops() if op.get_type_name() == "Constant" and tuple(op.shape) == bank_shape]
    assert banks, f"no constant of the memory bank's shape {bank_shape} in {model_xml}"
    for bank in banks:
        bank.output(0).replace(opset13.constant(np.flip(bank.get_data(), 0).copy()).output(0))
    openvino.save_model(model, str(out), compress_to_fp16=False)


def test_an_export_that_is_not_what_its_manifest_claims_is_refused(
    checkpoint: Path, exports: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    shutil.copytree(exports["openvino"].parent, folder)
    manifest = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps(manifest | {"image_size": [IMAGE_SIZE * 2, IMAGE_SIZE * 2]}))
    with pytest.raises(ManifestError, match="takes inputs of shape"):
        open_model(folder / "model.xml")
    bank = torch.load(checkpoint, weights_only=False)["state_dict"]["model.memory.bank"]
    _save_with_another_memory(exports["openvino"], tuple(bank.shape), folder / "model.xml")
    (folder / "model.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="does not reproduce the scores"):
        open_model(folder / "model.xml")


def test_an_export_whose_checkpoint_was_recalibrated_since_is_refused(exports: dict[str, Path], tmp_path: Path):
    folder = tmp_path / "export"
    shutil.copytree(exports["openvino"].parent, folder)
    manifest = json.loads((folder / "model.json").read_text())
    claimed = Path(manifest["checkpoint"])
    recalibrated = tmp_path / "recalibrated.ckpt"
    shutil.copy(claimed, recalibrated)
    store_calibration(recalibrated, calibrate(np.arange(100.0), 0.1))
    (folder / "model.json").write_text(json.dumps(manifest | {"checkpoint": str(recalibrated)}))
    with pytest.raises(ManifestError, match="is not the one"):
        open_model(folder / "model.xml")


def test_without_openvino_auto_scores_with_pytorch_and_says_so(checkpoint: Path, synthetic_root: Path, tmp_path: Path):
    """A real missing package (import blocked), through the command line: one notice, the run completes."""
    code = (
        "import sys; sys.modules['openvino'] = None; from kdanomaly.cli import main; "
        f"main(['inspect', {str(synthetic_root / CATEGORY / 'test' / 'good')!r}, '--model', {str(checkpoint)!r}, "
        f"'--out', {str(tmp_path / 'run')!r}, '--no-progress', '--workers', '0'])"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("OpenVINO is not installed") == 1
    settings = json.loads((tmp_path / "run" / "run.json").read_text())
    assert settings["engine"] == "torch"


def test_export_calibrate_and_inspect_from_the_command_line_decide_as_pytorch(
    checkpoint: Path, exports: dict[str, Path], synthetic_root: Path, tmp_path: Path
) -> None:
    """The ONNX export of ``kdanomaly export`` (the fixture's), calibrated and run from the command line."""
    from kdanomaly.cli import main

    shutil.copytree(exports["onnx"].parent, tmp_path / "export")
    model = tmp_path / "export" / "model.onnx"
    normals = str(synthetic_root / CATEGORY / "train" / "good")
    quiet = ["--no-progress", "--workers", "0"]
    assert main(["calibrate", "--model", str(model), "--normal", normals, "--false-review-rate", "0.2", *quiet]) == 0
    threshold = json.loads((tmp_path / "export" / "model.json").read_text())["calibration"]["threshold"]
    reference = open_model(checkpoint, "torch")
    _, maps = reference.engine(_images(image_files(synthetic_root / CATEGORY / "test")))
    # fp32 engines agree to MAP_TOLERANCE of the maps' range (as in the test above); a score's offset means nothing
    assert threshold == pytest.approx(reference.calibration.threshold, abs=MAP_TOLERANCE * float(np.ptp(maps)))
    test_images = str(synthetic_root / CATEGORY / "test")
    pytorch = ["--model", str(checkpoint), "--engine", "torch", "--threshold", str(threshold)]
    runs = {}
    for name, arguments in {"export": ["--model", str(model)], "torch": pytorch}.items():
        assert main(["inspect", test_images, *arguments, "--out", str(tmp_path / f"run_{name}"), *quiet]) == 0
        rows = (tmp_path / f"run_{name}" / "results.jsonl").read_text().splitlines()
        runs[name] = {row["key"]: row["decision"] for row in map(json.loads, rows)}
    assert runs["export"] == runs["torch"]
