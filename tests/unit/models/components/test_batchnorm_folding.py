"""BatchNorm folding: the folded copy computes the network's eval output without a BatchNorm, leaves the network
as it was, and is remade whenever the network's weights change."""

from __future__ import annotations

import timm
import torch
from torch import nn

from kdanomaly.models.components.batchnorm_folding import FoldedCopy, fold_batchnorm


def _with_random_statistics(network: nn.Module, seed: int = 0) -> nn.Module:
    """``network`` with every BatchNorm's statistics and affine parameters drawn at random (fresh ones are the
    identity map, which any folding would pass)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, nn.BatchNorm2d) and module.running_mean is not None:
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator))
                module.running_var.copy_(torch.rand(size, generator=generator) * 2 + 0.1)
                module.weight.copy_(torch.randn(size, generator=generator))
                module.bias.copy_(torch.randn(size, generator=generator))
    return network.eval()


def _batchnorms(network: nn.Module) -> int:
    return sum(isinstance(module, nn.BatchNorm2d) for module in network.modules())


def test_folded_backbone_computes_the_eval_output_without_batchnorm() -> None:
    network = _with_random_statistics(timm.create_model("tf_efficientnet_lite0", features_only=True))
    before = {name: value.clone() for name, value in network.state_dict().items()}
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    folded = fold_batchnorm(network)
    assert _batchnorms(network) > 40 and _batchnorms(folded) == 0
    with torch.no_grad():
        for expected, actual in zip(network(images), folded(images), strict=True):
            torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    after = network.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[name], before[name]) for name in before)


def test_folding_keeps_a_convolutions_bias_and_skips_a_norm_without_running_statistics() -> None:
    network = _with_random_statistics(
        nn.Sequential(
            nn.Conv2d(3, 8, 3, bias=True),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 4, 1),
            nn.BatchNorm2d(4, track_running_stats=False),
        )
    )
    folded = fold_batchnorm(network)
    assert isinstance(folded[1], nn.Identity) and isinstance(folded[4], nn.BatchNorm2d)
    images = torch.randn(3, 3, 9, 9, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(folded(images), network(images), rtol=1e-5, atol=1e-5)


def test_folded_copy_is_reused_until_the_weights_change() -> None:
    network = _with_random_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    copies = FoldedCopy()
    images = torch.randn(1, 3, 8, 8)
    first = copies(network)
    assert copies(network) is first
    with torch.no_grad():
        network[0].weight.add_(1.0)  # an optimiser step is such an in-place change
    second = copies(network)
    assert second is not first
    other = _with_random_statistics(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), seed=3)
    network.load_state_dict(other.state_dict())
    third = copies(network)
    assert third is not second
    with torch.no_grad():
        torch.testing.assert_close(third(images), network(images), rtol=1e-5, atol=1e-5)
