"""k-shot normal memory: a coreset of normal teacher patches in a VectorStore, searched from any position.

With very few normal images (1, 2, 4) the positional memory has too few candidates per position, and its
leave-one-image-out statistics need at least two images. Here every stored patch is a candidate for every query
patch (the PatchCore rule, in cosine geometry): distance = 1 - cosine similarity to the nearest normal patch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from kdanomaly.memory import VectorStore


def _patch_rows(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` features as unit-length rows ``(N, h * w, C)``."""
    return F.normalize(features.detach().float().flatten(2).transpose(1, 2), dim=-1)


class KShotMemory(nn.Module):
    """Nearest-neighbour cosine distance of each patch to a greedy k-center coreset of normal patches.

    The kept patches are a buffer (so they travel in checkpoints); the faiss index is built from them on first use.

    Args:
        coreset_ratio: fraction of the training patches kept (at least one).
        exclusion_radius: with a single training image, its held-out distances compare each patch with the
            image's patches more than this many grid cells away (with two or more images: the other images).
        statistics_images: at most this many training images give the held-out distances (the statistics).
    """

    def __init__(self, coreset_ratio: float = 0.1, exclusion_radius: int = 2, statistics_images: int = 8) -> None:
        super().__init__()
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        self.coreset_ratio = coreset_ratio
        self.exclusion_radius = exclusion_radius
        self.statistics_images = statistics_images
        self.register_buffer("patches", torch.empty(0, 0))
        self.patches: torch.Tensor
        self._store: VectorStore | None = None

    @property
    def is_empty(self) -> bool:
        """True until :meth:`fit` stored patches."""
        return self.patches.numel() == 0

    def fit(self, features: torch.Tensor) -> None:
        """Store every patch of the ``(N, C, h, w)`` normal features (:meth:`reduce` keeps the coreset)."""
        if features.ndim != 4 or features.shape[0] == 0:
            raise ValueError(f"expected normal features of shape (N, C, h, w) with N > 0, got {tuple(features.shape)}")
        self.patches = _patch_rows(features).reshape(-1, features.shape[1])
        self._store = None

    def reduce(self) -> None:
        """Keep ``coreset_ratio`` of the stored patches, chosen by greedy k-center selection in a VectorStore."""
        store = VectorStore(self.patches.shape[1])
        store.add_coreset(self.patches, max(1, round(self.coreset_ratio * len(self.patches))))
        self.patches = torch.from_numpy(store.embeddings).to(self.patches.device)
        self._store = store

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Distance map ``(B, 1, h, w)``: 1 - cosine similarity of each patch to its nearest normal patch."""
        if self.is_empty:
            raise RuntimeError("the normal memory is empty: fit it on normal images first (KDAnomaly does so itself)")
        batch, channels, height, width = features.shape
        if channels != self.patches.shape[1]:
            msg = f"features with {channels} channels do not match the memory's {self.patches.shape[1]}"
            raise ValueError(msg + " (same backbone and layers as when built?)")
        if self._store is None:
            self._store = VectorStore(channels)
            self._store.add(self.patches)
        rows = features.detach().float().flatten(2).transpose(1, 2).reshape(-1, channels)  # search normalises them
        nearest = self._store.search(rows, k=1)[0][:, 0]
        distances = 1 - torch.from_numpy(nearest).to(features.device)
        return distances.reshape(batch, 1, height, width)

    def held_out_distances(self, features: torch.Tensor, chunk: int = 32_768) -> torch.Tensor:
        """Distances of normal patches to patches they were not stored with ``(n, 1, h, w)``, exact.

        The first ``statistics_images`` images are compared with all the other images' patches, or, for a single
        image, with its own patches outside a ``(2 r + 1)²`` window (``r = exclusion_radius``).
        """
        count, _, height, width = features.shape
        rows = _patch_rows(features)
        maps = []
        for index in range(min(count, self.statistics_images)):
            if count > 1:
                others = torch.cat([rows[:index], rows[index + 1 :]]).flatten(0, 1)
                similarity = torch.stack([(rows[index] @ part.T).amax(1) for part in others.split(chunk)]).amax(0)
            else:
                grid = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
                y, x = grid[0].flatten(), grid[1].flatten()
                near = torch.maximum((y[:, None] - y).abs(), (x[:, None] - x).abs()) <= self.exclusion_radius
                similarity = (rows[0] @ rows[0].T).masked_fill(near.to(rows.device), -1.0).amax(1)
            maps.append((1 - similarity).reshape(1, 1, height, width))
        return torch.cat(maps)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the kept patches' shape from the checkpoint; the index is rebuilt from them on first use."""
        if prefix + "patches" in state_dict:
            self.patches = torch.empty_like(state_dict[prefix + "patches"])
            self._store = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
