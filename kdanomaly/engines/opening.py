"""Open a model for scoring: a checkpoint on any engine, or an export on its own; the fastest engine by default.

``auto`` picks OpenVINO when it is installed (about 2.5x PyTorch eager on this kind of CPU, see
benchmarks/README.md), else ONNX Runtime for an ``.onnx`` file, else PyTorch, saying so in one line. A ``.xml`` is
OpenVINO's, a ``.onnx`` ONNX Runtime's or OpenVINO's, a ``.ckpt`` any engine's (converted in memory at start).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from kdanomaly.files import sha256_of
from kdanomaly.inspection.calibration import Calibration, checkpoint_calibration

from .cache import cached_export_folder, export_cache
from .export import MODEL_FILES, export_model
from .graph import load_scoring_graph
from .manifest import Manifest, ManifestError, probe_images
from .runtime import Engine, OnnxRuntimeEngine, OpenVinoEngine, TorchEngine, installed

ENGINES = ("auto", "openvino", "onnx", "torch")
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_BATCH = 16


@dataclass
class OpenedModel:
    """An engine ready to score, the calibration it came with, and what identifies it in a run's settings."""

    engine: Engine
    calibration: Calibration | None
    source: Path
    manifest: Manifest | None

    def identity(self) -> dict[str, object]:
        """Settings a resumed run must match: the model file's digest, the engine and its precision."""
        return {
            "model": str(self.source.resolve()), "model_sha256": sha256_of(self.source),
            "engine": self.engine.name, "precision": self.engine.precision,
        }  # fmt: skip


def _choose(engine: str, suffix: str) -> str:
    """The engine for ``engine`` (maybe ``auto``) and a model file ending in ``suffix``; ValueError if impossible."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    possible = {".xml": ["openvino"], ".onnx": ["openvino", "onnx"], ".ckpt": ["openvino", "onnx", "torch"]}
    if suffix not in possible:
        raise ValueError(f"a model is a .ckpt checkpoint or a .xml/.onnx export, got a {suffix or 'bare'} file")
    if engine == "auto":
        preferred = {".xml": ["openvino"], ".onnx": ["openvino", "onnx"], ".ckpt": ["openvino", "torch"]}[suffix]
        available = [name for name in preferred if installed(name)]
        if not available:
            raise ValueError(f"no engine for a {suffix} model is installed (pip install openvino)")
        if available[0] == "torch":
            print("note: OpenVINO is not installed; scoring with PyTorch (pip install openvino: ~2.5x faster)")
        return available[0]
    if engine not in possible[suffix]:
        raise ValueError(f"a {suffix} model cannot run on {engine}; use {' or '.join(possible[suffix])}")
    if not installed(engine):
        raise ValueError(
            f"engine {engine!r} is not installed (pip install {'onnxruntime' if engine == 'onnx' else engine})"
        )
    return engine


def open_model(
    path: Path, engine: str = "auto", precision: str | None = None, batch_size: int = DEFAULT_BATCH, threads: int = 0,
    device: str = "cpu",
) -> OpenedModel:  # fmt: skip
    """``path`` on ``engine`` at ``precision`` (an export's own by default, fp32 for a checkpoint); ``device`` is
    PyTorch's (the other engines run on the CPU).

    An export is checked against its ``model.json`` before it scores anything (input size, probe scores):
    :class:`ManifestError` names what does not match.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"model {path} does not exist")
    chosen = _choose(engine, path.suffix)
    if path.suffix == ".ckpt":
        return _open_checkpoint(path, chosen, precision or "fp32", batch_size, threads, device)
    manifest = Manifest.load(path.parent / "model.json")
    if manifest.model_file != path.name:
        raise ManifestError(f"{path.parent / 'model.json'} describes {manifest.model_file}, not {path.name}")
    if precision not in (None, manifest.precision) and not (manifest.precision == "fp32" and precision == "bf16"):
        raise ValueError(f"{path} is a {manifest.precision} export; it cannot run at {precision}")
    _check_claimed_calibration(manifest, path)
    opened = _open_export(path, chosen, manifest, precision or manifest.precision, batch_size, threads)
    probe = probe_images(manifest.image_size)
    manifest.check_probe(*opened.engine(probe), opened.engine.precision, path)
    return opened


