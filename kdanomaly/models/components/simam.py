"""SimAM: a simple, parameter-free attention module (Yang et al., ICML 2021)."""

from __future__ import annotations

from typing import TypeGuard

import torch
from torch import nn


class SimAM(nn.Module):
    """Weights every activation by ``sigmoid(1 / e*)``, its inverse minimal energy.

    ``1 / e* = (x - mu)^2 / (4 (sigma^2 + lambda)) + 0.5`` with mu and sigma^2 taken per channel over the
    spatial positions (sigma^2 with ``n = H * W - 1``), exactly as the paper's closed form.
    """

    def __init__(self, lambda_: float = 1e-4) -> None:
        super().__init__()
        self.lambda_ = lambda_

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the energy attention to ``x`` of shape ``(B, C, H, W)``."""
        n = x.shape[2] * x.shape[3] - 1
        squared_deviation = (x - x.mean(dim=(2, 3), keepdim=True)).pow(2)
        variance = squared_deviation.sum(dim=(2, 3), keepdim=True) / n
        inverse_energy = squared_deviation / (4 * (variance + self.lambda_)) + 0.5
        return x * torch.sigmoid(inverse_energy)

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"


def _is_stage(module: nn.Module) -> TypeGuard[nn.Sequential]:
    """A stage is a Sequential of composite blocks (not of stages, not of single layers)."""
    children = list(module.children())
    return (
        isinstance(module, nn.Sequential)
        and bool(children)
        and all(not isinstance(child, nn.Sequential) and any(True for _ in child.children()) for child in children)
    )


def insert_simam(model: nn.Module, lambda_: float = 1e-4) -> int:
    """Append a SimAM after every block of every stage of ``model``; return how many were inserted."""
    stages = [module for module in model.modules() if _is_stage(module)]
    for stage in stages:
        for index, block in enumerate(list(stage.children())):
            stage[index] = nn.Sequential(block, SimAM(lambda_))
    return sum(len(stage) for stage in stages)
