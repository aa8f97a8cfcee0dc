"""Engines that run the scoring graph: PyTorch eager, ONNX Runtime and OpenVINO, one interface.

Each takes float32 images ``(B, 3, H, W)`` in [0, 1] at its ``image_size`` and returns raw scores ``(B,)`` and
maps ``(B, H, W)`` as numpy arrays. OpenVINO and ONNX Runtime models are compiled for one batch size (a static
shape is faster than a dynamic one); a shorter batch is padded and the padding dropped.
"""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .graph import ScoringGraph

INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")
# int8: the quantized convolutions run in int8 (VNNI), the layers left in floating point in bf16 where the CPU has
# it (AVX512_BF16, AMX; f32 elsewhere): +13 % images/s here, AUROC within 0.005 of fp32 (benchmarks/README.md).
OPENVINO_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "bf16"}
DEFAULT_STREAMS = 2  # parallel inference requests (one per core here)


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


def _chunks(images: np.ndarray, size: int) -> list[tuple[np.ndarray, int]]:
    """``images`` in chunks of exactly ``size`` (the last padded by repeating its last image), each with the number
    of its real images."""
    chunks = []
    for start in range(0, len(images), size):
        chunk = images[start : start + size]
        real = len(chunk)
        if real < size:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - real, axis=0)])
        chunks.append((chunk, real))
    return chunks


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

    @torch.no_grad()
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
        outputs = [
            (self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: chunk}), real)
            for chunk, real in _chunks(_as_array(images), self.batch_size)
        ]
        scores = np.concatenate([np.asarray(result[0])[:real] for result, real in outputs])
        return scores, np.concatenate([np.asarray(result[1])[:real] for result, real in outputs])


class OpenVinoEngine:
    """OpenVINO's CPU plugin on an ``openvino.Model`` (read from ``.xml``/``.onnx`` or converted from the graph).

    ``streams`` inference requests run side by side, each on its own share of the cores and its own slice of the
    batch (``batch_size / streams`` images): on 2 cores two one-thread streams score about as fast as one
    two-thread request at fp32 and twice as fast at int8 (benchmarks/engine_speed.py), and they keep both cores
    busy while the decoding and writing threads of ``inspect`` take turns.
    """

    name = "openvino"

    def __init__(
        self, model: Any, image_size: tuple[int, int], precision: str = "fp32", batch_size: int = 16, threads: int = 0,
        streams: int = DEFAULT_STREAMS, cache_dir: Path | None = None,
    ) -> None:  # fmt: skip
        import openvino

        self.slice = max(1, -(-batch_size // streams))
        model.reshape({model.inputs[0].get_any_name(): [self.slice, 3, *image_size]})
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINT[precision], "PERFORMANCE_HINT": "THROUGHPUT",
            "NUM_STREAMS": str(streams),
        }  # fmt: skip
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if cache_dir is not None:
            config["CACHE_DIR"] = str(cache_dir)  # compiled blobs: the next start takes a second less
        self.compiled = openvino.Core().compile_model(model, "CPU", config)
        self.requests = [self.compiled.create_infer_request() for _ in range(streams)]
        self.precision, self.image_size, self.batch_size = precision, image_size, batch_size

    def __call__(self, images: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        chunks = _chunks(_as_array(images), self.slice)
        scores, maps = [], []
        for first in range(0, len(chunks), len(self.requests)):
            group = list(zip(self.requests, chunks[first : first + len(self.requests)], strict=False))
            for request, (chunk, _) in group:
                request.start_async({0: chunk})
            for request, (_, real) in group:
                request.wait()
                scores.append(request.get_output_tensor(0).data[:real].copy())
                maps.append(request.get_output_tensor(1).data[:real].copy())
        return np.concatenate(scores), np.concatenate(maps)
