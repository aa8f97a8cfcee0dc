"""The Ghost feature pyramid: the standard pyramid's shapes with about half the weights."""

from __future__ import annotations

import torch

from kdanomaly.models.detector.ghost_fpn import ghost_fpn, standard_fpn


def test_ghost_pyramid_has_the_standard_shapes_with_about_half_the_weights() -> None:
    channels, width = [40, 112, 320], 128
    features = {name: torch.rand(2, c, s, s) for name, c, s in zip("012", channels, (16, 8, 4), strict=True)}
    ghost, standard = ghost_fpn(channels, width).eval(), standard_fpn(channels, width).eval()
    ghost_out, standard_out = ghost(features), standard(features)
    assert list(ghost_out) == list(standard_out) == ["0", "1", "2", "pool"]
    for name in ghost_out:
        assert ghost_out[name].shape == standard_out[name].shape
    ghost_weights, standard_weights = (sum(p.numel() for p in m.parameters()) for m in (ghost, standard))
    # Each 3x3 output conv: width*width/2*9 (primary) + width/2*9 (cheap depthwise) instead of width*width*9.
    output_convs = 3 * (width * width // 2 * 9 + width // 2 * 9 + width)  # + biases
    assert sum(p.numel() for p in ghost.layer_blocks.parameters()) == output_convs
    assert ghost_weights < 0.55 * standard_weights
    single = ghost.train()({name: f[:1] for name, f in features.items()})  # linear: no batch statistics, no ReLU
    assert all(torch.allclose(single[name], ghost_out[name][:1], atol=1e-5) for name in ghost_out)
    assert (ghost_out["0"] < 0).any()
