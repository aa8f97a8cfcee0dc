"""Inference copies of convolutional networks with their BatchNorm folded into the convolutions.

Out of training a BatchNorm is an affine map per channel, so the convolution before it can absorb it: one pass
over the feature map fewer per layer. ONNX Runtime and OpenVINO do this when they load a model; PyTorch does not.
"""

from __future__ import annotations

import copy
from itertools import chain

import torch
from torch import nn


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode in which every BatchNorm registered right after a convolution with its
    channel count is folded into that convolution and replaced by its activation (timm's ``BatchNormAct2d``) or
    an identity. The copy computes the network's eval-mode output; ``network`` is left unchanged.

    The pairing follows registration order, the convention of timm's and torchvision's convolutional blocks
    (``conv``, then its ``bn``); a BatchNorm without running statistics is kept as it is.
    """
    folded = copy.deepcopy(network).eval()
    previous: nn.Module | None = None
    for name, module in list(folded.named_modules()):
        if isinstance(module, nn.BatchNorm2d) and isinstance(previous, nn.Conv2d) and _foldable(previous, module):
            _fold_into(previous, module)
            _replace(folded, name, getattr(module, "act", None) or nn.Identity())
        previous = module
    return folded


def _foldable(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> bool:
    """Whether ``norm`` normalises ``convolution``'s output channels with fixed statistics."""
    return (
        convolution.out_channels == norm.num_features and norm.running_mean is not None and norm.running_var is not None
    )


@torch.no_grad()
def _fold_into(convolution: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    """Scale the convolution's output channels by ``gamma / sqrt(var + eps)`` and shift them by the norm's offset."""
    assert norm.running_mean is not None and norm.running_var is not None  # checked by _foldable
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    shift = -norm.running_mean * scale
    if norm.bias is not None:
        shift = shift + norm.bias
    if convolution.bias is not None:
        shift = shift + convolution.bias * scale
    convolution.weight.mul_(scale.reshape(-1, *[1] * (convolution.weight.ndim - 1)))
    convolution.bias = nn.Parameter(shift, requires_grad=False)


def _replace(root: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put ``replacement`` where ``root``'s submodule ``name`` (dotted) is."""
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, replacement)


class FoldedCopy:
    """The folded copy of a network, remade whenever the network's parameters or buffers have changed since: in
    place (an optimiser step, ``load_state_dict``, running statistics in training) or by a move to another device
    or layout. Not a submodule: it adds nothing to ``state_dict`` and never trains."""

    def __init__(self) -> None:
        self._state: tuple[tuple[int, int, int], ...] | None = None
        self._copy: nn.Module | None = None

    def __call__(self, network: nn.Module) -> nn.Module:
        state = tuple(
            (id(tensor), tensor.data_ptr(), tensor._version)
            for tensor in chain(network.parameters(), network.buffers())
        )
        if self._copy is None or state != self._state:
            self._copy, self._state = fold_batchnorm(network), state
        return self._copy
