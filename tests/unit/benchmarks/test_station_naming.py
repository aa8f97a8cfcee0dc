"""The naming benchmark's draws: enrolled images are never the named ones, and separable types are named right."""

from __future__ import annotations

import numpy as np

from benchmarks.station_naming import naming_accuracy
from kdanomaly.data.synthetic import DEFECT_TYPES


def _embeddings(noise: float, per_type: int = 5) -> tuple[np.ndarray, list[str]]:
    generator = np.random.default_rng(0)
    centres = np.eye(len(DEFECT_TYPES), 8)
    kinds = [kind for kind in DEFECT_TYPES for _ in range(per_type)]
    vectors = np.repeat(centres, per_type, axis=0) + noise * generator.standard_normal((len(kinds), 8))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), kinds


def test_separable_types_are_all_named_right_in_every_draw() -> None:
    assert naming_accuracy(*_embeddings(0.05), draws=5) == [1.0] * 5


def test_types_without_structure_are_named_near_chance() -> None:
    embeddings, kinds = _embeddings(0.0)
    shuffled = np.random.default_rng(1).standard_normal(embeddings.shape).astype(np.float32)
    accuracies = naming_accuracy(shuffled, kinds, draws=20)
    assert abs(float(np.mean(accuracies)) - 1 / len(DEFECT_TYPES)) < 0.15
