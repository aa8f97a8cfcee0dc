"""``kdanomaly export``: a KDAnomaly checkpoint as an OpenVINO (fp32, bf16, int8) or ONNX model plus ``model.json``.

The file set is the model (``model.xml`` + ``model.bin``, or ``model.onnx``) and its manifest (checkpoint digest,
input size, calibrated threshold, probe scores). bf16 is a run-time setting of OpenVINO's CPU plugin on the fp32
model; int8 is NNCF's post-training quantization calibrated on good images (the training normals) and the same
images with synthetic defects pasted in.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdanomaly.data.pasted_defects import paste_defects
from kdanomaly.files import sha256_of
from kdanomaly.inspection.calibration import checkpoint_calibration

from .cache import cached_export_folder
from .graph import ScoringGraph, load_scoring_graph
from .manifest import PROBE_TOLERANCE, Manifest, ManifestError, probe_images
from .runtime import INPUT_NAME, OUTPUT_NAMES, OnnxRuntimeEngine, OpenVinoEngine, TorchEngine

MODEL_FILES = {"openvino": "model.xml", "onnx": "model.onnx"}
INT8_CALIBRATION_IMAGES = 300  # NNCF's default subset size; more good images are sampled down to this
INT8_CHECK_IMAGES = 32  # good images (and as many with pasted defects) on which an int8 export is checked
INT8_AUROC_DROP = 0.005  # largest image or pixel AUROC loss of int8 against PyTorch on those images


def export_onnx(graph: ScoringGraph, image_size: tuple[int, int], path: Path) -> Path:
    """The graph as ONNX with a dynamic batch dimension, input ``images``, outputs ``scores`` and ``maps``."""
    if not graph.exportable:
        raise ValueError("the k-shot memory (memory_kind='prototype') searches faiss inside forward: not exportable")
    example = torch.rand(2, 3, *image_size)
    graph(example)  # an eager pass first: the blur's matrices are then constants of the export, not traced ops
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        graph, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamo=True,
        dynamic_shapes={"images": {0: batch}}, external_data=False, verbose=False,
    )  # fmt: skip
    return path


def openvino_model(graph: ScoringGraph, image_size: tuple[int, int]) -> Any:
    """The graph as an ``openvino.Model`` (input ``images``, outputs ``scores``, ``maps``), converted from its ONNX
    export (OpenVINO's PyTorch front end lacks ``aten::cosine_similarity``; the ONNX export decomposes it)."""
    import openvino

    with tempfile.TemporaryDirectory(prefix="kdanomaly_export_") as scratch:
        model = openvino.convert_model(export_onnx(graph, image_size, Path(scratch) / "model.onnx"))
    return model


def quantized_int8(model: Any, images: np.ndarray) -> Any:
    """NNCF post-training int8 quantization of an ``openvino.Model`` calibrated on good ``images (N, 3, H, W)`` and
    on the same images with pasted defects.

    Ranges calibrated on good images alone clip the activations a defect excites, and the quantized model stops
    seeing defects (image AUROC 1.0 → 0.92 on the demo's model; with the pasted defects 1.0). Only the networks'
    convolutions (nearly all the FLOPs) are quantized; the matrix products of the memory distances and the blur, and
    the segmentation head and a reverse student, stay fp32 (:func:`full_precision_convolutions`): the head reads
    how closely student and teacher agree channel by channel, a small difference of two large features that both
    networks' int8 noise blurs.
    """
    import nncf

    calibration = np.concatenate([images, paste_defects(images, seed=0)[0]])
    dataset = nncf.Dataset([calibration[i : i + 1] for i in range(len(calibration))])
    ignored = nncf.IgnoredScope(types=["MatMul"], names=full_precision_convolutions(model))
    return nncf.quantize(model, dataset, subset_size=len(calibration), ignored_scope=ignored)


def full_precision_convolutions(model: Any) -> list[str]:
    """Names of the convolutions of an ``openvino.Model`` that run after a concatenation: the segmentation head's,
    which reads the per-scale products concatenated, and a reverse student's, whose bottleneck concatenates the
    teacher's stages (quantized, its bottleneck and decoder cost the synthetic test set of
    ``tests/integration/test_engines.py`` 0.021 image and 0.048 pixel AUROC against PyTorch). The teacher has no
    concatenation and the memory's concatenated features meet no convolution. The export drops module names, so
    the graph's shape has to tell."""
    after_concat: set[str] = set()
    convolutions = []
    for op in model.get_ordered_ops():
        parents = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if any(p.get_type_name() == "Concat" or p.get_friendly_name() in after_concat for p in parents):
            after_concat.add(op.get_friendly_name())
            if op.get_type_name() in ("Convolution", "ConvolutionBackpropData"):
                convolutions.append(op.get_friendly_name())
    return convolutions


def export_model(
    checkpoint: Path, out: Path, engine: str = "openvino", precision: str = "fp32",
    calibration_images: np.ndarray | None = None, graph: tuple[ScoringGraph, tuple[int, int]] | None = None,
) -> Path:  # fmt: skip
    """Write ``checkpoint``'s model for ``engine`` and ``precision`` into the folder ``out``; the model file
    (``graph``: the checkpoint's scoring graph and image size, when already loaded).

    The export is scored on the probe images against the checkpoint before the manifest is written: an fp32 export
    that differs from PyTorch by more than 1e-4 of the map's range is refused, a bf16 one beyond 5 %. int8 is
    checked by what it is for, finding defects: see :func:`_check_quantized`.
    """
    if engine not in MODEL_FILES:
        raise ValueError(f"export engine must be one of {sorted(MODEL_FILES)}, got {engine!r}")
    if engine == "onnx" and precision != "fp32":
        raise ValueError("ONNX exports are fp32; bf16 and int8 are OpenVINO's")
    if precision == "int8" and (calibration_images is None or len(calibration_images) == 0):
        raise ValueError("int8 needs good images to calibrate the quantization on (the training normals)")
    graph_module, image_size = graph or load_scoring_graph(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_FILES[engine]
    probe = probe_images(image_size)
    reference_scores, reference_maps = TorchEngine(graph_module, image_size)(probe)
    if engine == "onnx":
        export_onnx(graph_module, image_size, path)
        scores, maps = OnnxRuntimeEngine(path, image_size, batch_size=len(probe))(probe)
    else:
        scores, maps = _write_openvino(graph_module, image_size, path, precision, calibration_images, len(probe))
    maps_range = float(reference_maps.max() - reference_maps.min())
    if precision != "int8":
        _check_close(scores, maps, reference_scores, reference_maps, PROBE_TOLERANCE[precision] * maps_range, path)
    elif calibration_images is not None:
        _check_quantized(graph_module, image_size, path, calibration_images)
    calibration = checkpoint_calibration(checkpoint)
    manifest = Manifest(
        model_file=path.name, precision=precision, image_size=image_size, checkpoint=str(checkpoint.resolve()),
        checkpoint_sha256=sha256_of(checkpoint), probe_scores=[float(s) for s in scores],
        probe_maps_range=maps_range, probe_map_means=[float(m) for m in maps.reshape(len(maps), -1).mean(axis=1)],
    )  # fmt: skip
    (manifest if calibration is None else manifest.with_calibration(calibration)).save(out / "model.json")
    return path


def _write_openvino(
    graph: ScoringGraph, image_size: tuple[int, int], path: Path, precision: str,
    calibration_images: np.ndarray | None, probe_batch: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Convert (or take the fp32 conversion in the export cache), for int8 quantize, save as ``path``, and score
    the probe with the saved model."""
    import openvino

    cached = cached_export_folder(graph, image_size, "openvino") / MODEL_FILES["openvino"]
    model = openvino.Core().read_model(str(cached)) if cached.is_file() else openvino_model(graph, image_size)
    if precision == "int8" and calibration_images is not None:
        model = quantized_int8(model, calibration_images)
    openvino.save_model(model, str(path), compress_to_fp16=False)
    saved = openvino.Core().read_model(str(path))
    return OpenVinoEngine(saved, image_size, precision, batch_size=probe_batch)(probe_images(image_size))


def _check_quantized(graph: ScoringGraph, image_size: tuple[int, int], path: Path, images: np.ndarray) -> None:
    """ManifestError (and the int8 files removed) if the int8 model at ``path`` tells good images from images with
    pasted defects worse than PyTorch does: image or pixel AUROC lower by more than :data:`INT8_AUROC_DROP` on up
    to :data:`INT8_CHECK_IMAGES` of the good ``images`` and the same images with defects other than those the
    quantization was calibrated on (another seed)."""
    from sklearn.metrics import roc_auc_score

    good = images[:: max(1, len(images) // INT8_CHECK_IMAGES)][:INT8_CHECK_IMAGES]
    defective, masks = paste_defects(good, seed=1)
    sample = np.concatenate([good, defective])
    labels = np.repeat([0, 1], len(good))
    pixel_labels = np.concatenate([np.zeros_like(masks), masks]).ravel()
    quantized = OpenVinoEngine(_read(path), image_size, "int8", batch_size=8)
    outputs = {"PyTorch": TorchEngine(graph, image_size)(sample), "int8": quantized(sample)}
    aurocs = {
        name: (roc_auc_score(labels, scores), roc_auc_score(pixel_labels, maps.ravel()))
        for name, (scores, maps) in outputs.items()
    }
    losses = {kind: aurocs["PyTorch"][i] - aurocs["int8"][i] for i, kind in enumerate(("image", "pixel"))}
    if max(losses.values()) > INT8_AUROC_DROP:
        for stale in (path, path.with_suffix(".bin")):
            stale.unlink(missing_ok=True)
        raise ManifestError(
            "int8 quantization does not keep this model's defect detection on good images with pasted defects (AUROC"
            f" lower than PyTorch's by {losses['image']:.3f} image, {losses['pixel']:.3f} pixel; at most"
            f" {INT8_AUROC_DROP} allowed): export fp32 and run it at bf16"
        )


def _read(path: Path) -> Any:
    import openvino

    return openvino.Core().read_model(str(path))


def _check_close(
    scores: np.ndarray, maps: np.ndarray, reference_scores: np.ndarray, reference_maps: np.ndarray,
    tolerance: float, path: Path,
) -> None:  # fmt: skip
    """ManifestError if the export's probe outputs differ from PyTorch's by more than ``tolerance``."""
    difference = max(float(np.abs(scores - reference_scores).max()), float(np.abs(maps - reference_maps).max()))
    if not difference <= tolerance:
        raise ManifestError(f"{path}: the export differs from PyTorch by {difference:.3g} (> {tolerance:.3g})")


def sampled_images(images: Sequence[Path], image_size: tuple[int, int], count: int = INT8_CALIBRATION_IMAGES):
    """Up to ``count`` of ``images`` (evenly spaced), decoded and resized as ``inspect`` does, ``(N, 3, H, W)``."""
    from kdanomaly.inspection.scoring import ImageFiles, model_views

    picked = [images[int(i)] for i in np.linspace(0, len(images) - 1, min(count, len(images)))] if images else []
    files = ImageFiles(picked, image_size)
    loaded = [files[i] for i in range(len(files))]
    if all(item.image is None for item in loaded):
        raise ValueError("no readable good images to calibrate the int8 quantization on")
    return model_views(loaded)