def _check_claimed_calibration(manifest: Manifest, path: Path) -> None:
    """ManifestError if the checkpoint the export claims is still there, was recalibrated since (its digest
    changed) and now holds another threshold than the export: one of the two is stale."""
    checkpoint = Path(manifest.checkpoint)
    if not checkpoint.is_file() or sha256_of(checkpoint) == manifest.checkpoint_sha256:
        return
    calibration = checkpoint_calibration(checkpoint)
    current = None if calibration is None else calibration.threshold
    if current is not None and current != manifest.threshold:
        raise ManifestError(
            f"{path}'s threshold {manifest.threshold} is not the one {checkpoint} holds now ({current}): export it"
            f" again, or `kdanomaly calibrate --model {path}` to calibrate the export itself"
        )


def _open_checkpoint(
    path: Path, engine: str, precision: str, batch_size: int, threads: int, device: str
) -> OpenedModel:
    """PyTorch on the checkpoint itself; OpenVINO or ONNX Runtime on its export, made once and kept in
    :func:`export_cache` under the digest of the scoring graph (calibrated copies share it)."""
    if precision == "int8":
        raise ValueError("int8 needs calibration images: `kdanomaly export --precision int8 --calibration-images ...`")
    if precision == "bf16" and engine != "openvino":
        raise ValueError("bf16 runs on OpenVINO (--engine openvino)")
    calibration = checkpoint_calibration(path)
    graph, image_size = load_scoring_graph(path)
    if engine == "torch":
        if threads:
            torch.set_num_threads(threads)
        return OpenedModel(TorchEngine(graph, image_size, batch_size, device=device), calibration, path, None)
    folder = cached_export_folder(graph, image_size, engine)
    model_file = folder / MODEL_FILES[engine]
    if not (folder / "model.json").is_file() or not model_file.is_file():
        with FileLock(str(folder) + ".lock"):  # two processes of a sharded run export once
            if not (folder / "model.json").is_file():
                export_model(path, folder, engine, "fp32", graph=(graph, image_size))
    manifest = Manifest.load(folder / "model.json")
    opened = _open_export(model_file, engine, manifest, precision, batch_size, threads)
    return OpenedModel(opened.engine, calibration, path, None)


def _open_export(
    path: Path, engine: str, manifest: Manifest, precision: str, batch_size: int, threads: int
) -> OpenedModel:
    model = None
    if engine == "openvino":
        import openvino

        model = openvino.Core().read_model(str(path))
        shape = [None if dim.is_dynamic else dim.get_length() for dim in model.inputs[0].get_partial_shape()]
    else:
        import onnx

        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
        shape = [dim.dim_value if dim.HasField("dim_value") else None for dim in dims]
    expected = [None, 3, *manifest.image_size]
    if len(shape) != 4 or any(e is not None and s not in (None, e) for s, e in zip(shape, expected, strict=True)):
        raise ManifestError(f"{path} takes inputs of shape {shape}; its model.json says {expected}")
    scorer: Engine
    if model is None:
        scorer = OnnxRuntimeEngine(path, manifest.image_size, batch_size, threads)
    else:
        scorer = OpenVinoEngine(
            model, manifest.image_size, precision, batch_size, threads, cache_dir=export_cache() / "openvino-blobs"
        )
    return OpenedModel(scorer, manifest.calibrated(), path, manifest)


def engine_notice(opened: OpenedModel) -> str:
    """One line naming the engine and precision a command scores with."""
    return f"scoring with {opened.engine.name} ({opened.engine.precision}, batch {opened.engine.batch_size})"
