"""Greedy k-center (farthest-point) coreset selection, exact, with triangle-inequality pruning.

Each pick is the point farthest from the centres chosen so far. A plain implementation (Anomalib's
``KCenterGreedy``) recomputes the distance of every point to every new centre. Here a point ``x`` whose nearest
centre is ``a`` can only get closer to the new centre ``c`` if ``d(c, a) < 2 * d(x, a)`` (triangle inequality),
so per pick only those points are considered. Of those, a point is measured in full only if its distance to
``c`` in the top principal subspace (an orthogonal projection, so never more than the true distance) is below its
current nearest distance. The rest of the work is a gather and a comparison per point. The picks are the same as
the plain algorithm's.
"""

from __future__ import annotations

import torch

PROJECTION_RANK = 32  # principal directions of the lower bound (used when features have more than twice as many)


def _validate(features: torch.Tensor, size: int) -> None:
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"expected features of shape (N, D) with N > 0, got {tuple(features.shape)}")
    if not features.is_floating_point():
        raise ValueError(f"expected floating-point features, got {features.dtype}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or infinite values")
    if not 1 <= size <= len(features):
        raise ValueError(f"coreset size must be in [1, {len(features)}], got {size}")


def _principal_projection(points: torch.Tensor, rank: int) -> torch.Tensor:
    """``points`` projected on their ``rank`` leading principal directions (orthonormal)."""
    centred = points - points.mean(0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    return (points @ vectors[:, -rank:]).contiguous()


@torch.no_grad()
def k_center_greedy(features: torch.Tensor, size: int, start: int = 0) -> torch.Tensor:
    """Indices ``(size,)`` of the greedy k-center coreset of ``features (N, D)``, beginning with ``start``."""
    _validate(features, size)
    points = features.detach().float().contiguous()
    squared_norms = points.pow(2).sum(1)
    projected = _principal_projection(points, PROJECTION_RANK) if points.shape[1] > 2 * PROJECTION_RANK else None
    nearest = torch.full((len(points),), float("inf"))  # distance of each point to its nearest centre
    assigned = torch.zeros(len(points), dtype=torch.long)  # which pick that centre is
    centres = torch.empty(size, points.shape[1])
    picks = torch.empty(size, dtype=torch.long)
    pick = start
    for step in range(size):
        picks[step], centre = pick, points[pick]
        centres[step] = centre
        if step == 0:
            candidates = torch.arange(len(points))
        else:
            gaps = torch.cdist(centre[None], centres[:step])[0]  # new centre to every earlier one
            candidates = torch.nonzero(gaps[assigned] < 2 * nearest * (1 + 1e-5)).squeeze(1)
        if projected is not None:
            lower_bound = (projected[candidates] - projected[pick]).pow(2).sum(1)
            candidates = candidates[lower_bound < nearest[candidates].pow(2) * (1 + 1e-5)]
        squared = squared_norms[candidates] - 2 * (points[candidates] @ centre) + centre.pow(2).sum()
        distances = squared.clamp_min(0).sqrt()
        closer = distances < nearest[candidates]
        moved = candidates[closer]
        nearest[moved], assigned[moved] = distances[closer], step
        nearest[pick] = 0.0
        pick = int(nearest.argmax())
    return picks
