"""Positional memory of normal patches: each test patch is compared with training patches at nearby positions.

Industrial images are framed the same way every time (a bottle in the centre, a tile's edges at the borders), so
a patch is judged against what normal parts show *around the same place*, not anywhere in the image. That keeps
position-specific appearance (dark tile edges, brightness gradients) normal where it belongs and flags it
elsewhere, which a global nearest-neighbour memory cannot do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

# Window searched around each position and normal patches kept per position, chosen on validation sets with blended
# and warped defects (benchmarks/validation_choices.py).
DEFAULT_MEMORY_WINDOW = 3
DEFAULT_MEMORY_SIZE = 512


def memory_features(teacher_features: dict[str, torch.Tensor], layers: Sequence[str]) -> torch.Tensor:
    """Locally aggregated (3x3 mean) teacher features of ``layers``, resized to the first layer's grid, stacked."""
    size = teacher_features[layers[0]].shape[-2:]
    pooled = [F.avg_pool2d(teacher_features[layer], 3, stride=1, padding=1) for layer in layers]
    return torch.cat([F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled], dim=1)


def _candidates(features: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Position-major candidates ``(h * w, C, window**2 * N)`` of ``(N, C, h, w)`` features (each position with its
    edge-clamped neighbours, offset-major: candidate m is image m % N) and each candidate's image ``(h * w, M)``.

    Each neighbour offset is written straight into the one output tensor, so building holds the candidates once
    (``window**2`` times the features; 2.7 GB for 476 images at the default layers and window 3), not once per
    concatenation and transposition."""
    n_images, channels, height, width = features.shape
    radius = window // 2
    padded = F.pad(features.detach().float(), (radius,) * 4, mode="replicate")
    bank = torch.empty(height * width, channels, window * window * n_images)
    for offset in range(window * window):
        dy, dx = divmod(offset, window)
        shifted = padded[:, :, dy : dy + height, dx : dx + width].permute(2, 3, 1, 0)
        bank[:, :, offset * n_images : (offset + 1) * n_images] = shifted.reshape(height * width, channels, n_images)
    return bank, (torch.arange(bank.shape[2]) % n_images).expand(height * width, -1).contiguous()


def _squared_norms(bank: torch.Tensor) -> torch.Tensor:
    """Squared norms ``(P, 1, M)`` of the columns of a ``(P, C, M)`` bank, without a squared copy of the bank."""
    return torch.linalg.vector_norm(bank, dim=1, keepdim=True).square()


class PositionalMemory(nn.Module):
    """Nearest-neighbour distance of each patch to the normal patches within a ``window x window`` neighbourhood.

    The bank is position-major, ``(h * w, C, window**2 * N)``: for every position, the features of all ``N``
    training images at that position and at its neighbours (edge-clamped). ``forward`` is then one batched
    matrix product per query batch. ``exclude`` leaves one training image out per query (leave-one-out
    distances of the training images themselves). A window of 1 compares a patch only with the same position; the
    default 3 also with its 8 neighbours, so a part shifted by a grid cell (8 px at the default layers) still finds
    its normal look. :meth:`reduce` keeps ``size`` candidates per position, so the window costs nine times the
    candidates while the memory is built, not at search time.

    The bank is stored centred on each position's mean training feature (``centre``, subtracted from queries too):
    distances are unchanged, but the expanded ``|q|² + |b|² - 2 q·b`` then cancels small numbers instead of large
    ones, so engines that sum in another order (ONNX Runtime, OpenVINO) agree with PyTorch to float precision.
    """

    def __init__(self, window: int = DEFAULT_MEMORY_WINDOW, size: int = DEFAULT_MEMORY_SIZE) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f"memory window must be an odd positive number, got {window}")
        if size < 1:
            raise ValueError(f"memory size must be positive, got {size}")
        self.window = window
        self.size = size
        self.register_buffer("bank", torch.empty(0, 0, 0))
        self.register_buffer("bank_norms", torch.empty(0, 0, 0))  # squared norms of the bank's columns
        self.register_buffer("centre", torch.empty(0, 0))  # (h * w, C): each position's mean training feature
        self.register_buffer("candidate_images", torch.empty(0, 0, dtype=torch.long))  # training image of each
        self.register_buffer("grid", torch.zeros(3, dtype=torch.long))  # h, w, number of training images
        self.bank: torch.Tensor
        self.bank_norms: torch.Tensor
        self.centre: torch.Tensor
        self.candidate_images: torch.Tensor
        self.grid: torch.Tensor

    @property
    def is_empty(self) -> bool:
        """True until :meth:`fit` stored training features."""
        return self.bank.numel() == 0

    @property
    def n_images(self) -> int:
        """How many normal images the memory holds."""
        return int(self.grid[2])

    def fit(self, features: torch.Tensor) -> None:
        """Store ``(N, C, h, w)`` features of normal images."""
        if features.ndim != 4 or features.shape[0] < 2:
            msg = f"the positional memory needs features (N, C, h, w) of at least 2 normal images, got {features.shape}"
            raise ValueError(f"{msg} (its statistics leave one image out); memory_kind='prototype' works from one")
        n_images, _, height, width = features.shape
        bank, self.candidate_images = _candidates(features, self.window)
        self.centre = bank.mean(dim=2)
        self.bank = bank.sub_(self.centre[:, :, None])  # in place: the candidates are the largest tensor built
        self.bank_norms = _squared_norms(self.bank)
        self.grid = torch.tensor([height, width, n_images])

    def held_out_distances(self, features: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Leave-one-image-out distance maps of the ``(N, C, h, w)`` features the memory was fitted on."""
        return torch.cat(
            [
                self(features[start : start + batch_size], torch.arange(start, min(start + batch_size, len(features))))
                for start in range(0, len(features), batch_size)
            ]
        )

    def reduce(self, size: int | None = None) -> None:
        """Keep, per position, ``size`` (default: the memory's) candidates chosen by greedy k-center selection.

        The greedy loop runs over the ``size`` picks only; each pick is one batched product over all positions.
        """
        size = self.size if size is None else size
        if size < 1:
            raise ValueError(f"memory size must be positive, got {size}")
        positions, channels, candidates = self.bank.shape
        if size >= candidates:
            return
        nearest = torch.full((positions, candidates), float("inf"))
        pick = torch.zeros(positions, dtype=torch.long)  # start from each position's first candidate
        picks = []
        for _ in range(size):
            picks.append(pick)
            centre = self.bank.gather(2, pick[:, None, None].expand(positions, channels, 1))  # (P, C, 1)
            squared = (
                self.bank_norms[:, 0] + centre.pow(2).sum(1) - 2 * torch.bmm(centre.transpose(1, 2), self.bank)[:, 0]
            )
            nearest = torch.minimum(nearest, squared)
            pick = nearest.argmax(dim=1)
        chosen = torch.stack(picks, dim=1)  # (P, size)
        self.bank = self.bank.gather(2, chosen[:, None, :].expand(positions, channels, size)).contiguous()
        self.bank_norms = self.bank_norms.gather(2, chosen[:, None, :])
        self.candidate_images = self.candidate_images.gather(1, chosen)

    def forward(self, features: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Distance map ``(B, 1, h, w)``; ``exclude[b]`` is a training image query ``b`` may not match (or -1)."""
        if self.is_empty:
            raise RuntimeError("the normal memory is empty: fit it on normal images first (KDAnomaly does so itself)")
        batch, channels, height, width = features.shape
        if channels != self.bank.shape[1] or height * width != self.bank.shape[0]:
            msg = f"features {tuple(features.shape)} do not match the memory bank of {self.n_images} images "
            raise ValueError(msg + f"{tuple(self.bank.shape)} (same backbone, layers and image size as when built?)")
        queries = features.permute(2, 3, 0, 1).reshape(height * width, batch, channels) - self.centre[:, None, :]
        queries = queries.contiguous()  # a strided operand sends bmm to one small product per position
        squared = (
            queries.pow(2).sum(-1, keepdim=True) + self.bank_norms - 2 * torch.bmm(queries, self.bank)
        )  # (h * w, B, candidates)
        if exclude is not None:
            left_out = (self.candidate_images[:, None, :] == exclude[None, :, None]) & (exclude[None, :, None] >= 0)
            squared = squared.masked_fill(left_out, float("inf"))
        nearest = squared.amin(dim=-1).clamp_min(0).sqrt()  # (h * w, B)
        return nearest.T.reshape(batch, 1, height, width)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Take the bank's shape from the checkpoint (it depends on the training set); a checkpoint from before the
        bank was centred gets a zero centre, which is what its bank is."""
        bank = state_dict.get(prefix + "bank")
        if bank is not None and prefix + "centre" not in state_dict:
            state_dict[prefix + "centre"] = bank.new_zeros(bank.shape[:2])
        for name in ("bank", "bank_norms", "centre", "candidate_images"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
