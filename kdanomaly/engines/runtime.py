"""Engines that run the scoring graph: PyTorch eager, ONNX Runtime and OpenVINO, one interface.

Each takes float32 images ``(B, 3, H, W)`` in [0, 1] at its ``image_size`` and returns raw scores ``(B,)`` and
maps ``(B, H, W)`` as numpy arrays. OpenVINO and ONNX Runtime models are compiled for one batch size (a static
shape is faster than a dynamic one); a shorter batch is padded and the padding dropped.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .graph import ScoringGraph

INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")
OPENVINO_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run in int8 whatever


class Engine(Protocol):
    """What scoring needs of an engine."""

    name: str
    precision: str
    image_size: tuple[int, int]
    batch_size: int

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@cache
def installed(engine: str) -> bool:
    """Whether the Python package behind ``engine`` imports here."""
    try:
        importlib.import_module({"openvino": "openvino", "onnx": "onnxruntime", "torch": "torch"}[engine])
    except ImportError:
        return False
    return True


def _as_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else images
    return np.ascontiguousarray(array, dtype=np.float32)


def _padded_calls(
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], images: np.ndarray, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """``run`` over ``images`` in chunks of exactly ``batch_size`` (the last one padded by repeating its last image)."""
    scores, maps = [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        real = len(chunk)
        if real < batch_size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        chunk_scores, chunk_maps = run(chunk)
        scores.append(chunk_scores[:real])
        maps.append(chunk_maps[:real])
    return np.concatenate(scores), np.concatenate(maps)


class TorchEngine:
    """PyTorch eager on the scoring graph; ``channels_last`` memory layout optional."""

    name = "torch"
    precision = "fp32"

    def __init__(
        self, graph: ScoringGraph, image_size: tuple[int, int], batch_size: int = 16, channels_last: bool = False,
        device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        self.device = torch.device(device)
        self.graph, self.image_size, self.batch_size = graph.eval().to(self.device), image_size, batch_size
        self.channels_last = channels_last
        if channels_last:
            self.graph = self.graph.to(memory_format=torch.channels_last)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.as_tensor(images, dtype=torch.float32).to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        scores, maps = self.graph(batch)
        return scores.cpu().numpy(), maps.cpu().numpy()


class OnnxRuntimeEngine:
    """ONNX Runtime's CPU provider on an exported ``.onnx`` graph (dynamic batch)."""

    name = "onnx"
    precision = "fp32"

    def __init__(self, path: Path, image_size: tuple[int, int], batch_size: int = 16, threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.image_size, self.batch_size = image_size, batch_size

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            scores, maps = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk})
            return np.asarray(scores), np.asarray(maps)

        return _padded_calls(run, _as_array(images), self.batch_size)


class OpenVinoEngine:
    """OpenVINO's CPU plugin on an ``ov.Model`` (read from ``.xml``/``.onnx`` or converted from the graph),
    compiled for ``batch_size`` with the precision's inference hint."""

    name = "openvino"

    def __init__(
        self, model: Any, image_size: tuple[int, int], precision: str = "fp32", batch_size: int = 16, threads: int = 0
    ) -> None:
        import openvino

        model.reshape({model.inputs[0].get_any_name(): [batch_size, 3, *image_size]})
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINT[precision]}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled = openvino.Core().compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.precision, self.image_size, self.batch_size = precision, image_size, batch_size

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        def run(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            outputs = self.request.infer({0: chunk})
            return np.array(outputs[0]), np.array(outputs[1])

        return _padded_calls(run, _as_array(images), self.batch_size)
