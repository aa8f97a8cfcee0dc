"""The scoring graph every engine runs: a trained KDAnomaly from images in [0, 1] to raw scores and maps.

Raw means before Anomalib's normalisation: the calibrated review threshold of ``kdanomaly calibrate`` is a raw
score, so an exported graph carries the backbone's input normalisation, the networks, the positional memory and
the fusion statistics, and nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torchvision.transforms.v2 import Normalize, Resize

from kdanomaly.models.kdad.kshot_memory import KShotMemory
from kdanomaly.models.kdad.torch_model import KDADModel


class ScoringGraph(nn.Module):
    """``(B, 3, H, W)`` float images in [0, 1] → scores ``(B,)`` and anomaly maps ``(B, H, W)``, raw."""

    def __init__(self, model: KDADModel, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.mean: torch.Tensor
        self.std: torch.Tensor

    @property
    def exportable(self) -> bool:
        """Whether the graph can be traced (the k-shot memory searches faiss inside forward)."""
        return not (isinstance(self.model.memory, KShotMemory) and self.model.memory_weight > 0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.model((images - self.mean) / self.std)
        anomaly_map = cast(torch.Tensor, result.anomaly_map)
        return anomaly_map.amax(dim=(-2, -1)).reshape(-1), anomaly_map[:, 0]


def load_scoring_graph(checkpoint: str | Path) -> tuple[ScoringGraph, tuple[int, int]]:
    """The scoring graph of a KDAnomaly checkpoint and the image size ``(H, W)`` its pre-processor resizes to."""
    from kdanomaly.models import KDAnomaly

    model = KDAnomaly.load_from_checkpoint(checkpoint, map_location="cpu", visualizer=False).eval()
    transform = getattr(model.pre_processor, "transform", None)
    transforms = getattr(transform, "transforms", [transform])
    sizes = [t.size for t in transforms if isinstance(t, Resize)]
    normalizers = [t for t in transforms if isinstance(t, Normalize)]
    if len(sizes) != 1 or len(normalizers) != 1:
        raise ValueError(f"{checkpoint}: expected a pre-processor of one Resize and one Normalize, got {transforms}")
    size = list(sizes[0]) * (2 if len(sizes[0]) == 1 else 1)
    graph = ScoringGraph(model.model, tuple(normalizers[0].mean), tuple(normalizers[0].std))
    return graph, (int(size[0]), int(size[1]))


def graph_digest(graph: ScoringGraph, image_size: tuple[int, int]) -> str:
    """SHA-256 of everything the graph computes with (every tensor of its state, the input size): equal for a
    checkpoint and its calibrated copies, which differ only outside the graph."""
    digest = hashlib.sha256(repr(image_size).encode())
    for name, tensor in graph.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
